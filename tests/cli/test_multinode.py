"""Multi-node DDP on loopback: two "nodes" of one gloo process each, killed after an epoch and resumed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import REPO, TINY, free_port, offline_env

# Two nodes x one process; the backbone unfreezes in epoch 1 (0-based) of 3. 24 training images over two
# ranks in batches of 8: 2 steps per epoch, so step 5 is the first step of epoch 2.
NODE_ARGS = [
    "+experiment=smoke",
    *TINY,
    "trainer=ddp_cpu",
    "trainer.devices=1",
    "+trainer.num_nodes=2",
    "trainer.max_epochs=3",
    "finetune=freeze_unfreeze",
    "finetune.unfreeze_at_epoch=1",
    "callbacks.tensorboard_review=null",
    "+callbacks.rank_dump._target_=tests.helpers.rank_dump.SaveRankWeights",
]


def _two_nodes(tmp_path: Path, logs: Path, tag: str, dumps: Path, extra: list[str]) -> list[str]:
    """Start node 0 and node 1 as separate `python -m ftlab.train` processes; wait; return their stderr."""
    port = str(free_port())
    procs = []
    for node in (0, 1):
        env = offline_env(
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            NODE_RANK=str(node),
            WORLD_SIZE="2",
            LOCAL_RANK="0",
        )
        args = [
            *NODE_ARGS,
            f"paths.log_dir={logs}",
            f"hydra.run.dir={logs}/smoke/{tag}/node{node}",
            f"+callbacks.rank_dump.out_dir={dumps}",
            *extra,
        ]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ftlab.train", *args],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=600)
        finally:
            proc.kill()
        outs.append(f"rc={proc.returncode}\n{err[-3000:]}")
    return outs


def _dump(dumps: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(dumps / f"rank{rank}_end.pt", weights_only=True)


@pytest.mark.slow  # three 2-process trainings: about 2-3 minutes on a shared 2-core CPU
def test_two_nodes_killed_after_an_epoch_resume_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    ref = _two_nodes(tmp_path, tmp_path / "ref_logs", "ref", tmp_path / "ref", [])
    assert all(out.startswith("rc=0") for out in ref), ref

    # both nodes SIGKILL themselves in the first step of epoch 2: last.ckpt holds the end of epoch 1
    kill = ["+callbacks.fault._target_=tests.helpers.faults.SignalDuringStep"]
    kill += ["+callbacks.fault.step=5", "+callbacks.fault.signum=SIGKILL"]
    killed = _two_nodes(tmp_path, logs, "first", tmp_path / "first", kill)
    assert all(out.startswith("rc=-9") for out in killed), killed
    last = logs / "smoke" / "first" / "node0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1
    assert not (logs / "smoke" / "first" / "node1" / "checkpoints").exists()  # only global rank 0 saves

    # the same command with resume=last: both nodes find node0's last.ckpt (the newest under logs/smoke)
    resumed = _two_nodes(tmp_path, logs, "resumed", tmp_path / "resumed", ["resume=last"])
    assert all(out.startswith("rc=0") for out in resumed), resumed
    start = torch.load(tmp_path / "resumed" / "rank0_start.pt", weights_only=True)
    rank0, rank1 = _dump(tmp_path / "resumed", 0), _dump(tmp_path / "resumed", 1)
    reference = _dump(tmp_path / "ref", 0)
    assert not torch.equal(start["conv1.weight"], rank0["conv1.weight"])  # the unfrozen backbone trained on
    assert [k for k in rank0 if not torch.equal(rank0[k], rank1[k])] == []
    assert [k for k in rank0 if not torch.equal(rank0[k], reference[k])] == []
