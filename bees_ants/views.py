"""What the app shows, as plain values: markdown strings, tables, images and matplotlib figures.

Built from jobs, import reports, checkpoint metadata, predictions and evaluations only, so the
Gradio layer stays wiring and these stay testable.
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

from .data import SkippedFile, load_image
from .importer import MAX_FILES, VAL_FRACTION, ImportReport
from .jobs import Job
from .predict import Evaluation, Prediction
from .train import EpochRecord

MODE_LABELS = {"finetune": "fine-tune the whole network", "fixed": "fixed feature extractor",
               "progressive": "fixed, then fine-tune (progressive)"}
TRAIN_COLOR, VAL_COLOR = "#2f6fdf", "#e8772e"
HISTORY_COLUMNS = ["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"]
PER_CLASS_COLUMNS = ["class", "images", "correct", "recall", "precision"]
THUMBNAIL_SIDE = 256  # gallery images: small to send, big enough for the gallery's preview
THUMBNAILS_SHOWN = 3  # per class, one gallery row each
MISTAKES_SHOWN = 24


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def mode_text(mode: str, frozen_epochs: int) -> str:
    if mode == "progressive":
        return f"fixed for {frozen_epochs} epochs, then fine-tune"
    return MODE_LABELS.get(mode, mode)


def _best(job: Job) -> str:
    last = job.history[-1]
    return f"best val acc **{last.best_val_acc:.1%}** (epoch {last.best_epoch})"


def progress_text(job: Job) -> str:
    """Inside a long step (decoding images, caching features): how far along it is."""
    if job.progress is None:
        return ""
    stage, done, total = job.progress
    return f" · {stage} {done}/{total}"


def status_markdown(job: Job | None, now: float | None = None) -> str:
    """One headline (what is happening, queue position or epoch k of N, elapsed, ETA, best so
    far) and the setup."""
    if job is None:
        return "**No training yet.** Pick a dataset and click **Train**."
    cfg, done = job.config, len(job.history)
    name = Path(cfg.data_dir).name
    elapsed = duration(job.elapsed(now))
    if job.status == "queued":
        ahead = job.queue_position - 1 if job.queue_position else 0
        head = (f"Queued: position {job.queue_position or '?'} · "
                + (f"{ahead} job(s) ahead of yours · " if ahead else "next to start · ")
                + (f"starts in about {duration(job.starts_in)}" if job.starts_in is not None else "starts soon")
                + " (estimated; it starts by itself)")
    elif job.status == "preparing":
        head = f"Preparing **{name}** (downloading it on first use)…"
    elif job.status == "scanning":
        head = f"Scanning **{name}**…{progress_text(job)}"
    elif job.status == "running" and job.cancel_requested:
        head = f"Cancelling: stops after the current batch… (epoch {done} of {cfg.epochs} done)"
    elif job.status == "running" and not done:
        head = f"Training: epoch 1 of {cfg.epochs} running · elapsed {elapsed}{progress_text(job)}"
    elif job.status == "running":
        head = (f"Training: epoch {done} of {cfg.epochs} done · elapsed {elapsed} · "
                f"ETA {duration(job.eta())} · {_best(job)}{progress_text(job)}")
    elif job.status == "completed" and job.history and job.history[-1].stop_reason:
        head = f"✓ Finished after {done} of {cfg.epochs} epochs ({elapsed}) · {_best(job)}"
    elif job.status == "completed":
        head = f"✓ Finished {cfg.epochs} epochs in {elapsed} · {_best(job)}"
    elif job.status == "cancelled" and job.started is None:
        head = "■ Cancelled before it started"
    elif job.status == "cancelled":
        head = f"■ Cancelled after {done} of {cfg.epochs} epochs ({elapsed})" + (f" · {_best(job)}" if done else "")
    elif job.status == "interrupted":
        head = f"■ Interrupted after {done} of {cfg.epochs} epochs" + (f" · {_best(job)}" if done else "")
    else:
        head = "✗ Training failed"
    mode = mode_text(cfg.mode, cfg.frozen_epochs)
    if cfg.train_blocks and cfg.mode != "fixed":
        mode = (f"fine-tune the last {cfg.train_blocks} blocks" if cfg.mode == "finetune"
                else f"{mode} (the last {cfg.train_blocks} blocks)")
    setup = (f"{cfg.arch} · {mode} · {cfg.epochs} epochs · "
             f"batch {cfg.batch_size} · {cfg.optimizer} lr {cfg.lr:g} · device: {job.device}")
    if job.history and job.history[-1].cache:  # what the run keeps in memory, and within what
        setup += f"\n\n{job.history[-1].cache[0].upper()}{job.history[-1].cache[1:]}."
    if job.history and job.history[-1].stop_reason:
        setup = f"{job.history[-1].stop_reason[0].upper()}{job.history[-1].stop_reason[1:]}.\n\n{setup}"
    if job.status == "failed":
        setup = f"**{job.error}**\n\nChange the dataset or the starting weights and click **Train** again.\n\n{setup}"
    elif job.error:  # interrupted by a restart, or stopped at the GPU time limit
        setup = f"{job.error[0].upper()}{job.error[1:]}.\n\n{setup}"
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
    return text + skipped_markdown(job.skipped, max_skipped, name=lambda s: Path(s.path).name)


def skipped_markdown(skipped: list[SkippedFile], max_skipped: int, name=lambda s: s.path) -> str:
    """'Skipped N file(s):' and a bullet per file with its reason; empty when nothing was skipped."""
    if not skipped:
        return ""
    text = f"\n\nSkipped {len(skipped)} file(s):"
    text += "".join(f"\n- `{name(s)}`: {s.reason}" for s in skipped[:max_skipped])
    if len(skipped) > max_skipped:
        text += f"\n- … and {len(skipped) - max_skipped} more"
    return text


def history_table(job: Job | None) -> pd.DataFrame:
    """Epoch records, newest first, so the latest row is in view while training runs."""
    rows = [[r.epoch, f"{r.train_loss:.4f}", f"{r.train_acc:.1%}", f"{r.val_loss:.4f}",
             f"{r.val_acc:.1%}" + (" ★" if r.epoch == r.best_epoch else ""), f"{r.lr:.2g}", f"{r.seconds:.1f}"]
            for r in reversed(job.history if job else [])]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def training_figure(job: Job | None) -> Figure:
    """The live run's curves; the x axis spans the whole run so the plot also shows how far along it is."""
    if job is None:
        return history_figure([], 1, "no epochs yet")
    cfg = job.config
    return history_figure(job.history, cfg.epochs, "waiting for the first epoch…" if job.active else "no epochs yet",
                          cfg.frozen_epochs if cfg.mode == "progressive" else None)


