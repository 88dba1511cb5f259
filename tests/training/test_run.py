"""`ftlab.train.train(cfg)` in-process on the real composed config: seeded runs repeat exactly."""

from __future__ import annotations

import torch

from ftlab.callbacks.schedule import ScheduleCallback
from ftlab.finetune.strategies import build_phases
from ftlab.training.run import train, warn_unreached_phases
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


def test_a_phase_past_max_epochs_is_named_in_a_warning(caplog):
    stages = ["stem", "layer1", "layer2", "layer3", "layer4"]
    schedule = ScheduleCallback(build_phases("last_stages", stages, top_k=1, unfreeze_at_epoch=3))
    with caplog.at_level("WARNING", logger="ftlab.training.run"):
        warn_unreached_phases(schedule, 10)
    assert not caplog.records  # the phase from epoch 3 runs
    with caplog.at_level("WARNING", logger="ftlab.training.run"):
        warn_unreached_phases(schedule, 3)
    (record,) = caplog.records
    assert "phase from epoch 3 never runs with trainer.max_epochs=3, so layer4 never trains" in record.message
