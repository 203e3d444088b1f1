"""What the app shows, as plain values: markdown strings, tables and matplotlib figures.

Built from jobs and predictions only, so the Gradio layer stays wiring and these stay testable.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: a server has no display
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from PIL import Image

from .jobs import Job
from .predict import Prediction

MODE_LABELS = {"finetune": "fine-tune the whole network", "fixed": "fixed feature extractor"}
TRAIN_COLOR, VAL_COLOR = "#2f6fdf", "#e8772e"
HISTORY_COLUMNS = ["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"]


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _best(job: Job) -> str:
    last = job.history[-1]
    return f"best val acc **{last.best_val_acc:.1%}** (epoch {last.best_epoch})"


def status_markdown(job: Job | None, now: float | None = None) -> str:
    """One headline (what is happening, epoch k of N, elapsed, ETA, best so far) and the setup."""
    if job is None:
        return "**No training yet.** Pick a dataset and click **Train**."
    cfg, done = job.config, len(job.history)
    name = Path(cfg.data_dir).name
    elapsed = duration(job.elapsed(now))
    if job.status == "preparing":
        head = f"Preparing **{name}** (downloading it on first use)…"
    elif job.status == "scanning":
        head = f"Scanning **{name}**…"
    elif job.status == "running" and job.cancel_requested:
        head = f"Cancelling: stops after the current batch… (epoch {done} of {cfg.epochs} done)"
    elif job.status == "running" and not done:
        head = f"Training: epoch 1 of {cfg.epochs} running · elapsed {elapsed}"
    elif job.status == "running":
        head = (f"Training: epoch {done} of {cfg.epochs} done · elapsed {elapsed} · "
                f"ETA {duration(job.eta())} · {_best(job)}")
    elif job.status == "completed":
        head = f"✓ Finished {cfg.epochs} epochs in {elapsed} · {_best(job)}"
    elif job.status == "cancelled":
        head = f"■ Cancelled after {done} of {cfg.epochs} epochs ({elapsed})" + (f" · {_best(job)}" if done else "")
    else:
        head = "✗ Training failed"
    setup = (f"{cfg.arch} · {MODE_LABELS.get(cfg.mode, cfg.mode)} · {cfg.epochs} epochs · batch {cfg.batch_size} · "
             f"lr {cfg.lr:g} · device: {job.device}")
    if job.status == "failed":
        setup = f"**{job.error}**\n\nChange the dataset or the starting weights and click **Train** again.\n\n{setup}"
    return f"### {head}\n{setup}"


def dataset_markdown(job: Job | None, max_skipped: int = 5) -> str:
    """The scan result: images per split and class, and every file that was skipped, with why."""
    if job is None or not job.counts:
        return ""
    splits = []
    for split, per_class in job.counts.items():
        parts = ", ".join(f"{c} {n}" for c, n in per_class.items())
        splits.append(f"{split} **{sum(per_class.values())}** images ({parts})")
    text = f"**Dataset** `{Path(job.config.data_dir).name}`: " + " · ".join(splits)
    if job.skipped:
        text += f"\n\nSkipped {len(job.skipped)} file(s):"
        text += "".join(f"\n- `{Path(s.path).name}`: {s.reason}" for s in job.skipped[:max_skipped])
        if len(job.skipped) > max_skipped:
            text += f"\n- … and {len(job.skipped) - max_skipped} more"
    return text


def history_table(job: Job | None) -> pd.DataFrame:
    """Epoch records, newest first, so the latest row is in view while training runs."""
    rows = [[r.epoch, f"{r.train_loss:.4f}", f"{r.train_acc:.1%}", f"{r.val_loss:.4f}",
             f"{r.val_acc:.1%}" + (" ★" if r.epoch == r.best_epoch else ""), f"{r.lr:.2g}", f"{r.seconds:.1f}"]
            for r in reversed(job.history if job else [])]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def training_figure(job: Job | None) -> Figure:
    """Loss and accuracy per epoch, train vs val, best val epoch starred; the x axis spans the
    whole run so the plot also shows how far along it is."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    history = job.history if job else []
    x = [r.epoch for r in history]
    for ax, title, key in ((loss_ax, "Loss", "loss"), (acc_ax, "Accuracy", "acc")):
        ax.plot(x, [getattr(r, f"train_{key}") for r in history], "o-", color=TRAIN_COLOR, ms=4, label="train")
        ax.plot(x, [getattr(r, f"val_{key}") for r in history], "s-", color=VAL_COLOR, ms=4, label="val")
        ax.set_title(title, fontsize=12, loc="left", fontweight="bold")
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(job.config.epochs if job else 1, 2) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    acc_ax.set_ylim(0, 1.02)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if history:
        best = history[-1]
        acc_ax.plot([best.best_epoch], [best.best_val_acc], "*", color=VAL_COLOR, ms=15, mec="black", mew=0.6,
                    label=f"best val {best.best_val_acc:.1%} (epoch {best.best_epoch})")
        # A diverged run logs inf/nan losses; scale the axis to the finite ones.
        finite = [v for r in history for v in (r.train_loss, r.val_loss) if math.isfinite(v)]
        if finite:
            loss_ax.set_ylim(0, max(finite) * 1.1 or 1)
        fig.legend(*acc_ax.get_legend_handles_labels(), loc="outside upper center", ncols=3, frameon=False)
    else:
        for ax in (loss_ax, acc_ax):
            ax.text(0.5, 0.5, "waiting for the first epoch…" if job and job.active else "no epochs yet",
                    transform=ax.transAxes, ha="center", va="center", color="gray")
    return fig


def result_markdown(job: Job | None) -> str:
    """After a run: best accuracy and where the checkpoint went."""
    if job is None or job.active or job.status == "failed":
        return ""
    if job.checkpoint_path is None:
        return "No checkpoint was written: the run stopped before its first epoch finished."
    best = job.history[-1]
    text = (f"**Best val accuracy {best.best_val_acc:.1%}** (epoch {best.best_epoch} of {len(job.history)} run). "
            f"Checkpoint: `{job.checkpoint_path}` — pick it in the **Predict** tab.")
    if Path(job.config.data_dir, "val").is_dir():  # the grid below needs the val images
        text += "\n\n**Val predictions of the best model** (predicted vs true, mistakes in red):"
    return text


def figure_image(fig: Figure) -> Image.Image:
    """Render once; the image can then be sent to any number of pages."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return Image.open(buf)


# -- predictions ---------------------------------------------------------------------------------

def gallery_items(predictions: list[Prediction]) -> list[tuple[Image.Image, str]]:
    return [(p.image, f"{p.label} · {p.confidence:.0%}") for p in predictions if p.error is None]


def problems_markdown(predictions: list[Prediction]) -> str:
    bad = [p for p in predictions if p.error is not None]
    if not bad:
        return f"Classified {len(predictions)} image(s)." if predictions else ""
    text = (f"Classified {len(predictions) - len(bad)} of {len(predictions)} file(s). "
            f"**{len(bad)} could not be read:**")
    return text + "".join(f"\n- `{p.name}`: {p.error}" for p in bad)


def predictions_table(predictions: list[Prediction]) -> pd.DataFrame:
    rows = [[p.name, p.label or "", round(p.confidence, 4) if p.error is None else None, p.error or ""]
            for p in predictions]
    return pd.DataFrame(rows, columns=["file", "label", "confidence", "problem"])
