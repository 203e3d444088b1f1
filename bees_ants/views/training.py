"""The Train tab's job view: the status headline, the dataset scan, the epoch table, the live
curves and the result of a run, built from a Job."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import mode_text
from ..jobs import Job
from .common import duration, skipped_markdown
from .plots import curves_html

# An estimate below this is said in words ("any moment now"): a countdown at 0:00 for something
# that has not happened yet would be wrong.
ANY_MOMENT_SECONDS = 10
HISTORY_COLUMNS = ["epoch", "train loss", "train acc", "val loss", "val acc", "lr", "seconds"]


def _best(job: Job) -> str:
    last = job.history[-1]
    return f"best val acc **{last.best_val_acc:.1%}** (epoch {last.best_epoch})"


def _time_left(job: Job) -> str:
    if job.remaining is None:
        return ""
    return "ETA any moment now · " if job.remaining < ANY_MOMENT_SECONDS else f"ETA {duration(job.remaining)} · "


def progress_text(job: Job) -> str:
    """Inside a long step (decoding images, caching features): how far along it is."""
    if job.progress is None:
        return ""
    stage, done, total = job.progress
    if stage == "training":  # done: batches finished, so the one running is the next
        return f" · training: batch {min(done + 1, total)} of {total}"
    if stage == "validating":
        return f" · validating on {total} images"
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
        soon = job.starts_in is None or job.starts_in < ANY_MOMENT_SECONDS
        head = (f"Queued: position {job.queue_position or '?'} · "
                + (f"{ahead} job(s) ahead of yours · " if ahead else "next to start · ")
                + ("starts any moment now" if soon else f"starts in about {duration(job.starts_in)} (estimated)"))
    elif job.status == "preparing":
        head = f"Preparing **{name}** (downloading it on first use)…"
    elif job.status == "scanning":
        head = f"Scanning **{name}**…{progress_text(job)}"
    elif job.status == "running" and job.cancel_requested:
        head = f"Cancelling: stops after the current batch… (epoch {done} of {cfg.epochs} done)"
    elif job.status == "running" and not done:
        head = f"Training: epoch 1 of {cfg.epochs} running · elapsed {elapsed}{progress_text(job)}"
    elif job.status == "running" and done == cfg.epochs:
        head = f"Finishing: all {done} epochs done · elapsed {elapsed} · saving the model… · {_best(job)}"
    elif job.status == "running":
        head = (f"Training: epoch {done} of {cfg.epochs} done · elapsed {elapsed} · "
                + _time_left(job)
                + f"{_best(job)}{progress_text(job)}")
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
    if job.status == "queued":
        waits = f"The run ahead of yours: {job.ahead}. " if job.ahead else ""
        setup = f"{waits}Yours starts by itself.\n\n{setup}"
    if job.status == "failed":
        advice = job.advice or "Change the dataset or the starting weights and click **Train** again."
        setup = f"**{job.error}**\n\n{advice}\n\n{setup}"
    elif job.error:  # interrupted by a restart, or stopped at the GPU time limit
        setup = f"{job.error[0].upper()}{job.error[1:]}.\n\n{setup}"
    return f"## {head}\n{setup}"  # h2: the page title is the h1 (headings in order)


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


def history_table(job: Job | None) -> pd.DataFrame:
    """Epoch records, newest first, so the latest row is in view while training runs."""
    rows = [[r.epoch, f"{r.train_loss:.4f}", f"{r.train_acc:.1%}", f"{r.val_loss:.4f}",
             f"{r.val_acc:.1%}" + (" ★" if r.epoch == r.best_epoch else ""), f"{r.lr:.2g}", f"{r.seconds:.1f}"]
            for r in reversed(job.history if job else [])]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def training_curves(job: Job | None) -> str:
    """The live run's curves; the x axis spans the whole run so the plot also shows how far along it is."""
    if job is None:
        return curves_html([(None, [])], 1, "no epochs yet")
    cfg = job.config
    empty_text = "waiting for the first epoch…" if job.active else "no epochs yet"
    unfrozen_after = cfg.frozen_epochs if cfg.mode == "progressive" else None
    return curves_html([(None, job.history)], cfg.epochs, empty_text, unfrozen_after)


def result_markdown(job: Job | None) -> str:
    """After a run: best accuracy and where the checkpoint went."""
    if job is None or job.active or job.status == "failed":
        return ""
    if job.checkpoint_path is None:
        return "No checkpoint was written: the run stopped before its first epoch finished."
    best = job.history[-1]
    text = (f"**Best val accuracy {best.best_val_acc:.1%}** (epoch {best.best_epoch} of {len(job.history)} run). "
            f"Checkpoint: `{Path(job.checkpoint_path).name}` — pick it in the **Predict** or **Evaluate & export** tab.")
    if Path(job.config.data_dir, "val").is_dir():  # the grid below needs the val images
        text += "\n\n**Val predictions of the best model** (predicted vs true, mistakes in red):"
    return text
