"""`ftlab.train.train(cfg)` in-process on the real composed config: seeded runs repeat exactly."""

from __future__ import annotations

import torch

from ftlab.training.run import train
from tests.helpers.cli import TINY


def test_same_seed_same_run_different_seed_different_run(compose_cfg):
    def final_state(seed: int):
        cfg = compose_cfg(["+experiment=smoke", *TINY, "debug=fast", f"seed={seed}", "logger=csv"])
        metrics, objects = train(cfg)
        assert objects["trainer"].global_step == 2 and "val/acc" in metrics  # debug=fast took effect
        return {k: v.clone() for k, v in objects["module"].net.state_dict().items()}

    first, second, other = final_state(7), final_state(7), final_state(8)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
