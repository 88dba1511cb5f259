"""NaN losses and interrupts: the run stops cleanly, saves what it can, and resumes."""

from __future__ import annotations

import torch

from tests.helpers.cli import TINY, run_cli
from tests.helpers.faults import FAULT_ENV, fault_args
from tests.helpers.runs import load_ckpt, one_paragraph, only_run, val_steps

STEPS_PER_EPOCH = 3  # 24 training images in batches of 8


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path):
    logs = tmp_path / "logs"
    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=3", f"paths.log_dir={logs}"]
    result = run_cli(
        "ftlab.train", [*args, *fault_args("PoisonWeights", step=5)], cwd=tmp_path, env=FAULT_ENV
    )
    assert result.returncode == 2, result.stderr[-3000:]
    message = one_paragraph(result.stderr)
    assert "loss became nan at epoch 2, step 5 (batch 2 of epoch 2" in message, message
    checkpoints = only_run(logs) / "checkpoints"
    assert str(checkpoints / "last.ckpt") in message.replace(" ", "")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = load_ckpt(checkpoints / name)
        assert ckpt["global_step"] == STEPS_PER_EPOCH and ckpt["epoch"] == 0  # written after epoch 1
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())


def test_ctrl_c_and_sigterm_save_a_checkpoint_and_resume_last_continues(tmp_path):
    logs = tmp_path / "logs"
    args = ["+experiment=smoke", *TINY, "trainer.max_epochs=3", f"paths.log_dir={logs}"]
    total = 3 * STEPS_PER_EPOCH

    # Ctrl-C during step 5 (epoch 2): 4 steps done.
    first = run_cli(
        "ftlab.train", [*args, *fault_args("SignalDuringStep", step=5, signum="SIGINT")], tmp_path, FAULT_ENV
    )
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "Ctrl-C at epoch 2, step 4: saved" in first.stderr
    first_dir = only_run(logs)
    assert load_ckpt(first_dir / "checkpoints" / "last.ckpt")["global_step"] == 4

    # resume=last continues from it; SIGTERM during step 8: steps 5-8 done, then the checkpoint.
    second = run_cli(
        "ftlab.train",
        [*args, "resume=last", *fault_args("SignalDuringStep", step=8, signum="SIGTERM")],
        tmp_path,
        FAULT_ENV,
    )
    assert second.returncode == 143, second.stderr[-3000:]
    assert "Traceback" not in second.stderr and "SIGTERM at epoch 3, step 8: saved" in second.stderr
    (second_dir,) = [p for p in (logs / "smoke").iterdir() if p != first_dir]
    state = load_ckpt(second_dir / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 8
    assert len(val_steps(second_dir)) == 1  # epoch 2 ended (validated once) in the resumed run

    # resume=last again: the last step and the final validation, nothing repeated.
    third = run_cli("ftlab.train", [*args, "resume=last"], tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    (third_dir,) = [p for p in (logs / "smoke").iterdir() if p not in (first_dir, second_dir)]
    final = load_ckpt(third_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == total and final["epoch"] == 2
    assert len(val_steps(third_dir)) == 1  # epoch 3's validation; Lightning may shift its logged step by one
    # The optimizer state went through all three runs: the head's Adam step count is the total.
    head_steps = {int(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert max(head_steps) == total
