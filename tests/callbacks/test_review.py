"""TensorBoard review: what the callback logs, read back from a real sweep's event files and a real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from ftlab.callbacks.review import (
    CLASS_ACC_PREFIX,
    CLASS_SCORE_PREFIXES,
    CONFUSION_NORMALIZED_TAG,
    CONFUSION_TAG,
    WORST_TAG,
    per_class_accuracy,
    per_class_scores,
)
from ftlab.inference.plots import confusion_figure, figure_array, row_normalized
from tests.helpers.tensorboard import serve


def _events(run: Path) -> EventAccumulator:
    folder = next(
        (run / "tensorboard").rglob("events.out.tfevents.*")
    ).parent  # sweeps: tensorboard/<overrides>
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _runs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "tensorboard").is_dir())


def test_per_class_accuracy_and_confusion_image() -> None:
    matrix = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    acc = per_class_accuracy(matrix)
    assert acc[:2].tolist() == [0.75, 0.5] and torch.isnan(acc[2])
    image = figure_array(confusion_figure(matrix, ["a", "b", "c"]))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.std() > 0  # something was drawn


def test_per_class_scores_match_scikit_learn() -> None:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, true, rng.integers(0, 4, 200))
    pred[pred == 3] = 2  # class 3 is never predicted: precision and F1 0 by zero division
    matrix = torch.as_tensor(confusion_matrix(true, pred, labels=range(4)))
    scores = per_class_scores(matrix)
    expected = precision_recall_fscore_support(true, pred, labels=range(4), zero_division=0)
    for name, reference in zip(("precision", "recall", "f1"), expected[:3], strict=False):
        assert np.allclose(scores[name].numpy(), reference), name
    shares = row_normalized(matrix)
    assert np.allclose(shares.numpy(), confusion_matrix(true, pred, labels=range(4), normalize="true"))
    image = figure_array(confusion_figure(matrix, list("abcd"), normalize=True))
    assert image.dtype == np.uint8 and image.std() > 0


def test_review_logs_images_class_accuracy_and_hparams(optuna_sweep: Path) -> None:
    runs = _runs(optuna_sweep)
    assert len(runs) == 3
    grids = 0
    cached = 0
    for run in runs:
        events = _events(run)
        tags = events.Tags()
        val_acc = events.Scalars("val/acc")
        # one confusion matrix per validation epoch
        confusion = events.Images(CONFUSION_TAG)
        assert len(confusion) == len(val_acc)
        assert len(events.Images(CONFUSION_NORMALIZED_TAG)) == len(val_acc)  # rows normalised, same epochs
        for prefix in CLASS_SCORE_PREFIXES.values():  # precision, recall, F1 of every class, every epoch
            scored = sorted(t for t in tags["scalars"] if t.startswith(prefix))
            assert scored == [f"{prefix}class_{i}" for i in range(3)], scored
            assert all(0.0 <= e.value <= 1.0 for t in scored for e in events.Scalars(t))
        recalls = [events.Scalars(f"{CLASS_SCORE_PREFIXES['recall']}class_{i}")[-1].value for i in range(3)]
        accs = [events.Scalars(f"{CLASS_ACC_PREFIX}class_{i}")[-1].value for i in range(3)]
        assert np.allclose(recalls, accs)  # a class's accuracy is its recall
        assert all(e.width > 100 and e.height > 100 for e in confusion)
        # per-class accuracies bracket the overall accuracy
        class_tags = [t for t in tags["scalars"] if t.startswith(CLASS_ACC_PREFIX)]
        assert sorted(class_tags) == [f"{CLASS_ACC_PREFIX}class_{i}" for i in range(3)]
        per_class = [events.Scalars(t)[-1].value for t in class_tags]
        assert min(per_class) - 1e-6 <= val_acc[-1].value <= max(per_class) + 1e-6
        # HParams tab: the swept values with final metrics
        content = events.PluginTagToContent("hparams")
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = {k: v for k, v in data.session_start_info.hparams.items()}
        overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        lr = next(str(o).split("=")[1] for o in overrides if str(o).startswith("optimizer.lr="))
        assert hparams["optimizer.lr"].string_value == lr
        assert hparams["lr"].number_value == pytest.approx(float(lr))
        assert hparams["backbone"].string_value == "resnet18"
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
        assert {"hparams/val_acc", "hparams/best_val_acc"} <= metric_tags
        assert events.Scalars("hparams/val_acc")[-1].value == pytest.approx(val_acc[-1].value)
        # the worst misclassified images: one table row per image, each tile beside its Grad-CAM overlay
        unfrozen_from = int(next(str(o).split("=")[1] for o in overrides if "unfreeze_at_epoch" in str(o)))
        cached += unfrozen_from > 0  # the backbone was frozen: validation ran on cached features
        if val_acc[-1].value < 1.0:
            (grid,) = events.Images(WORST_TAG)
            table = events.Tensors(f"{WORST_TAG}/text_summary")[-1].tensor_proto.string_val[0].decode()
            items = table.count("\n") - 1
            wrong = round((1 - val_acc[-1].value) * 12)  # 12 validation images
            assert items == min(wrong, 16)
            assert grid.width == min(8, 2 * items) * (64 + 2) + 2  # resnet18: every image has an overlay
            assert grid.height == -(-2 * items // 8) * (64 + 2) + 2
            grids += 1
    assert grids >= 1 and cached >= 1, (grids, cached)


def test_tensorboard_server_serves_the_runs_scalars(optuna_sweep: Path) -> None:
    expected = {"val/acc", "val/loss", f"{CLASS_ACC_PREFIX}class_0"}
    path = "/data/plugin/scalars/tags"

    def ready(answers: dict) -> bool:
        served = answers.get(path, {})
        return len(served) == 3 and all(expected <= set(tags) for tags in served.values())

    served = serve(optuna_sweep, [path], ready)[path]
    assert sorted(s.split("/tensorboard/")[0] for s in served) == [str(n) for n in range(3)], served
    assert all(expected <= set(tags) for tags in served.values()), served
