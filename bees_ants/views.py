"""What the app shows, as plain values: markdown strings, tables, curves as SVG, images and
matplotlib figures.

Built from jobs, import reports, checkpoint metadata, predictions and evaluations only, so the
Gradio layer stays wiring and these stay testable.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: a server has no display
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from .data import SkippedFile, load_image
from .draft import MAX_CLASSES, MAX_IMAGES
from .importer import MAX_FILES, VAL_FRACTION, ImportReport
from .jobs import Job
from .predict import Evaluation, Explanation, Prediction
from .stats import interval_text, wilson_interval, within_interval
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
    if job.storage:  # decoded once, or streamed from disk: why a run is slower or lighter than expected
        text += f" · {job.storage}"
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


# Curves are drawn as SVG text (a few KB of coordinates), which the browser draws: nothing is
# rendered to pixels on the server, and every redraw replaces the whole drawing, so a page never
# shows a stale mix of two updates. (gr.LinePlot does this for the first draw only: Gradio 6.31
# redraws it with the points of the update before when its axes or series change.)
RUN_COLOURS = ("#2f6fdf", "#e8772e", "#2a9d5c", "#c23b8f", "#7a5cd6", "#b08d1a", "#1d9bb2", "#d6453d")
PLOT_W, PLOT_H = 460, 250
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 46, 14, 30, 34


@dataclass
class Series:
    label: str
    colour: str
    dashed: bool
    points: list[tuple[int, float]]  # (epoch, value); non-finite values are left out


def _nice_step(span: float, ticks: int) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _plot_svg(title: str, series: list[Series], epochs: int, percent: bool, empty_text: str,
              best: tuple[int, float] | None, unfrozen_after: int | None) -> str:
    """One plot: value per epoch, x from 1 to `epochs`, y from 0 (to 100% for accuracies)."""
    values = [v for s in series for _, v in s.points]
    top = 1.0 if percent else max(values, default=1.0) * 1.1 or 1.0
    y_step = 0.25 if percent else _nice_step(top, 4)
    top = math.ceil(top / y_step - 1e-9) * y_step
    x_max = max(epochs, 2)
    inner_w, inner_h = PLOT_W - MARGIN_L - MARGIN_R, PLOT_H - MARGIN_T - MARGIN_B

    def x(epoch: float) -> float:
        return MARGIN_L + (epoch - 1) / (x_max - 1) * inner_w

    def y(value: float) -> float:
        return MARGIN_T + inner_h - min(value, top) / top * inner_h

    def label(value: float) -> str:
        return f"{value:.0%}" if percent else f"{value:.4g}"

    out = [f'<svg viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" aria-label="{title}" class="curve-plot">',
           f'<text x="{MARGIN_L}" y="18" class="title">{title}</text>']
    for i in range(round(top / y_step) + 1):
        v = i * y_step
        out.append(f'<line x1="{MARGIN_L}" x2="{PLOT_W - MARGIN_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                   f'<text x="{MARGIN_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{label(v)}</text>')
    x_step = max(1, math.ceil(_nice_step(x_max - 1, 8)))
    for epoch in range(1, x_max + 1, x_step):
        out.append(f'<text x="{x(epoch):.1f}" y="{PLOT_H - MARGIN_B + 16}" text-anchor="middle">{epoch}</text>')
    out.append(f'<text x="{MARGIN_L + inner_w / 2:.1f}" y="{PLOT_H - 4}" text-anchor="middle">epoch</text>')
    if unfrozen_after is not None and unfrozen_after < epochs:
        ux = x(unfrozen_after + 0.5)
        out.append(f'<line x1="{ux:.1f}" x2="{ux:.1f}" y1="{MARGIN_T}" y2="{MARGIN_T + inner_h}" class="unfrozen"/>'
                   f'<text x="{ux + 4:.1f}" y="{MARGIN_T + 10}" class="note">unfrozen</text>')
    for s in series:
        coords = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in s.points)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<polyline points="{coords}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{x(e):.1f}" cy="{y(v):.1f}" r="3" fill="{s.colour}" class="point">'
                f'<title>{escape(s.label)} · epoch {e}: {label(v) if percent else f"{v:.4f}"}</title></circle>'
                for e, v in s.points]
    if best is not None:
        out.append(f'<text x="{x(best[0]):.1f}" y="{y(best[1]) + 6:.1f}" text-anchor="middle" class="best">★'
                   f'<title>best val acc {best[1]:.1%} (epoch {best[0]})</title></text>')
    if not values:
        out.append(f'<text x="{MARGIN_L + inner_w / 2:.1f}" y="{MARGIN_T + inner_h / 2:.1f}" text-anchor="middle" '
                   f'class="note">{escape(empty_text)}</text>')
    return "".join(out) + "</svg>"


def curves_html(runs: list[tuple[str | None, list[EpochRecord]]], epochs: int, empty_text: str = "",
                unfrozen_after: int | None = None) -> str:
    """Loss and accuracy per epoch, side by side, x from 1 to `epochs`, and a legend. A run
    labelled None is the only one: train and val in two colours, its best val epoch starred.
    Several runs: a colour per run, val solid, train dashed."""
    one = len(runs) == 1 and runs[0][0] is None
    plots = {}
    for metric, title, percent in (("loss", "Loss", False), ("acc", "Accuracy", True)):
        series = []
        for i, (name, history) in enumerate(runs):
            for split in ("train", "val"):
                points = [(r.epoch, getattr(r, f"{split}_{metric}")) for r in history]
                # A diverged run logs inf/nan losses: leave those points out.
                points = [(e, v) for e, v in points if math.isfinite(v)]
                colour = ((TRAIN_COLOR if split == "train" else VAL_COLOR) if one
                          else RUN_COLOURS[i % len(RUN_COLOURS)])
                label = split if one else f"{name} · {split}"
                series.append(Series(label, colour, dashed=split == "train" and not one, points=points))
        history = runs[0][1] if one else []
        best = (history[-1].best_epoch, history[-1].best_val_acc) if history and percent else None
        plots[metric] = _plot_svg(title, series, epochs, percent, empty_text, best, unfrozen_after if one else None)
    if one:
        legend = (f'<span><i style="background:{TRAIN_COLOR}"></i>train</span>'
                  f'<span><i style="background:{VAL_COLOR}"></i>val</span>')
        if runs[0][1]:
            legend += "<span>★ best val accuracy</span>"
    else:
        legend = "".join(f'<span><i style="background:{RUN_COLOURS[i % len(RUN_COLOURS)]}"></i>{escape(name)}</span>'
                         for i, (name, _) in enumerate(runs)) + "<span>solid: val · dashed: train</span>"
    return (f'<div class="curves"><div class="curve-plots">{plots["loss"]}{plots["acc"]}</div>'
            f'<div class="curve-legend">{legend}</div></div>')


def training_curves(job: Job | None) -> str:
    """The live run's curves; the x axis spans the whole run so the plot also shows how far along it is."""
    if job is None:
        return curves_html([(None, [])], 1, "no epochs yet")
    cfg = job.config
    empty_text = "waiting for the first epoch…" if job.active else "no epochs yet"
    unfrozen_after = cfg.frozen_epochs if cfg.mode == "progressive" else None
    return curves_html([(None, job.history)], cfg.epochs, empty_text, unfrozen_after)