def checkpoint_figure(meta: dict) -> Figure:
    """The same curves for a saved model, from the history its checkpoint keeps, over the epochs
    it ran (a cancelled run's plan does not matter any more)."""
    history = [EpochRecord(**r) for r in meta.get("history", [])]
    frozen = meta.get("hyperparameters", {}).get("frozen_epochs") if meta["mode"] == "progressive" else None
    return history_figure(history, len(history), "no epochs recorded", frozen)


def history_figure(history: list[EpochRecord], epochs: int, empty_text: str,
                   unfrozen_after: int | None = None) -> Figure:
    """Loss and accuracy per epoch, train vs val, best val epoch starred, x axis 1..epochs; for a
    progressive run a dotted line where the backbone was unfrozen."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    x = [r.epoch for r in history]
    for ax, title, key in ((loss_ax, "Loss", "loss"), (acc_ax, "Accuracy", "acc")):
        ax.plot(x, [getattr(r, f"train_{key}") for r in history], "o-", color=TRAIN_COLOR, ms=4, label="train")
        ax.plot(x, [getattr(r, f"val_{key}") for r in history], "s-", color=VAL_COLOR, ms=4, label="val")
        ax.set_title(title, fontsize=12, loc="left", fontweight="bold")
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(epochs, 2) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        if unfrozen_after is not None and unfrozen_after < epochs:
            ax.axvline(unfrozen_after + 0.5, color="gray", ls=":", lw=1.2)
            ax.text(unfrozen_after + 0.6, 0.98, "unfrozen", transform=ax.get_xaxis_transform(), va="top",
                    fontsize=9, color="gray")
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
            ax.text(0.5, 0.5, empty_text, transform=ax.transAxes, ha="center", va="center", color="gray")
    return fig


def result_markdown(job: Job | None) -> str:
    """After a run: best accuracy and where the checkpoint went."""
    if job is None or job.active or job.status == "failed":
        return ""
    if job.checkpoint_path is None:
        return "No checkpoint was written: the run stopped before its first epoch finished."
    best = job.history[-1]
    text = (f"**Best val accuracy {best.best_val_acc:.1%}** (epoch {best.best_epoch} of {len(job.history)} run). "
            f"Checkpoint: `{job.checkpoint_path}` — pick it in the **Predict** or **Evaluate & export** tab.")
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


def thumbnail(path: str) -> Image.Image:
    """An image file, small, for a gallery (sent as an image, so any dataset folder can be shown)."""
    return load_image(path, THUMBNAIL_SIDE)


# -- your own dataset ----------------------------------------------------------------------------

UPLOAD_HELP = (f"A zip of one folder per class (`ants/…`, `bees/…`: split {1 - VAL_FRACTION:.0%}/"
               f"{VAL_FRACTION:.0%} into train/val per class), or of `train/<class>/…` and `val/<class>/…` "
               "folders (kept as they are). "
               f"Up to {MAX_FILES:,} images; other files are skipped and listed.")


def import_markdown(report: ImportReport, max_skipped: int = 10) -> str:
    """What an upload became: classes and images per split, how it was split, what was left out."""
    n_images = sum(n for per_class in report.counts.values() for n in per_class.values())
    text = (f"**✓ Imported `{Path(report.path).name}`**: {len(report.classes)} classes, {n_images} images · "
            f"{report.split} · {1 - report.val_fraction:.0%} train / {report.val_fraction:.0%} val. "
            "It is now selected as the dataset.\n\n| class | train | val |\n|---|---:|---:|")
    text += "".join(f"\n| {c} | {report.counts['train'][c]} | {report.counts['val'][c]} |" for c in report.classes)
    text += "".join(f"\n\nNote: {note}" for note in report.notes)
    return text + skipped_markdown(report.skipped, max_skipped)


def thumbnail_items(report: ImportReport) -> list[tuple[Image.Image, str]]:
    return [(thumbnail(p), cls) for cls, paths in report.thumbnails.items() for p in paths[:THUMBNAILS_SHOWN]]


# -- saved models ---------------------------------------------------------------------------------

def model_markdown(meta: dict) -> str:
    """A saved model in a few lines: backbone, mode, classes, best accuracy, data and settings."""
    hyper = meta.get("hyperparameters", {})
    head = f"### {meta['arch']} · {mode_text(meta['mode'], hyper.get('frozen_epochs', '?'))}"
    lines = [f"**Classes:** {', '.join(meta['class_names'])}"]
    if "best" in meta:
        ran = len(meta.get("history", []))
        lines.append(f"**Best val accuracy {meta['best']['val_acc']:.1%}** (epoch {meta['best']['epoch']} of {ran} "
                     f"run) · {meta.get('status', 'completed')}")
    dataset = meta.get("dataset", {})
    if dataset:
        sizes = " · ".join(f"{split} {sum(c.values())}" for split, c in dataset.get("counts", {}).items())
        lines.append(f"**Data:** `{Path(dataset['root']).name}` ({sizes} images)")
    if hyper:
        lines.append(f"{hyper['epochs']} epochs · batch {hyper['batch_size']} · lr {hyper['lr']:g} · "
                     f"momentum {hyper['momentum']:g} · LR ×{hyper['gamma']:g} every {hyper['step_size']} epochs")
    lines.append(f"{meta.get('device', '')} · {meta.get('created', '')[:16].replace('T', ' ')}".strip(" ·"))
    return head + "\n" + "  \n".join(lines)


# Code lines stay short: the note sits in a narrow column.
CHECKPOINT_HOWTO = """**`{name}`** holds the trained weights and everything needed to use them: classes
({classes}), preprocessing, hyperparameters, history. Classify with this project:

