"""The measurements as a rich table and as JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table


def render(result: dict[str, Any]) -> Table:
    """One row per figure; ratios carry the goal they are judged against."""
    table = Table(title=f"ftlab bench on {result['device']}")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for model, entry in result.get("models", {}).items():
        table.add_row(
            f"{model} training img/s, hand loop / ftlab",
            f"{entry['hand_img_s']:.1f} / {entry['ftlab_img_s']:.1f}",
        )
        table.add_row(f"{model} ftlab / hand", f"{entry['ratio']:.3f}")
        if "mfu_ftlab" in entry:
            table.add_row(f"{model} MFU ftlab / hand", f"{entry['mfu_ftlab']:.1%} / {entry['mfu_hand']:.1%}")
    if "cache" in result:
        c = result["cache"]
        e2e, steady = c["end_to_end_s"], c["steady_epoch_s"]
        table.add_row(
            f"frozen phase s, {c['epochs']} epochs, cache build included (no cache / cache)",
            f"{e2e['off']:.2f} / {e2e['memory']:.2f}",
        )
        table.add_row("cache_speedup (end to end)", f"{result['cache_speedup']:.2f}x")
        table.add_row(
            "steady-state epoch s (no cache / cache)", f"{steady['off']:.3f} / {steady['memory']:.3f}"
        )
        table.add_row("cache_speedup_steady (per epoch)", f"{result['cache_speedup_steady']:.1f}x")
        table.add_row("final weights max |diff| (cache vs none)", f"{c['final_weight_max_diff']:.2e}")
    if "pipeline_img_s" in result:
        pipe = result["pipeline_img_s"]
        table.add_row(
            "preprocess img/s (CPU per image / device batched)",
            f"{pipe['cpu_per_image']:.0f} / {pipe['device_batched']:.0f}",
        )
    if "layout" in result:
        opts = result["layout"]["options"]
        for family, entry in result["layout"]["families"].items():
            cells = []
            for dtype in ("fp32", "bf16"):
                e = entry[dtype]
                choice = "NHWC" if e["channels_last"] else "NCHW"
                cells.append(f"{dtype} {e['nchw_s']:.3f} / {e['nhwc_s']:.3f} s = {e['ratio']:.2f}x {choice}")
            table.add_row(
                f"{family} ({entry['model']}) train step NCHW / NHWC, batch {opts['batch_size']} at "
                f"{opts['image_size']} px",
                "; ".join(cells),
            )
    if "main_job_s" in result:
        main = result["main_job"]
        table.add_row(
            f"main job s (wall, end to end, {main.get('precision') or '?'})", f"{result['main_job_s']:.1f}"
        )
        table.add_row(
            "  start-up / cache build / train / val / other s",
            " / ".join(
                f"{main[k]:.1f}"
                for k in ("startup_s", "cache_build_s", "train_epochs_s", "val_epochs_s", "other_s")
            ),
        )
        table.add_row("ResNet-18 inference img/s (224, batch 32)", f"{result['resnet18_infer_img_s']:.1f}")
        if "resnet18_infer_img_s_channels_last" in result:
            table.add_row(
                "  the same in channels_last", f"{result['resnet18_infer_img_s_channels_last']:.1f}"
            )
        if "resnet18_infer_img_s_bf16_channels_last" in result:
            table.add_row(
                "  the same in channels_last, bf16 autocast",
                f"{result['resnet18_infer_img_s_bf16_channels_last']:.1f}",
            )
        table.add_row(
            "main job, ResNet-18 forward-image equivalents", f"{result['main_job_forward_equivalents']:,.0f}"
        )
        if "main_job_forward_equivalents_cpu_time" in result:
            table.add_row(
                f"  the same in CPU time ({main['cpu_s']:.0f} CPU s x "
                f"{result['resnet18_infer_img_per_cpu_s']:.1f} img per CPU s)",
                f"{result['main_job_forward_equivalents_cpu_time']:,.0f}",
            )
    if "main_job_flop_s" in result:
        rate, vs, peaks = (
            result["main_job_flop_s"],
            result["main_job_flop_s_vs_peak"],
            result["matmul_peak_flop_s"],
        )
        table.add_row(
            "main job TFLOP counted (FlopCounterMode)", f"{result['main_job_flops']['total'] / 1e12:.2f}"
        )
        table.add_row(
            "main job GFLOP/s, wall / cache+train+val",
            f"{rate['wall'] / 1e9:.0f} / {rate['compute'] / 1e9:.0f}",
        )
        table.add_row(
            "matmul peak GFLOP/s fp32 / bf16 (same run)",
            f"{peaks['fp32'] / 1e9:.0f} / {peaks['bf16'] / 1e9:.0f}",
        )
        table.add_row(
            f"main job vs {vs['dtype']} peak, wall / cache+train+val",
            f"{vs['wall']:.1%} / {vs['compute']:.1%}",
        )
    for name, arm in result.get("variants", {}).items():
        if "error" in arm:
            table.add_row(f"variant {name}: failed", arm["error"].splitlines()[0][:200])
            continue
        table.add_row(
            f"variant {name}: wall s (start-up / cache / train / val / other), equivalents",
            f"{arm['wall_s']:.1f} ("
            + " / ".join(
                f"{arm[k]:.1f}"
                for k in ("startup_s", "cache_build_s", "train_epochs_s", "val_epochs_s", "other_s")
            )
            + f"), {arm['forward_equivalents']:,.0f}"
            + (
                f" (CPU time: {arm['forward_equivalents_cpu_time']:,.0f})"
                if "forward_equivalents_cpu_time" in arm
                else ""
            )
            + f"; {arm['wall_s'] / result['main_job_s']:.2f}x the main arm's wall"
            + (f"; val acc {arm['val_acc']:.3f}" if arm.get("val_acc") is not None else ""),
        )
    if "whole_network_s" in result:
        base = result["whole_network"]
        table.add_row(
            f"whole-network schedule s ({base['epochs']} epochs)", f"{result['whole_network_s']:.1f}"
        )
        table.add_row("whole-network / main job", f"{result['whole_network_vs_main']:.2f}x")
    if "plain_loop_s" in result:
        table.add_row("plain PyTorch loop s (whole-network work)", f"{result['plain_loop_s']:.1f}")
        for arm in ("main_job", "whole_network"):
            if f"{arm}_training_vs_plain" in result:
                table.add_row(f"{arm} training / plain loop", f"{result[f'{arm}_training_vs_plain']:.2f}")
    return table


def write_json(result: dict[str, Any], path: str) -> None:
    """The whole result, indented."""
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