def history_of(meta: dict) -> list[EpochRecord]:
    return [EpochRecord(**r) for r in meta.get("history", [])]


def checkpoint_curves(meta: dict) -> str:
    """The same curves for a saved model, from the history its checkpoint keeps, over the epochs
    it ran (a cancelled run's plan does not matter any more)."""
    history = history_of(meta)
    frozen = meta.get("hyperparameters", {}).get("frozen_epochs") if meta["mode"] == "progressive" else None
    return curves_html([(None, history)], len(history), "no epochs recorded", frozen)


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


def explanation_items(explanations: list[Explanation]) -> list[tuple[Image.Image, str]]:
    """Grad-CAM overlays on the crops the model saw, captioned like the predictions gallery."""
    return [(e.overlay(), f"{e.label} · {e.confidence:.0%}") for e in explanations if e.error is None]


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


def import_markdown(report: ImportReport, max_skipped: int = 10, done: str = "Imported") -> str:
    """What an upload (or a built draft: `done` "Created") became: classes and images per split,
    how it was split, what was left out."""
    n_images = sum(n for per_class in report.counts.values() for n in per_class.values())
    text = (f"**✓ {done} `{Path(report.path).name}`**: {len(report.classes)} classes, {n_images} images · "
            f"{report.split} · {1 - report.val_fraction:.0%} train / {report.val_fraction:.0%} val. "
            "It is now selected as the dataset.\n\n| class | train | val |\n|---|---:|---:|")
    text += "".join(f"\n| {c} | {report.counts['train'][c]} | {report.counts['val'][c]} |" for c in report.classes)
    text += "".join(f"\n\nNote: {note}" for note in report.notes)
    return text + skipped_markdown(report.skipped, max_skipped)


