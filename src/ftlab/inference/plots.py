"""Figures of a model's results: the one confusion-matrix plotter and the reliability diagram.

Matplotlib's object API without pyplot: no GUI backend, safe in training processes and dataloader workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_ANNOTATED_CLASSES = 20  # above this, counts are left out of the cells: they would not be readable


def row_normalized(matrix: torch.Tensor | list[list[int]]) -> torch.Tensor:
    """Each row of a confusion matrix divided by its sum (the share of a true class predicted as each class);
    a class without samples keeps a row of zeros."""
    counts = torch.as_tensor(matrix).double()
    return counts / counts.sum(dim=1, keepdim=True).clamp(min=1)


def confusion_figure(
    matrix: torch.Tensor | list[list[int]], class_names: list[str], title: str = "", normalize: bool = False
) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted) as a heat map with counts, or with each
    row's shares (`normalize`: rows sum to 1, so classes of different sizes compare)."""
    from matplotlib.figure import Figure

    counts = (row_normalized(matrix) if normalize else torch.as_tensor(matrix)).cpu().numpy()
    n = len(class_names)
    side = min(2.5 + 0.45 * n, 12.0)
    figure = Figure(figsize=(side, side), dpi=80, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(
        counts, cmap="Blues", vmin=0.0 if normalize else None, vmax=1.0 if normalize else None
    )
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true")
    if title:
        axes.set_title(title)
    axes.set_xticklabels(class_names, rotation=45, ha="right")
    axes.set_yticklabels(class_names)
    if n <= MAX_ANNOTATED_CLASSES:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            colour = "white" if value > threshold else "black"
            text = f"{value:.2f}" if normalize else str(int(value))
            axes.text(col, row, text, ha="center", va="center", color=colour, fontsize=8)
    return figure


def reliability_figure(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15, title: str = ""
) -> Figure:
    """Accuracy against top-1 confidence in `bins` equal-width bins, beside the perfect-calibration line."""
    from matplotlib.figure import Figure

    edges = torch.linspace(0, 1, bins + 1)
    index = torch.bucketize(confidence.clamp(1e-12, 1.0), edges[1:-1], right=False)
    count = torch.bincount(index, minlength=bins).float()
    accuracy = torch.bincount(index, weights=correct.float(), minlength=bins) / count.clamp(min=1)
    mean_conf = torch.bincount(index, weights=confidence.float(), minlength=bins) / count.clamp(min=1)
    centres = ((edges[:-1] + edges[1:]) / 2).numpy()
    seen = (count > 0).numpy()
    figure = Figure(figsize=(4.5, 4.5), dpi=80, layout="constrained")
    axes = figure.add_subplot()
    axes.bar(centres[seen], accuracy.numpy()[seen], width=1 / bins, edgecolor="black", label="accuracy")
    axes.bar(
        centres[seen],
        (mean_conf - accuracy).numpy()[seen],
        bottom=accuracy.numpy()[seen],
        width=1 / bins,
        color="red",
        alpha=0.3,
        label="gap to confidence",
    )
    axes.plot([0, 1], [0, 1], "k--", label="perfectly calibrated")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
    axes.set_title(title or "reliability diagram")
    axes.legend(loc="upper left", fontsize=8)
    return figure


def figure_array(figure: Figure) -> np.ndarray:
    """A figure's pixels as an RGB uint8 (H, W, 3) array (for TensorBoard's add_image)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG."""
    figure.savefig(path, dpi=100)
    return path
