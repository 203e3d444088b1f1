"""A dataset's content hash: which data a run trained on, so two runs can be told apart (or
recognised as the same) by their checkpoints alone, whatever the folder is called now."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from .data import IMAGE_EXTENSIONS, SPLITS

_hashes: dict[str, str] = {}  # listing digest (paths, sizes, mtimes) -> content hash
_lock = threading.Lock()


def dataset_hash(root: str | os.PathLike, classes: list[str]) -> str:
    """sha256 over the class names and, for every image file under root/{train,val}/<class>/ in
    sorted order, its path relative to `root` and its bytes (hex, 64 characters).

    A run saves its checkpoint several times: the files are read once, and the hash remembered for
    as long as no file's size or modification time changes (a stat per file, no reading)."""
    root = Path(root)
    files = sorted((p.relative_to(root).as_posix(), p) for split in SPLITS for cls in classes
                   for p in (root / split / cls).rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())
    listing = hashlib.sha256(repr([str(root), classes]).encode())
    for rel, p in files:
        st = p.stat()
        listing.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    with _lock:
        known = _hashes.get(listing.hexdigest())
    if known:
        return known
    content = hashlib.sha256(("\n".join(classes) + "\0").encode())
    for rel, p in files:
        content.update(f"{rel}\0{p.stat().st_size}\0".encode())  # length-prefixed: no two listings collide
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                content.update(chunk)
    with _lock:
        if len(_hashes) > 1000:  # one entry per dataset version seen; never grow without bound
            _hashes.clear()
        _hashes[listing.hexdigest()] = content.hexdigest()
    return content.hexdigest()
