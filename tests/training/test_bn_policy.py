"""`finetune.bn=auto`: pretrained weights keep every BatchNorm's statistics, a random init learns them."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from ftlab.errors import FtlabError
from ftlab.finetune.phases import resolve_bn
from ftlab.training.run import train
from tests.helpers.cli import TINY


def test_auto_resolves_from_the_weights_and_explicit_policies_pass_through():
    assert resolve_bn("auto", pretrained=True)[0] == "all_frozen"
    assert resolve_bn("auto", pretrained=False)[0] == "frozen"
    for policy in ("frozen", "train", "all_frozen"):
        assert resolve_bn(policy, pretrained=True)[0] == policy
    with pytest.raises(FtlabError, match="finetune.bn='sometimes'"):
        resolve_bn("sometimes", pretrained=True)


def _running_means(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.running_mean.clone() for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("pretrained", [True, False])
def test_default_policy_in_a_real_run(compose_cfg, tmp_path, caplog, pretrained):
    weights = "null"
    if pretrained:  # a state dict of the original architecture, as a user's own weights file
        path = tmp_path / "resnet18.pth"
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
        weights = str(path)
    cfg = compose_cfg(
        ["+experiment=smoke", *TINY, "finetune=full", f"model.weights={weights}", "debug=fast", "logger=csv"]
    )
    with caplog.at_level(logging.INFO, logger="ftlab.training.run"):
        _, objects = train(cfg)
    expected = "all_frozen" if pretrained else "frozen"
    assert f"BatchNorm policy: {expected}" in caplog.text
    reference = torchvision.models.resnet18(weights=None)
    if pretrained:
        reference.load_state_dict(torch.load(path, weights_only=True))
    before = {k: v for k, v in _running_means(reference).items() if not k.startswith("fc")}
    after = _running_means(objects["module"].net)
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert unchanged == pretrained  # pretrained: statistics kept exactly; random init: they were learned
