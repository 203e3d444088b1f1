"""Continuing an interrupted run: the `<checkpoint>.resume` file beside a run's best checkpoint.

The best checkpoint holds the best epoch's weights, which is what a user predicts with; a run
that stopped (cancelled, the server restarted, a crash) needs more to go on as if it never had:
the last epoch's weights, the optimizer's and scheduler's state, the history, early stopping's
count and the random state. `TrainingRun` writes that here after every epoch but the last
(atomically, like a checkpoint), reads it back when its config says `resume_from`, and removes it
once the run completes. What it holds is plain tensors and numbers, read with
`torch.load(weights_only=True)`.

The best so far is not in it: the checkpoint beside it holds that (weights and scores), written
before this file whenever an epoch beats it, so a resumed run takes its best from there. Keeping
one copy of those weights, not two, makes the file written after every epoch a third smaller
(resnet18 fine-tuned: 90 MB instead of 135 MB). Files of the first format, which held a copy,
still resume.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, write_atomically
from .config import TrainConfig
from .errors import UserError

RESUME_FORMAT = "bees_ants-resume/2"
READABLE_FORMATS = (RESUME_FORMAT, "bees_ants-resume/1")  # /1 held the best weights as well


class ResumeError(UserError):
    """A run that cannot be resumed; the message says why."""


def resume_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where a run keeps what it needs to continue (last epoch's weights, optimizer and scheduler
    state, best so far), beside its best-weights checkpoint until the run completes."""
    return Path(f"{checkpoint_path}.resume")


def save_resume_state(checkpoint_path: str, config: TrainConfig, epoch: int, model: nn.Module,
                      optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                      history: list) -> None:
    """What a run needs to continue after `epoch`. `history` is its EpochRecords (early stopping
    counts from them)."""
    cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}
    state = {"format": RESUME_FORMAT, "config": asdict(config), "epoch": epoch,
             "model": cpu(model.state_dict()), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "history": [asdict(r) for r in history],
             "rng": torch.get_rng_state()}
    write_atomically(resume_path(checkpoint_path), lambda f: torch.save(state, f))


def load_resume_state(checkpoint_path: str | os.PathLike) -> dict:
    path = resume_path(checkpoint_path)
    if not path.is_file():
        raise ResumeError(f"nothing to resume for '{checkpoint_path}': its run completed, or it was not "
                          "trained by this version (no resume state beside it)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ResumeError(f"the resume state '{path}' is unreadable: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise ResumeError(f"'{path}' is not a bees_ants resume state")
    return state


def restore_training_state(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Put the last epoch's weights, optimizer, scheduler and random state back; the run restores
    its own bookkeeping (history, best) from the rest of `state`."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ResumeError(f"the resume state does not fit this model: {str(e).splitlines()[0]}") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])


def best_so_far(state: dict, checkpoint_path: str | os.PathLike) -> dict:
    """The interrupted run's best epoch: val_acc, val_loss, epoch and state_dict (on the CPU), from
    its checkpoint. That is written before the resume state whenever an epoch beats the best, so it
    is never older; should it be newer (a crash between the two writes), its best is the one the
    resumed run would reach again, and the scores and the weights still come from one file."""
    if "best" in state:  # format /1: its own copy
        return {**state["best"], "state_dict": dict(state["best"]["state_dict"])}
    try:
        ckpt = load_checkpoint(checkpoint_path)
    except CheckpointError as e:
        raise ResumeError(f"cannot resume without the run's checkpoint, which holds its best weights: {e}") from None
    best = ckpt.meta["best"]
    return {"val_acc": best["val_acc"], "val_loss": best["val_loss"], "epoch": best["epoch"],
            "state_dict": {k: v.clone() for k, v in ckpt.state_dict.items()}}  # clones: not the file's mapped pages


def resume_config(checkpoint_path: str | os.PathLike) -> TrainConfig:
    """The settings of the interrupted run that wrote `checkpoint_path`, set to continue it."""
    cfg = load_resume_state(checkpoint_path)["config"]
    return TrainConfig(**{**cfg, "resume_from": str(checkpoint_path), "checkpoint_path": str(checkpoint_path)})