BUILDER_HELP = (f"Name a class and **Add class**, pick it, then add its images: files, webcam snapshots or "
                f"pasted pictures (each is checked as it arrives). **Create dataset** splits every class "
                f"{1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%} into train/val (seeded) into a new dataset of your own. "
                f"Up to {MAX_CLASSES} classes and {MAX_IMAGES:,} images; needs 2 classes of 2 images or more.")


def draft_markdown(preview: dict[str, tuple[int, int]]) -> str:
    """The draft's classes, their images and the train/val split that Create dataset will make."""
    if not preview:
        return "No classes yet: name one above and click **Add class**."
    text = "| class | images | train | val |\n|---|---:|---:|---:|"
    for cls, (train, val) in preview.items():
        text += f"\n| {cls} | {train + val} | {train} | {val or '— (needs 2 images)'} |"
    return text


def added_markdown(cls: str, added: int, skipped: list[SkippedFile]) -> str:
    """What became of the files just given to a class."""
    return f"Added **{added}** image(s) to **{cls}**." + skipped_markdown(skipped, 10)


def thumbnail_items(report: ImportReport) -> list[tuple[Image.Image, str]]:
    return [(thumbnail(p), cls) for cls, paths in report.thumbnails.items() for p in paths[:THUMBNAILS_SHOWN]]


# -- saved models ---------------------------------------------------------------------------------

def val_images(meta: dict) -> int:
    """How many val images a checkpoint's accuracy was measured on (0: not recorded)."""
    return sum(meta.get("dataset", {}).get("counts", {}).get("val", {}).values())


def _interval(meta: dict) -> str:
    """ " (95% CI 91.0–97.4%, 153 images)" for a checkpoint's best val accuracy, "" if unknown."""
    n = val_images(meta)
    return f" ({interval_text(meta['best']['val_acc'], n)})" if n and "best" in meta else ""


def model_markdown(meta: dict) -> str:
    """A saved model in a few lines: backbone, mode, classes, best accuracy, data and settings."""
    hyper = meta.get("hyperparameters", {})
    head = f"### {meta['arch']} · {mode_text(meta['mode'], hyper.get('frozen_epochs', '?'))}"
    lines = [f"**Classes:** {', '.join(meta['class_names'])}"]
    if "best" in meta:
        ran = len(meta.get("history", []))
        lines.append(f"**Best val accuracy {meta['best']['val_acc']:.1%}**{_interval(meta)} (epoch {meta['best']['epoch']} "
                     f"of {ran} run) · {meta.get('status', 'completed')}")
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


ONNX_HOWTO = """**`{name}`** is an ONNX model: it runs with onnxruntime alone (no torch, no project), in
Python, C++, C#, Java, JavaScript (onnxruntime-web) or on a phone. Input `crops`: uint8 RGB,
(N, 3, {crop}, {crop}), the shorter side resized to {resize}, then center-cropped. Output
`probabilities` of {classes}, (N, {n}). Class names and recipe are in its metadata:

```python
import json, onnxruntime as ort
s = ort.InferenceSession("{name}")
info = json.loads(s.get_modelmeta()
    .custom_metadata_map["bees_ants.json"])
probs = s.run(None, {{"crops": crops}})[0]
```"""

