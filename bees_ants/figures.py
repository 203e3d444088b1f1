"""A run's curves and an evaluation's confusion matrix as matplotlib figures, and any figure as an image.

For where no SVG is drawn: the Hub model card's PNG files (hub.py), the Evaluate tab's confusion
plot, and the labelled image grids (predict.val_sample_figure) that the Train and Predict tabs
show as pictures. It sits below the views and the UI, so hub.py needs no presentation code.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: a server has no display
from matplotlib.figure import Figure
from PIL import Image

from .predict import Evaluation
from .train import EpochRecord

TRAIN_COLOR, VAL_COLOR = "#2f6fdf", "#e8772e"  # the SVG curves (views.plots) use the same


def history_of(meta: dict) -> list[EpochRecord]:
    """A checkpoint's history (its metadata keeps plain dicts) as the records curves are drawn from."""
    return [EpochRecord(**r) for r in meta.get("history", [])]


def curves_figure(meta: dict) -> Figure:
    """A saved model's curves as a matplotlib figure, for files shown where no SVG is (the Hub
    model card's PNG): loss and accuracy per epoch, train vs val, the best val epoch starred."""
    history = history_of(meta)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    for ax, title, key in zip(fig.subplots(1, 2), ("Loss", "Accuracy"), ("loss", "acc")):
        x = [r.epoch for r in history]
        ax.plot(x, [getattr(r, f"train_{key}") for r in history], "o-", color=TRAIN_COLOR, ms=4, label="train")
        ax.plot(x, [getattr(r, f"val_{key}") for r in history], "s-", color=VAL_COLOR, ms=4, label="val")
        ax.set_title(title, fontsize=12, loc="left", fontweight="bold")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        if key == "acc" and history:
            best = history[-1]
            ax.plot([best.best_epoch], [best.best_val_acc], "*", color=VAL_COLOR, ms=15, mec="black", mew=0.6,
                    label=f"best val {best.best_val_acc:.1%} (epoch {best.best_epoch})")
            ax.legend(frameon=False)
    return fig


def confusion_figure(ev: Evaluation) -> Figure:
    """Counts per (true, predicted) pair, row share as shading, correct ones on the diagonal."""
    n = len(ev.classes)
    counts = ev.confusion
    shares = [[c / max(1, sum(row)) for c in row] for row in counts]
    side = min(9.0, 2.2 + 0.9 * n)
    fig = Figure(figsize=(side, side * 0.9), layout="constrained")
    ax = fig.subplots()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for t in range(n):
        for p in range(n):
            ax.text(p, t, f"{counts[t][p]}\n{shares[t][p]:.0%}", ha="center", va="center",
                    fontsize=11 if n <= 6 else 8, color="white" if shares[t][p] > 0.6 else "black")
    ax.set_xticks(range(n), ev.classes, rotation=30 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), ev.classes)
    ax.set_xlabel("predicted", fontweight="bold")
    ax.set_ylabel("true", fontweight="bold")
    ax.set_title(f"Confusion matrix ({ev.split}, {len(ev.true)} images)", fontsize=12, loc="left", fontweight="bold")
    ax.tick_params(length=0)
    return fig


def figure_image(fig: Figure) -> Image.Image:
    """Render once; the image can then be sent to any number of pages."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return Image.open(buf)