```bash
python -m bees_ants predict \\
    {name} photo.jpg
```
or `Predictor(path).predict(["photo.jpg"])` from `bees_ants.predict`. It is a plain torch file:
`torch.load(path, weights_only=True)` gives a dict with `state_dict` and `meta`."""

PROGRAM_HOWTO = """**`{name}`** is a `torch.export` program: it runs with torch alone, without this project.
Give it uint8 RGB crops, (N, 3, {crop}, {crop}): the shorter side resized to {resize}, then
center-cropped. It returns the probabilities of {classes}, (N, {n}). Normalisation is inside; the
class names and this recipe are stored in the file:

```python
import json, torch
extra = {{"bees_ants.json": ""}}
program = torch.export.load(
    "{name}",
    extra_files=extra)
info = json.loads(extra["bees_ants.json"])
probs = program.module()(crops)
```"""


def takeaway_markdown(path: str, meta: dict) -> str:
    """How to use a downloaded checkpoint (.pt) or exported program (.pt2)."""
    howto = PROGRAM_HOWTO if path.endswith(".pt2") else CHECKPOINT_HOWTO
    prep = meta["preprocessing"]
    return howto.format(name=Path(path).name, classes=", ".join(meta["class_names"]), n=len(meta["class_names"]),
                        crop=prep["crop_size"], resize=prep["resize_size"])


# -- evaluation -----------------------------------------------------------------------------------

def _correct(ev: Evaluation) -> int:
    return sum(ev.confusion[i][i] for i in range(len(ev.classes)))


def evaluation_markdown(ev: Evaluation, meta: dict) -> str:
    n, correct = len(ev.true), _correct(ev)
    text = f"### {ev.split} accuracy {ev.accuracy:.1%} ({correct} of {n} images) · loss {ev.loss:.3f}"
    if "best" in meta:
        text += f"\nRecorded when it was trained: {meta['best']['val_acc']:.1%} (epoch {meta['best']['epoch']})."
    text += ("\n\nPer class, *recall* is the share of its images classified right (the class's accuracy), "
             "*precision* the share of its predictions that were right (— if it was never predicted).")
    wrong = n - correct
    if not wrong:
        return text + "\n\n**No mistakes**: every image was classified correctly."
    shown = min(wrong, MISTAKES_SHOWN)
    return (text + f"\n\n**{wrong} mistake(s)**; below, " + (f"the {shown} worst" if shown < wrong else "all")
            + " of them, most confidently wrong (highest loss) first.")


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


def per_class_table(ev: Evaluation) -> pd.DataFrame:
    """One row per class and one for all: images, correct, recall (the class's accuracy), precision."""
    rows = []
    for i, (name, m) in enumerate(ev.per_class().items()):
        predicted = sum(row[i] for row in ev.confusion)
        rows.append([name, m["images"], ev.confusion[i][i], f"{m['recall']:.1%}",
                     f"{m['precision']:.1%}" if predicted else "—"])  # never predicted
    rows.append(["all", len(ev.true), _correct(ev), f"{ev.accuracy:.1%}", ""])
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def mistake_items(ev: Evaluation) -> list[tuple[Image.Image, str]]:
    """Misclassified images, worst first, captioned 'true: ants · predicted: bees (97%)'."""
    return [(thumbnail(ev.paths[i]), f"true: {ev.classes[ev.true[i]]} · predicted: "
             f"{ev.classes[ev.predicted[i]]} ({ev.confidence[i]:.0%})") for i in ev.mistakes()[:MISTAKES_SHOWN]]
