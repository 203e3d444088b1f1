"""A dataset built a class at a time, without a zip: name classes, add images to each (files, webcam
frames, pasted pictures), rename or remove classes, then `finish` it into a prepared dataset with
the importer's stratified, seeded train/val split.

A draft is a folder of class folders, <visitor's data folder>/.draft/classes/<class>/<image>;
catalog.draft decides whose it is. Everything that arrives is untrusted: a class name is checked
before it names a folder, an uploaded file's name never names anything (an image is stored under
its content hash), and each file is checked as the importer checks an archive member (type, size,
decode, pixel cap). A file that fails gets its reason; the others are kept.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from .data import IMAGE_EXTENSIONS, SPLITS, DatasetError, SkippedFile
from .importer import (CHUNK, JUNK_NAMES, MAX_FILE_BYTES, VAL_FRACTION, ImportReport, _mb, decode_problem,
                       prepare_folder, val_count)

# Caps for a shared server: a draft is a quick start, a big set comes as a zip.
MAX_CLASSES = 20
MAX_IMAGES = 2_000            # one draft, all classes together
MAX_BYTES = 500 * 1024**2     # one draft, all images together
# Letters (any script), digits, spaces, '.', '_' and '-'; not starting with a dot, so never '..'.
CLASS_NAME = re.compile(r"\w[\w .-]{0,39}")
CLASS_RULE = "a class name has 1-40 letters, digits, spaces, '.', '_' or '-', and starts with a letter or digit"
# Names the importer reads as layout (train/, val/, test/) or as OS leftovers, never as a class.
RESERVED = {*SPLITS, "test", *JUNK_NAMES}

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


class Draft:
    """One visitor's draft. Changes hold the draft's lock, so two pages of one visitor cannot
    pass a cap together or add to a class being removed."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.root = self.folder / "classes"     # what `finish` prepares: class folders only
        self.incoming = self.folder / "incoming"  # files being checked, and classes being removed
        with _locks_guard:
            self.lock = _locks.setdefault(self.folder.resolve(), threading.Lock())

    # -- reading -------------------------------------------------------------------------------

    def classes(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir() if p.is_dir()), key=str.casefold)

    def images(self, cls: str) -> list[Path]:
        """The class's images, newest first."""
        folder = self.root / self.known(cls)
        return sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)

    def counts(self) -> dict[str, int]:
        return {cls: sum(1 for _ in (self.root / cls).iterdir()) for cls in self.classes()}

    def split_preview(self, val_fraction: float = VAL_FRACTION) -> dict[str, tuple[int, int]]:
        """class -> (train, val) image counts that `finish` will make; (n, 0) for a class too
        small to split."""
        return {cls: (n - val_count(n, val_fraction), val_count(n, val_fraction)) if n >= 2 else (n, 0)
                for cls, n in self.counts().items()}

    def known(self, cls) -> str:
        """`cls` if it is one of the draft's classes; the only way a request's class reaches a path."""
        if not isinstance(cls, str) or cls not in self.classes():
            raise DatasetError("choose a class from the list (or add one first)")
        return cls

    # -- changing ------------------------------------------------------------------------------

    def add_class(self, name) -> str:
        with self.lock:
            name = self._new_name(name)
            if len(self.classes()) >= MAX_CLASSES:
                raise DatasetError(f"a draft holds at most {MAX_CLASSES} classes")
            (self.root / name).mkdir(parents=True)
        return name

    def rename_class(self, cls, new) -> str:
        with self.lock:
            cls = self.known(cls)
            new = self._new_name(new, renaming=cls)
            (self.root / cls).rename(self.root / new)
        return new

    def remove_class(self, cls) -> None:
        with self.lock:
            cls = self.known(cls)
            self.incoming.mkdir(parents=True, exist_ok=True)
            # Out of the class list at once; deleting its files may take a while.
            gone = self.incoming / f"removed-{uuid.uuid4().hex}"
            (self.root / cls).rename(gone)
        shutil.rmtree(gone, ignore_errors=True)

    def add_images(self, cls, files: list[str | os.PathLike]) -> tuple[int, list[SkippedFile]]:
        """Check each file and store the good ones in class `cls`: (images added, files skipped
        with their reasons). Skipped: not an image, unreadable, too big, already in the class, or
        past the draft's caps."""
        self.known(cls)
        self.incoming.mkdir(parents=True, exist_ok=True)
        room = MAX_IMAGES - sum(self.counts().values())  # checked again when they are placed
        checked, skipped = [], []
        try:
            for file in files:
                name = Path(file).name  # for the report only
                copy, reason = (None, f"the draft already holds the limit of {MAX_IMAGES} images"
                                ) if len(checked) >= room else self._checked_copy(Path(file))
                if reason:
                    skipped.append(SkippedFile(name, reason))
                else:
                    checked.append((name, copy))
            with self.lock:
                reasons = self._place(checked, cls)
        finally:
            for _, copy in checked:
                copy.unlink(missing_ok=True)
        skipped += [SkippedFile(name, reason) for (name, _), reason in zip(checked, reasons) if reason]
        return reasons.count(None), skipped

    def finish(self, data_root: str | os.PathLike, name: str, val_fraction: float = VAL_FRACTION,
               seed: int = 0) -> ImportReport:
        """The draft as a new prepared dataset in `data_root` (the importer's split, checks and
        naming). The draft stays as it is, to add more images and make another."""
        with self.lock:
            if len(self.classes()) < 2:
                raise DatasetError("add at least 2 classes, each with at least 2 images")
            return prepare_folder(self.root, data_root, name or "my-dataset", val_fraction, seed)

    # -- checks --------------------------------------------------------------------------------

    def _new_name(self, name, renaming: str | None = None) -> str:
        name = " ".join(name.split()) if isinstance(name, str) else ""
        if not CLASS_NAME.fullmatch(name):
            raise DatasetError(CLASS_RULE)
        if name.casefold() in RESERVED:
            raise DatasetError(f"'{name}' cannot name a class (it names a dataset folder); choose another")
        # Case-insensitively: 'Cat' and 'cat' are one folder on macOS and Windows.
        if any(c.casefold() == name.casefold() for c in self.classes() if c != renaming):
            raise DatasetError(f"there is already a class '{name}'")
        return name

    def _checked_copy(self, source: Path) -> tuple[Path | None, str | None]:
        """A copy of `source` in the incoming folder that passed the importer's file checks, or
        (None, reason). The copy is what gets checked and kept: the source may change meanwhile."""
        suffix = source.suffix.lower()
        if suffix not in IMAGE_EXTENSIONS:
            return None, f"unsupported file type '{suffix or source.name}'"
        fd, tmp = tempfile.mkstemp(prefix="check-", suffix=suffix, dir=self.incoming)
        copy, written = Path(tmp), 0
        try:
            with os.fdopen(fd, "wb") as dst, open(source, "rb") as src:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > MAX_FILE_BYTES:
                        break
                    dst.write(chunk)
        except OSError as e:
            copy.unlink(missing_ok=True)
            return None, f"cannot read file: {e.strerror or e}"
        reason = (f"more than the limit of {_mb(MAX_FILE_BYTES)} per image" if written > MAX_FILE_BYTES
                  else decode_problem(copy))
        if reason:
            copy.unlink()
            return None, reason
        return copy, None

    def _place(self, checked: list[tuple[str, Path]], cls: str) -> list[str | None]:
        """Move checked copies into their class, each under its content hash: per copy, None or
        why it was not kept. Holds the lock."""
        if cls not in self.classes():
            return ["its class was removed meanwhile"] * len(checked)
        images = [p for c in self.classes() for p in (self.root / c).iterdir()]
        count, size = len(images), sum(p.stat().st_size for p in images)
        reasons = []
        for _, copy in checked:
            digest = hashlib.sha256(copy.read_bytes()).hexdigest()[:20]
            target = self.root / cls / f"{digest}{copy.suffix}"
            if count >= MAX_IMAGES:
                reasons.append(f"the draft already holds the limit of {MAX_IMAGES} images")
            elif size + copy.stat().st_size > MAX_BYTES:
                reasons.append(f"the draft's images would pass the limit of {_mb(MAX_BYTES)}")
            elif target.exists():
                reasons.append("already in this class")
            else:
                count, size = count + 1, size + copy.stat().st_size
                os.replace(copy, target)
                reasons.append(None)
        return reasons