HOWTO = {".pt": CHECKPOINT_HOWTO, ".pt2": PROGRAM_HOWTO, ".onnx": ONNX_HOWTO}


def takeaway_markdown(path: str, meta: dict) -> str:
    """How to use a downloaded checkpoint (.pt), exported program (.pt2) or ONNX model (.onnx)."""
    prep = meta["preprocessing"]
    return HOWTO[Path(path).suffix].format(name=Path(path).name, classes=", ".join(meta["class_names"]),
                                           n=len(meta["class_names"]), crop=prep["crop_size"],
                                           resize=prep["resize_size"])


def pushed_markdown(url: str, repo_id: str, evaluated: bool) -> str:
    """What a push to the Hub made, and how to use it from anywhere."""
    card = "metrics, confusion matrix and curves" if evaluated else "metrics and curves (its val set is not here)"
    return (f"✓ Pushed to [{repo_id}]({url}): `model.safetensors`, `config.json` and a model card with {card}. "
            f"Use it anywhere:\n\n```bash\npython -m bees_ants predict \\\n    {repo_id} photo.jpg\n```")


# -- runs side by side ---------------------------------------------------------------------------

NOT_RECORDED = "—"  # a checkpoint from before a value was kept
# Hyperparameters with a row of their own (arch, mode) or that say nothing about the run.
NOT_COMPARED = {"arch", "mode"}


def run_name(number: int, meta: dict) -> str:
    """Short enough for a legend: '#2 resnet18/fixed 11-23 20:01'."""
    when = meta.get("created", "")[5:16].replace("T", " ")
    return f"#{number} {meta['arch']}/{meta['mode']} {when}".strip()


def comparison_curves(metas: list[dict]) -> str:
    """Every run's curves on the same axes, named as in the comparison table."""
    runs = [(run_name(i, m), history_of(m)) for i, m in enumerate(metas, 1)]
    return curves_html(runs, max((len(h) for _, h in runs), default=1), "no epochs recorded")


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _hyper_value(key: str, value) -> str:
    if key == "backbone_weights":  # a path: its file name says which weights
        return "random init" if value is None else Path(str(value)).name
    return f"{value:g}" if isinstance(value, float) else str(value)


def comparison_markdown(metas: list[dict]) -> str:
    """One column per run: what it trained (backbone, mode, data and its content hash), how
    (the hyperparameters that differ; those that do not, below the table) and what came out
    (best val accuracy, its epoch, wall time, device). Rows that differ between runs are in bold."""
    if not metas:
        return "Pick two or more of your models to compare them."
    rows = []

    def row(label: str, values: list) -> None:
        values = [_cell(v) for v in values]
        differs = len(metas) > 1 and len(set(values)) > 1
        rows.append(f"| {'**' + label + '**' if differs else label} | " + " | ".join(values) + " |")

    datasets = [m.get("dataset", {}) for m in metas]
    row("backbone", [m["arch"] for m in metas])
    row("mode", [mode_text(m["mode"], m.get("hyperparameters", {}).get("frozen_epochs", "?")) for m in metas])
    row("data", [f"`{Path(d['root']).name}`" if d.get("root") else NOT_RECORDED for d in datasets])
    row("images", [" · ".join(f"{s} {sum(c.values())}" for s, c in d["counts"].items()) if d.get("counts")
                   else NOT_RECORDED for d in datasets])
    row("classes", [", ".join(m["class_names"]) for m in metas])
    row("data hash", [f"`{d['hash'][:12]}`" if d.get("hash") else NOT_RECORDED for d in datasets])
    hypers = [m.get("hyperparameters", {}) for m in metas]
    keys = sorted({k for h in hypers for k in h} - NOT_COMPARED)
    shown = {k: [_hyper_value(k, h[k]) if k in h else NOT_RECORDED for h in hypers] for k in keys}
    same = {k: v[0] for k, v in shown.items() if len(set(v)) == 1}
    for key, values in shown.items():
        if key not in same or len(metas) == 1:
            row(key, values)
    row("best val acc", [f"{m['best']['val_acc']:.1%}" if "best" in m else NOT_RECORDED for m in metas])
    row("95% interval", [_interval_cell(m) for m in metas])
    row("epoch of best", [f"{m['best']['epoch']} of {len(m.get('history', []))}" if "best" in m else NOT_RECORDED
                          for m in metas])
    row("wall time", [duration(sum(r["seconds"] for r in m["history"])) if m.get("history") else NOT_RECORDED
                      for m in metas])
    row("device", [m.get("device") or NOT_RECORDED for m in metas])
    row("status", [m.get("status", "completed") for m in metas])
    header = "| | " + " | ".join(f"**{run_name(i, m)}**" for i, m in enumerate(metas, 1)) + " |"
    text = "\n".join([header, "|---" * (len(metas) + 1) + "|", *rows])
    if len(metas) == 1:
        return text + "\n\nPick another model to compare with."
    if same:
        text += "\n\nThe same in all: " + " · ".join(f"{k} {_cell(v)}" for k, v in same.items())
    return (text + "\n\nIn **bold**: what differs. Wall time is the sum of the epochs' times."
            + _indistinct(metas))


