"""The Classifier's explicit inputs: batches that say where they start, and the LR policy it follows."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from ftlab.data.batches import FeatureBatch
from ftlab.finetune.param_groups import HEAD
from ftlab.models.module import Classifier
from tests.helpers.trainers import quiet_cpu_trainer


def test_a_feature_batch_enters_the_network_at_its_start_stage():
    torch.manual_seed(0)
    module = Classifier("resnet18", ["a", "b", "c"], weights=None, image_size=32).eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        features = images
        for stage in list(module.stages.values())[:4]:  # stem .. layer3
            features = stage(features)
        reference = torch.nn.functional.cross_entropy(module.net(images), labels)  # torchvision's forward
        from_features = module.training_step(FeatureBatch(features, labels, 4), 0)
        from_images = module.training_step((images, labels), 0)
    torch.testing.assert_close(from_features, reference)
    torch.testing.assert_close(from_images, reference)


class _FreezeHead:
    """A policy that gives the head LR factor 0 and every stage 1."""

    def lr_factor(self, stage: str, epoch: int, progress: float) -> float:
        return 0.0 if stage == HEAD else 1.0


def _one_step(policy) -> tuple[Classifier, Classifier]:
    torch.manual_seed(0)
    module = Classifier("resnet18", ["a", "b"], weights=None, image_size=32, backbone_lr_mult=1.0)
    before = Classifier("resnet18", ["a", "b"], weights=None, image_size=32)
    before.load_state_dict(module.state_dict())
    module.follow(policy)
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
    trainer = quiet_cpu_trainer(
        max_steps=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    return module, before


def test_the_module_scales_each_groups_lr_by_the_policy_it_follows():
    trained, before = _one_step(_FreezeHead())
    assert torch.equal(trained.head.weight, before.head.weight)  # factor 0: the head did not move
    head_lrs = {g["lr"] for g in trained.trainer.optimizers[0].param_groups if g["stage"] == HEAD}
    assert head_lrs == {
        1e-3
    }  # the optimizer keeps its own LR (AdamW's 1e-3): the factor only acts in the step
    assert not torch.equal(trained.stages["layer4"][0].conv1.weight, before.stages["layer4"][0].conv1.weight)
    trained, before = _one_step(None)  # no policy: the optimizer's own LRs
    assert not torch.equal(trained.head.weight, before.head.weight)
