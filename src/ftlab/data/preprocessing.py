"""How images must look to a backbone (resize, crop, interpolation, normalisation), from its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torchvision.models import WeightsEnum


@dataclass(frozen=True)
class Preprocessing:
    """How images must look to the backbone: resize, centre crop, interpolation, normalisation."""

    crop_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    @classmethod
    def from_weights(cls, weights: WeightsEnum) -> Preprocessing:
        """Read the preprocessing from torchvision's `Weights.transforms()`."""
        t = weights.transforms()
        return cls(
            crop_size=int(t.crop_size[0]),
            resize_size=int(t.resize_size[0]),
            mean=tuple(float(m) for m in t.mean),
            std=tuple(float(s) for s in t.std),
            interpolation=t.interpolation.value,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of `to_dict` (as stored in checkpoints)."""
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for checkpoints and hparams."""
        d = asdict(self)
        return {**d, "mean": list(self.mean), "std": list(self.std)}

    def at_size(self, image_size: int | None) -> Preprocessing:
        """The same recipe for another crop size, keeping the resize/crop ratio."""
        if image_size is None or image_size == self.crop_size:
            return self
        resize = round(image_size * self.resize_size / self.crop_size)
        return Preprocessing(image_size, resize, self.mean, self.std, self.interpolation)
