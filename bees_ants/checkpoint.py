"""A checkpoint is one file: the state dict plus everything needed to use it.

Written atomically (temporary file in the same folder, fsync, rename) so a crash mid-save never
leaves a half-written model where a good one was; read with `torch.load(weights_only=True)`, so
opening a checkpoint cannot run code. Metadata holds only plain types for the same reason.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UserError

FORMAT = "bees_ants/1"
REQUIRED_META = ("arch", "class_names", "mode", "preprocessing")


class CheckpointError(UserError):
    """A file that is not a usable bees_ants checkpoint; the message says why."""


@dataclass
class Checkpoint:
    state_dict: dict
    meta: dict
    path: str | None = None

    def build_model(self) -> nn.Module:
        from .models import build_model  # models imports data; keep this module import-light
        model = build_model(self.meta["arch"], len(self.meta["class_names"]))
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {self.path or ''} does not match its architecture "
                                  f"{self.meta['arch']}: {str(e).splitlines()[0]}") from None
        return model.eval()


def save_checkpoint(path: str | os.PathLike, state_dict: dict, meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "meta": meta}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"'{path}' is not a readable checkpoint (corrupt or not a torch file): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a bees_ants checkpoint (a plain state dict? "
                              "use it as --backbone-weights instead)")
    meta = payload.get("meta") or {}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint '{path}' is incomplete (missing {missing or ['state_dict']})")
    return Checkpoint(payload["state_dict"], meta, str(path))


def list_checkpoints(folder: str | os.PathLike) -> list[Checkpoint]:
    """Readable checkpoints in `folder`, newest first. Unreadable files are left out."""
    found = []
    for p in Path(folder).glob("*.pt"):
        try:
            found.append(load_checkpoint(p))
        except CheckpointError:
            continue
    return sorted(found, key=lambda c: os.path.getmtime(c.path), reverse=True)
