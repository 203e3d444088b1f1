"""A checkpoint is one file: the state dict plus everything needed to use it.

Written atomically (temporary file in the same folder, fsync, rename) so a crash mid-save never
leaves a half-written model where a good one was; read with `torch.load(weights_only=True)`, so
opening a checkpoint cannot run code. Metadata holds only plain types for the same reason; what a
training run records there (`run_meta`) is decided here, beside the code that reads it back.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .errors import UserError

FORMAT = "bees_ants/1"
REQUIRED_META = ("arch", "class_names", "mode", "preprocessing")
SIDE_SUFFIX = ".json"  # <checkpoint>.pt.json: its metadata alone, so listings need not load weights
# Temporary files of an interrupted save: ".<name>.<random>.tmp" (checkpoints and their side
# files) and ".<stem>.tmp.pt2", ".<stem>.tmp.onnx" (exports).
TEMP_FILE = re.compile(r"^\..+\.tmp(\.pt2|\.onnx)?$")
# TrainConfig fields that say where and on what a run ran, not how it learned: left out of a
# checkpoint's "hyperparameters", so two runs of one recipe compare equal.
NOT_HYPERPARAMETERS = ("data_dir", "out_dir", "checkpoint_path", "device", "resume_from", "memory_budget_mb")


class CheckpointError(UserError):
    """A file that is not a usable bees_ants checkpoint; the message says why."""


@dataclass
class Checkpoint:
    state_dict: dict
    meta: dict
    path: str | None = None

    def build_model(self) -> nn.Module:
        from .models import uninitialised_model  # models imports torchvision; keep this module import-light
        model = uninitialised_model(self.meta["arch"], len(self.meta["class_names"]))
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {self.path or ''} does not match its architecture "
                                  f"{self.meta['arch']}: {str(e).splitlines()[0]}") from None
        return model.eval()


def new_checkpoint_path(config) -> str:
    """A fresh file name in `config.out_dir`: <arch>-<mode>-<date>-<time>.pt."""
    stem = Path(config.out_dir) / f"{config.arch}-{config.mode}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path, n = stem.with_suffix(".pt"), 1
    while path.exists():  # two runs started within the same second
        n += 1
        path = Path(f"{stem}-{n}.pt")
    return str(path)


def run_meta(config, dataset, preprocessing, history: list, best: dict, status: str, stop_reason: str,
             device: str) -> dict:
    """The metadata a training run writes with its best weights: what the model is (arch, classes,
    preprocessing), how it was trained, its history and best epoch (`best`: val_acc, val_loss,
    epoch), how the run ended, and on what data, device and versions."""
    import torchvision  # loaded anyway by whoever trains; not needed to read a checkpoint

    from .datahash import dataset_hash  # datahash imports data; keep this module import-light
    return {
        "arch": config.arch,
        "class_names": list(dataset.classes),
        "mode": config.mode,
        "preprocessing": asdict(preprocessing),
        "hyperparameters": {k: v for k, v in asdict(config).items() if k not in NOT_HYPERPARAMETERS},
        "history": [asdict(r) for r in history],
        "best": best,
        "status": status,
        "stop_reason": stop_reason,
        "dataset": {"root": str(dataset.root), "counts": dataset.counts(), "skipped": len(dataset.skipped),
                    "hash": dataset_hash(dataset.root, dataset.classes)},
        "device": device,
        "versions": {"bees_ants": __version__, "torch": str(torch.__version__),
                     "torchvision": str(torchvision.__version__)},
        "created": dt.datetime.now().isoformat(timespec="seconds"),
    }


def write_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def side_file(path: str | os.PathLike) -> Path:
    return Path(f"{path}{SIDE_SUFFIX}")


def save_checkpoint(path: str | os.PathLike, state_dict: dict, meta: dict) -> Path:
    """Write the checkpoint, then its side file (so a listed model is always whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, "meta": meta}
    write_atomically(path, lambda f: torch.save(payload, f))
    try:
        _write_side_file(path, meta)
    except (TypeError, ValueError):  # metadata JSON cannot hold: listings read the checkpoint instead
        side_file(path).unlink(missing_ok=True)
    return path


def _write_side_file(path: Path, meta: dict) -> None:
    """`meta` next to the checkpoint, with the checkpoint's size and mtime: a side file that does
    not match them (the .pt rewritten since, by an older version) is ignored."""
    st = path.stat()
    data = json.dumps({"format": FORMAT, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "meta": meta})
    write_atomically(side_file(path), lambda f: f.write(data.encode()))


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


@dataclass(frozen=True)
class Listed:
    """A checkpoint as a listing knows it: path, metadata and modification time, no weights."""
    path: str
    meta: dict
    mtime: float


_listed: dict[tuple[str, int, int], dict | None] = {}  # (path, mtime_ns, size) -> meta, None: unreadable
_listed_lock = threading.Lock()


def checkpoint_meta(path: Path, st: os.stat_result) -> dict | None:
    """The checkpoint's metadata from its side file; from the checkpoint itself (once, then
    remembered) when it has none that matches. None for a file that is not a usable checkpoint."""
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _listed_lock:
        if key in _listed:
            return _listed[key]
    meta = None
    try:
        side = json.loads(side_file(path).read_text())
        if (side.get("format") == FORMAT and side.get("size") == st.st_size
                and side.get("mtime_ns") == st.st_mtime_ns and all(k in side["meta"] for k in REQUIRED_META)):
            meta = side["meta"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    if meta is None:  # an older checkpoint, or a side file of an earlier version of it
        try:
            meta = load_checkpoint(path).meta
        except CheckpointError:
            meta = None
    with _listed_lock:
        if len(_listed) > 10_000:  # files come and go; never grow without bound
            _listed.clear()
        _listed[key] = meta
    return meta


def list_checkpoint_meta(folder: str | os.PathLike) -> list[Listed]:
    """Readable checkpoints in `folder`, newest first, without loading their weights."""
    found = []
    for p in Path(folder).glob("*.pt"):
        try:
            st = p.stat()
        except OSError:  # removed while listing
            continue
        meta = checkpoint_meta(p, st)
        if meta is not None:
            found.append(Listed(str(p), meta, st.st_mtime))
    return sorted(found, key=lambda c: c.mtime, reverse=True)


def remove_stale_temp_files(folder: str | os.PathLike, older_than: float = 600.0,
                            now: float | None = None) -> list[Path]:
    """Remove what an interrupted save left behind under `folder` (recursively): hidden
    ".<name>.tmp" files last written more than `older_than` seconds ago. Only that pattern, which
    no saved model or user file has; and only old ones, so a save running in this or another
    process (the CLI writing into the same folder) is never cut short. Returns what was removed."""
    removed = []
    cutoff = (time.time() if now is None else now) - older_than
    for p in Path(folder).rglob(".*.tmp"):
        try:
            if TEMP_FILE.match(p.name) and p.is_file() and not p.is_symlink() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed.append(p)
        except OSError:  # gone already, or not ours to remove
            continue
    return removed