def _interval_cell(meta: dict) -> str:
    if "best" not in meta or not val_images(meta):
        return NOT_RECORDED
    lo, hi = wilson_interval(meta["best"]["val_acc"], val_images(meta))
    return f"{lo:.1%}–{hi:.1%} ({val_images(meta)} images)"


def _indistinct(metas: list[dict]) -> str:
    """Which runs' best val accuracy lies inside the 95% interval of the best run's: a difference
    that small is within what chance gives on a val set of that size, so it ranks nothing."""
    scored = [(i, m) for i, m in enumerate(metas, 1) if "best" in m and val_images(m)]
    if len(scored) < 2:
        return ""
    top_i, top = max(scored, key=lambda im: im[1]["best"]["val_acc"])
    close = [run_name(i, m) for i, m in scored
             if i != top_i and within_interval(top["best"]["val_acc"], val_images(top), m["best"]["val_acc"])]
    if not close:
        return ""
    return (f"\n\n**Inside the interval:** the best val accuracy of {', '.join(close)} lies within the 95% interval "
            f"of {run_name(top_i, top)}'s ({interval_text(top['best']['val_acc'], val_images(top))}): "
            "the val set is too small to tell these runs apart.")


# -- evaluation -----------------------------------------------------------------------------------

def _correct(ev: Evaluation) -> int:
    return sum(ev.confusion[i][i] for i in range(len(ev.classes)))


def evaluation_markdown(ev: Evaluation, meta: dict) -> str:
    n, correct = len(ev.true), _correct(ev)
    lo, hi = wilson_interval(ev.accuracy, n)
    text = (f"### {ev.split} accuracy {ev.accuracy:.1%} ({correct} of {n} images) · loss {ev.loss:.3f}\n"
            f"95% confidence interval {lo:.1%}–{hi:.1%} (Wilson, from the {n} images: the accuracy on new images "
            "like these plausibly lies there).")
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


def shown_mistakes(ev: Evaluation) -> list[int]:
    """The misclassified images the app shows: the worst MISTAKES_SHOWN, worst first."""
    return ev.mistakes()[:MISTAKES_SHOWN]


def mistake_items(ev: Evaluation, explanations: list[Explanation] | None = None) -> list[tuple[Image.Image, str]]:
    """The shown mistakes captioned 'true: ants · predicted: bees (97%)': thumbnails, or with
    `explanations` (one per shown mistake, for its predicted class) their Grad-CAM overlays."""
    shown = shown_mistakes(ev)
    if explanations is None:
        images = [(thumbnail(ev.paths[i]), i) for i in shown]
    else:  # an image deleted since the evaluation has no overlay
        images = [(e.overlay(), i) for e, i in zip(explanations, shown, strict=True) if e.error is None]
    return [(image, f"true: {ev.classes[ev.true[i]]} · predicted: {ev.classes[ev.predicted[i]]} "
             f"({ev.confidence[i]:.0%})") for image, i in images]
