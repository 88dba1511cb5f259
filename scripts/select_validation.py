"""Validation of `ftlab.select` (docs/guide/select.md): fine-tune every candidate with the main job's recipe
on two offline Fashion-MNIST tasks and three seeds, run `ftlab.select` on the same data, and compare.

    python scripts/select_validation.py finetune --out /tmp/selval   # ground truth: one ftlab.train per run
    python scripts/select_validation.py select --out /tmp/selval     # ftlab.select per task and seed
    python scripts/select_validation.py report --out /tmp/selval     # rank correlations, cost ratio

Each step appends one JSON line per run to <out>/<step>.jsonl and skips runs already there (resumable).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASKS = {
    "tops": "[tshirt_top,pullover,dress,coat,shirt]",
    "footwear_bags": "[sandal,sneaker,ankle_boot,bag]",
}
# select.candidates entries: a model= option or backbone name, `:null` for a random init (the controls)
CANDIDATES = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite0:null",
    "resnet18:null",
]
SEEDS = [42, 43, 44]
SIZES = {"train_size": 200, "val_size": 200, "image_size": 64}  # data.<key>; --train-size etc. change them


def _data(sizes: dict[str, int]) -> list[str]:
    return ["data=fashion_mnist"] + [f"data.{key}={value}" for key, value in sizes.items()]


RECIPE = ["finetune=last_stages", "trainer=auto", "trainer.max_epochs=10"]  # the main job's recipe
# monitoring only (not the recipe): off, to keep the runs cheap on a shared 2-core CPU
QUIET = [
    "callbacks.rich_progress_bar=null",
    "callbacks.transfer_diagnostics=null",
    "callbacks.tensorboard_review=null",
]


def _model_overrides(candidate: str) -> list[str]:
    name, _, weights = candidate.partition(":")
    return [f"model={name}"] + ([f"model.weights={weights}"] if weights else [])


def _done(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _val_acc(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return float(events.Scalars("val/acc")[-1].value)


def finetune(
    out: Path, seeds: list[int], tasks: list[str], candidates: list[str], sizes: dict[str, int]
) -> None:
    record = out / f"finetune-{'-'.join(tasks)}.jsonl"
    done = {(r["task"], r["seed"], r["candidate"]) for r in _done(record) if r["val_acc"] is not None}
    for seed in seeds:
        for task in tasks:
            classes = TASKS[task]
            for candidate in candidates:
                if (task, seed, candidate) in done:
                    continue
                run_dir = out / "runs" / f"{task}-{seed}-{candidate.replace(':', '-')}"
                command = [
                    sys.executable,
                    "-m",
                    "ftlab.train",
                    *_data(sizes),
                    f"data.classes={classes}",
                    *_model_overrides(candidate),
                    *RECIPE,
                    f"seed={seed}",
                    f"paths.data_dir={out / 'data'}",
                    f"hydra.run.dir={run_dir}",
                    *QUIET,
                ]
                start = time.perf_counter()
                result = subprocess.run(command, capture_output=True, text=True)
                wall = time.perf_counter() - start
                (out / "logs").mkdir(parents=True, exist_ok=True)
                (out / "logs" / f"{run_dir.name}.log").write_text(result.stdout + result.stderr)
                row = {"task": task, "seed": seed, "candidate": candidate, "wall_s": round(wall, 1)}
                row["val_acc"] = _val_acc(run_dir) if result.returncode == 0 else None
                with record.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


def select(out: Path, seeds: list[int], tasks: list[str], sizes: dict[str, int]) -> None:
    record = out / f"select-{'-'.join(tasks)}.jsonl"
    done = {(r["task"], r["seed"]) for r in _done(record)}
    for seed in seeds:
        for task in tasks:
            classes = TASKS[task]
            if (task, seed) in done:
                continue
            run_dir = out / "select" / f"{task}-{seed}"
            command = [
                sys.executable,
                "-m",
                "ftlab.select",
                *_data(sizes),
                f"data.classes={classes}",
                f"select.candidates=[{','.join(CANDIDATES)}]",
                "precision=auto",
                f"seed={seed}",
                f"paths.data_dir={out / 'data'}",
                f"hydra.run.dir={run_dir}",
            ]
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - start
            (out / "logs").mkdir(parents=True, exist_ok=True)
            (out / "logs" / f"select-{task}-{seed}.log").write_text(result.stdout + result.stderr)
            row = {"task": task, "seed": seed, "wall_s": round(wall, 1), "ok": result.returncode == 0}
            with record.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def report(out: Path) -> str:
    """Markdown: per task, each candidate's scores and fine-tuned val accuracy (mean over the seeds run),
    each score's rank correlations with it, the top-ranked candidate's gap to the best, the cost ratio."""
    from scipy.stats import kendalltau, spearmanr

    tuned: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(out.glob("finetune-*.jsonl")):
        for row in _done(path):
            if row["val_acc"] is not None:
                tuned.setdefault((row["task"], row["candidate"]), []).append(row)
    selects = {
        (path.parent.name.rsplit("-", 1)[0], int(path.parent.name.rsplit("-", 1)[1])): json.loads(
            path.read_text()
        )
        for path in sorted(out.glob("select/*/select.json"))
    }
    select_walls = {(r["task"], r["seed"]): r["wall_s"] for p in out.glob("select-*.jsonl") for r in _done(p)}
    lines = []
    for (task, seed), selection in sorted(selects.items()):
        rows = [
            r for r in selection["results"] if r["status"] == "ranked" and (task, r["candidate"]) in tuned
        ]
        lines += [f"### {task} (select seed {seed})", ""]
        lines += [
            "| candidate | LogME | kNN acc | probe acc | select s | fine-tuned val acc (runs) | fine-tune s |"
        ]
        lines += ["|---|---:|---:|---:|---:|---:|---:|"]
        accs = {}
        for r in rows:
            runs = tuned[(task, r["candidate"])]
            accs[r["candidate"]] = float(np.mean([x["val_acc"] for x in runs]))
            wall = np.mean([x["wall_s"] for x in runs])
            lines.append(
                f"| {r['candidate']} | {r['logme']:.4f} | {r['knn']:.3f} | {r['probe']:.3f} | "
                f"{r['seconds']:.0f} | {accs[r['candidate']]:.3f} ({len(runs)}) | {wall:.0f} |"
            )
        lines.append("")
        if len(rows) >= 3:
            truth = [accs[r["candidate"]] for r in rows]
            for key in ("logme", "knn", "probe"):
                values = [r[key] for r in rows]
                top = max(rows, key=lambda r: r[key])["candidate"]
                gap = (max(truth) - accs[top]) * 100
                lines.append(
                    f"- {key}: Spearman {spearmanr(values, truth).statistic:+.2f}, Kendall "
                    f"{kendalltau(values, truth).statistic:+.2f}; top-ranked {top}, {gap:.1f} points below "
                    "the best"
                )
        # the cost against the fine-tuning runs of the same seed (run back to back with it on one machine)
        same_seed = [x["wall_s"] for r in rows for x in tuned[(task, r["candidate"])] if x["seed"] == seed]
        wall = select_walls.get((task, seed))
        if wall and len(same_seed) == len(rows):
            finetune_total = sum(same_seed)
            lines.append(
                f"- cost: select {wall:.0f} s (whole command) vs fine-tuning every candidate once "
                f"(seed {seed}) {finetune_total:.0f} s: {100 * wall / finetune_total:.1f} %"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("step", choices=["finetune", "select", "report"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/selval"))
    parser.add_argument("--seeds", type=int, nargs="*", default=SEEDS)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--candidates", nargs="*", default=CANDIDATES)
    for key, value in SIZES.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value, help=f"data.{key}")
    args = parser.parse_args()
    sizes = {key: getattr(args, key) for key in SIZES}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "report":
        print(report(args.out))
    elif args.step == "finetune":
        finetune(args.out, args.seeds, args.tasks, args.candidates, sizes)
    else:
        select(args.out, args.seeds, args.tasks, sizes)


if __name__ == "__main__":
    main()
