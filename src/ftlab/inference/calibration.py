"""Calibrated probabilities: ECE, NLL and Brier score, and temperature scaling stored in the checkpoint.

Temperature scaling divides the logits by one scalar T fitted on held-out data (the validation split) by
minimising the negative log-likelihood; T > 1 softens an over-confident model. Accuracy cannot change: the
arg-max of logits / T is the arg-max of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassCalibrationError

from ftlab.errors import FtlabError
from ftlab.io.checkpoints import atomic_write, load_checkpoint

ECE_BINS = 15
TEMPERATURE_KEY = "temperature"  # in the checkpoint's `ftlab` record


@dataclass
class Calibration:
    """How well the probabilities match the observed accuracy (lower is better for all three)."""

    ece: float  # expected calibration error, 15 equal-width confidence bins (L1)
    nll: float  # mean negative log-likelihood of the true class
    brier: float  # mean over images of sum over classes of (p - one_hot)^2

    @classmethod
    def of(cls, logits: torch.Tensor, target: torch.Tensor) -> Calibration:
        """The three scores of `softmax(logits)` against the true class indices."""
        logits = logits.float()
        probs = logits.softmax(dim=1)
        n_classes = logits.shape[1]
        ece = MulticlassCalibrationError(n_classes, n_bins=ECE_BINS, norm="l1")(probs, target)
        one_hot = F.one_hot(target, n_classes).float()
        return cls(
            ece=float(ece),
            nll=float(F.cross_entropy(logits, target)),
            brier=float(((probs - one_hot) ** 2).sum(dim=1).mean()),
        )

    def as_dict(self) -> dict[str, float]:
        """`{"ece": ..., "nll": ..., "brier": ...}`."""
        return {"ece": self.ece, "nll": self.nll, "brier": self.brier}


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (LBFGS on log T, so T stays positive)."""
    if len(target) == 0:
        raise FtlabError("Temperature scaling needs validation images: the validation split is empty.")
    logits, target = logits.detach().float(), target.detach()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())


MULTI_LABEL_REFUSAL = (
    "calibrate=true: this checkpoint is multi-label (a sigmoid per label, with per-label thresholds tuned on "
    "the validation split for F1). Temperature scaling fits one softmax temperature; ftlab does not "
    "calibrate multi-label models, since a temperature would move every probability off the thresholds "
    "tuned for it. Run without calibrate=true: the stored thresholds decide each label."
)


def store_temperature(ckpt_path: str | Path, temperature: float) -> None:
    """Write `temperature` into the checkpoint's `ftlab` record (atomic rewrite: never half-written)."""
    path = Path(ckpt_path).expanduser()
    checkpoint = load_checkpoint(path, mmap=False)
    checkpoint["ftlab"][TEMPERATURE_KEY] = float(temperature)
    try:
        atomic_write(path, lambda f: torch.save(checkpoint, f))
    except OSError as err:
        raise FtlabError(f"Could not store the temperature in {path}: {err}.") from err


def describe(temperature: float | None) -> str:
    """One line saying whether probabilities are calibrated, for the commands' output."""
    if temperature is None:
        return (
            "probabilities: not calibrated (`python -m ftlab.eval ckpt_path=<ckpt> calibrate=true` fits it)"
        )
    return f"probabilities: calibrated (temperature scaling, T={temperature:.3f}, fitted on the val split)"
