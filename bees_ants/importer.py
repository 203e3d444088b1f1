"""Your own dataset, from an uploaded zip or a local folder, checked and ready to train.

Two layouts are accepted, either one optionally wrapped in a single top folder:

  train/<class>/…  and  val/<class>/…    kept as they are (a test/ folder is ignored)
  <class>/…                              split into train/val per class, seeded

The class names come from the folder names. The result is a new folder `data_root/<name>` in the
layout `load_dataset` reads, so it is offered for training like any other prepared dataset.

An upload is untrusted. Every archive member is checked before anything is written (no absolute
paths, no '..', no links or device files, caps on image count and size), bytes are counted as they
are decompressed (a zip's declared sizes can lie), and all work happens in a hidden folder inside
the data root that is renamed into place only once the dataset has validated. So an upload never
writes outside the data root, and a failed import leaves nothing behind.
"""
from __future__ import annotations

import errno
import itertools
import os
import random
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .data import IMAGE_EXTENSIONS, SPLITS, DatasetError, SkippedFile, load_dataset
from .images import DECODE_THREADS, UnreadableImage, load_image
from .models import Preprocessing

# Caps for a shared server (a Space); every entry point takes them as arguments too.
MAX_FILES = 20_000             # images in one archive
MAX_BYTES = 2 * 1024**3        # uncompressed, all images together
MAX_FILE_BYTES = 50 * 1024**2  # uncompressed, one image
VAL_FRACTION = 0.2
THUMBNAILS = 4                 # image paths per class in the report, for the UI to show
CHUNK = 1024 * 1024
# OS leftovers that are never part of a dataset (hidden names are caught by their leading dot).
JUNK_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
# data_root/hymenoptera_data is where the tutorial's set is downloaded; an upload must not pose as it.
RESERVED_NAMES = {"hymenoptera_data"}
LAYOUTS = ("expected either train/<class>/… and val/<class>/… folders, or one folder per class "
           "(<class>/<images>, at least 2 classes), which is then split into train/val")
# Checking images only has to find those that do not decode. Decoding to a 32-pixel side fails on
# the same files as a full decode but keeps memory tiny (JPEGs even decode at a reduced scale).
CHECK_PREPROCESSING = Preprocessing(resize_size=32, crop_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass
class ImportReport:
    path: str                          # the new dataset folder: path/train/<class>/…, path/val/<class>/…
    classes: list[str]
    counts: dict[str, dict[str, int]]  # readable images per split per class
    split: str                         # how train/val came about
    val_fraction: float                # val's share of all readable images
    skipped: list[SkippedFile] = field(default_factory=list)        # files left out, and why
    notes: list[str] = field(default_factory=list)                  # folders ignored, and why
    thumbnails: dict[str, list[str]] = field(default_factory=dict)  # class -> a few train image paths

    def summary(self, max_skipped: int = 20) -> str:
        lines = [f"dataset {self.path}: {len(self.classes)} classes; {self.split}; "
                 f"{1 - self.val_fraction:.0%} train / {self.val_fraction:.0%} val"]
        for split, per_class in self.counts.items():
            parts = ", ".join(f"{c} {n}" for c, n in per_class.items())
            lines.append(f"  {split}: {sum(per_class.values())} images ({parts})")
        lines += [f"  note: {n}" for n in self.notes]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s):")
            lines += [f"    {s.path}: {s.reason}" for s in self.skipped[:max_skipped]]
            if len(self.skipped) > max_skipped:
                lines.append(f"    … and {len(self.skipped) - max_skipped} more")
        return "\n".join(lines)


# -- entry points --------------------------------------------------------------------------------

def import_zip(zip_path: str | os.PathLike, data_root: str | os.PathLike, name: str | None = None,
               val_fraction: float = VAL_FRACTION, seed: int = 0, max_files: int = MAX_FILES,
               max_bytes: int = MAX_BYTES, max_file_bytes: int = MAX_FILE_BYTES) -> ImportReport:
    """Extract an uploaded zip into a new dataset folder in `data_root` (named after the zip unless
    `name` is given). Raises DatasetError, leaving nothing behind, when it cannot be used."""
    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"'{zip_path.name}' is not a readable zip archive ({e})") from None
    with archive:
        # Planning refuses over-cap archives before a single byte is written.
        members, skipped = plan_members(archive.infolist(), max_files, max_bytes, max_file_bytes)
        with work_folder(data_root) as work:
            skipped += extract_members(archive, members, work / "files", max_bytes, max_file_bytes)
            # Extracted files live in our own work folder: moving them is safe and cheap.
            return assemble(work / "files", work, Path(data_root), name or zip_path.stem, os.replace,
                            skipped, val_fraction, seed)


def prepare_folder(folder: str | os.PathLike, data_root: str | os.PathLike, name: str | None = None,
                   val_fraction: float = VAL_FRACTION, seed: int = 0) -> ImportReport:
    """A local folder in either layout, as a new dataset folder in `data_root`. The folder itself is
    left untouched: its images are hard-linked into the new folder, or copied where links fail."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"'{folder}' is not a folder")
    with work_folder(data_root) as work:
        return assemble(folder, work, Path(data_root), name or folder.resolve().name, link_or_copy,
                        [], val_fraction, seed)


def needs_preparing(path: str | os.PathLike) -> bool:
    """True for a file (an archive) or a folder without train/ and val/: what `prepare_dataset` takes."""
    p = Path(path)
    return p.is_file() or (p.is_dir() and not all((p / s).is_dir() for s in SPLITS))


def prepare_dataset(path: str | os.PathLike, data_root: str | os.PathLike, **options) -> ImportReport:
    """A zip or a folder, whichever `path` is (the CLI's --data-dir)."""
    importer = prepare_folder if Path(path).is_dir() else import_zip
    return importer(path, data_root, **options)


# -- archive members -----------------------------------------------------------------------------

def plan_members(infos: list[zipfile.ZipInfo], max_files: int, max_bytes: int, max_file_bytes: int
                 ) -> tuple[list[tuple[zipfile.ZipInfo, tuple[str, ...]]], list[SkippedFile]]:
    """Which members to extract (with their checked path parts), and why each other one is not.
    Raises DatasetError when the images to extract exceed the count or declared-size caps."""
    keep, skipped, seen = [], [], set()
    for info in infos:
        # Windows tools may write backslashes; treat them as the separators they are meant to be.
        name = info.filename.replace("\\", "/")
        if name.endswith("/"):
            continue  # folders are created as their files need them
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        reason = member_problem(info, name, parts, max_file_bytes)
        # Case-insensitively: 'A.png' and 'a.png' are one file on macOS and Windows.
        key = "/".join(parts).casefold()
        if reason is None and key in seen:
            reason = "duplicate entry"
        if reason:
            skipped.append(SkippedFile(info.filename, reason))
            continue
        seen.add(key)
        keep.append((info, parts))
    if len(keep) > max_files:
        raise DatasetError(f"the archive has {len(keep)} images, more than the limit of {max_files}")
    declared = sum(info.file_size for info, _ in keep)
    if declared > max_bytes:
        raise DatasetError(f"the archive's images expand to {_mb(declared)}, more than the limit of {_mb(max_bytes)}")
    return keep, skipped


def member_problem(info: zipfile.ZipInfo, name: str, parts: tuple[str, ...], max_file_bytes: int) -> str | None:
    """Why this member must not be extracted, or None. `name` uses '/' as its only separator;
    `parts` are its components without empty and '.' ones."""
    mode = info.external_attr >> 16  # Unix mode bits, when the archive was made on Unix
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "not a regular file"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "absolute path"
    if ".." in parts:
        return "path leads out of the archive's folder ('..')"
    if info.flag_bits & 0x1:
        return "encrypted"
    if _is_junk(parts):
        return "hidden or system file"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return f"unsupported file type '{suffix or parts[-1]}'"
    if info.file_size > max_file_bytes:
        return f"{_mb(info.file_size)} uncompressed, more than the limit of {_mb(max_file_bytes)} per image"
    return None


def extract_members(archive: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
                    dest: Path, max_bytes: int, max_file_bytes: int) -> list[SkippedFile]:
    """Stream planned members into the new folder `dest`, counting the bytes actually decompressed:
    a forged header can declare a tiny size for a huge member, so the planned sizes are not enough.
    A member over the per-image cap, or corrupt, is skipped; passing the total cap is fatal."""
    dest.mkdir()
    root = dest.resolve()
    skipped, total = [], 0
    for info, parts in members:
        out = dest.joinpath(*parts)
        # The name checks already rule this out; resolving is the last word on where bytes go.
        if not out.resolve().is_relative_to(root):
            raise DatasetError(f"archive member '{info.filename}' points outside the dataset folder")
        written = 0
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(out, "xb") as dst:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > max_file_bytes or total + written > max_bytes:
                        break
                    dst.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            out.unlink(missing_ok=True)
            skipped.append(SkippedFile(info.filename, f"corrupt or unsupported archive member ({e})"))
            continue
        except OSError as e:  # disk full, a name the filesystem refuses, …
            raise DatasetError(f"could not extract '{info.filename}': {e.strerror or e}") from None
        if written > max_file_bytes:
            out.unlink()
            skipped.append(SkippedFile(info.filename, f"expands past the limit of {_mb(max_file_bytes)} per image"))
        elif total + written > max_bytes:
            raise DatasetError(f"the archive expands past the limit of {_mb(max_bytes)}")
        else:
            total += written
    return skipped


def _mb(n: int) -> str:
    return f"{n / 1024**2:.1f} MB"


# -- layout --------------------------------------------------------------------------------------

def assemble(source: Path, work: Path, data_root: Path, name: str, place, skipped: list[SkippedFile],
             val_fraction: float, seed: int) -> ImportReport:
    """Lay `source` out as train/val in `work/dataset` (each file put there by `place(src, dst)`),
    validate it, and move it to a new folder in `data_root`."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    root, notes = find_root(source), []
    if all((root / s).is_dir() for s in SPLITS):
        splits = {s: class_files(root / s, source, skipped, notes) for s in SPLITS}
        for s in SPLITS:
            require_images(splits[s], 1, root / s, source, skipped)
        notes += [f"ignored '{p.name}/': only train/ and val/ are used" for p in _subfolders(root)
                  if p.name not in SPLITS]
        how = "train/val as given"
    elif any((root / s).is_dir() for s in SPLITS):
        raise DatasetError(f"found '{'train' if (root / 'train').is_dir() else 'val'}/' without its partner; {LAYOUTS}")
    else:
        if (root / "test").is_dir():
            notes.append("ignored 'test/': a test set is not used for training or validation")
        classes = class_files(root, source, skipped, notes, exclude={"test"})
        if len(classes) < 2:
            found = f"only '{next(iter(classes))}/'" if classes else "none"
            raise DatasetError(f"need at least 2 class folders with images, found {found}; {LAYOUTS}")
        require_images(classes, 2, root, source, skipped)
        splits = split_classes(classes, val_fraction, seed)
        how = f"split per class, {val_fraction:.0%} to val (seed {seed})"
    built = work / "dataset"
    for split, per_class in splits.items():
        for cls, files in per_class.items():
            for src, rel in files:
                dst = built / split / cls / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                place(src, dst)
    try:  # the loader training uses has the last word on the finished folder
        ds = load_dataset(built, CHECK_PREPROCESSING)
    except DatasetError as e:
        # Name the folder the user knows, not the hidden work folder.
        raise DatasetError(str(e).replace(str(built), safe_name(name))) from None
    target = publish(built, data_root, name)
    train, thumbnails = ds.splits["train"], {c: [] for c in ds.classes}
    for path, label in zip(train.paths, train.labels.tolist()):
        shown = thumbnails[ds.classes[label]]
        if len(shown) < THUMBNAILS:
            shown.append(str(target / Path(path).relative_to(built)))
    counts = ds.counts()
    n_val, n_all = sum(counts["val"].values()), sum(sum(c.values()) for c in counts.values())
    return ImportReport(str(target), ds.classes, counts, how, n_val / n_all, skipped, notes, thumbnails)


def find_root(folder: Path) -> Path:
    """The dataset inside `folder`: archives often wrap everything in one top folder (or several).
    A lone sub-folder holding images is a class, not a wrapper: a one-class upload is then refused
    as such rather than searched for classes inside that class."""
    while not any((folder / s).is_dir() for s in SPLITS):
        subs = _subfolders(folder)
        if len(subs) != 1 or any(_is_image(p) for f in (folder, subs[0]) for p in f.iterdir()):
            break
        folder = subs[0]
    return folder


def class_files(folder: Path, source: Path, skipped: list[SkippedFile], notes: list[str],
                exclude=frozenset()) -> dict[str, list[tuple[Path, Path]]]:
    """class -> [(readable image, its path inside the class folder)], from the sub-folders of
    `folder`. Files left out go to `skipped` (paths relative to `source`), and sub-folders without
    any image file to `notes`. Unreadable images are found here, before any split, so that they
    never take a place in val nor count in the ratio."""
    for p in sorted(folder.iterdir()):
        if p.is_file():
            skipped.append(SkippedFile(str(p.relative_to(source)), "not inside a class folder"))
    classes = {}
    for sub in _subfolders(folder):
        if sub.name in exclude:
            continue
        files = []
        for p in sorted(sub.rglob("*")):
            rel = p.relative_to(sub)
            if p.is_dir():
                continue
            if _is_junk(rel.parts):
                skipped.append(SkippedFile(str(p.relative_to(source)), "hidden or system file"))
            elif _is_image(p):
                files.append((p, rel))
            else:
                skipped.append(SkippedFile(str(p.relative_to(source)), f"unsupported file type '{p.suffix or p.name}'"))
        if not files:
            notes.append(f"ignored '{sub.relative_to(source)}/': no images")
            continue
        with ThreadPoolExecutor(DECODE_THREADS) as pool:  # PIL decodes without the GIL
            errors = list(pool.map(decode_problem, (p for p, _ in files)))
        skipped += [SkippedFile(str(p.relative_to(source)), e) for (p, _), e in zip(files, errors) if e]
        classes[sub.name] = [f for f, e in zip(files, errors) if not e]
    return classes


def decode_problem(path: Path) -> str | None:
    """Why the image at `path` cannot be used (not an image, truncated, too many pixels), or None."""
    try:
        load_image(path, CHECK_PREPROCESSING.resize_size)
    except UnreadableImage as e:
        return str(e)
    return None


def require_images(classes: dict[str, list], minimum: int, folder: Path, source: Path,
                   skipped: list[SkippedFile]) -> None:
    need = ("each class needs at least 2 (one to train on, one to validate with)" if minimum == 2
            else "each class needs at least one in train/ and in val/")
    for cls, files in classes.items():
        if len(files) < minimum:
            where = (folder / cls).relative_to(source)
            bad = [s for s in skipped if Path(s.path).is_relative_to(where)]
            hint = f" ({len(bad)} skipped, e.g. {Path(bad[0].path).name}: {bad[0].reason})" if bad else ""
            raise DatasetError(f"'{where}/' has {len(files)} readable image(s); {need}{hint}")


def split_classes(classes: dict[str, list], val_fraction: float, seed: int) -> dict[str, dict[str, list]]:
    """Stratified split: each class gives round(n * val_fraction) of its files to val, at least one
    and never all of them."""
    splits = {s: {} for s in SPLITS}
    for cls, files in classes.items():
        order = sorted(files)
        # One generator per class, seeded by its name: adding a class does not reshuffle the others.
        random.Random(f"{seed}/{cls}").shuffle(order)
        n_val = val_count(len(order), val_fraction)
        splits["val"][cls], splits["train"][cls] = order[:n_val], order[n_val:]
    return splits


def val_count(n: int, val_fraction: float) -> int:
    """How many of a class's n images go to val: round(n * val_fraction), at least one, never all."""
    return min(n - 1, max(1, int(n * val_fraction + 0.5)))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_junk([p.name]))


def _is_junk(parts) -> bool:
    """Hidden files and folders (.DS_Store, macOS '._x' twins, .git/) and OS leftovers (__MACOSX/)."""
    return any(p.startswith(".") or p.casefold() in JUNK_NAMES for p in parts)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


# -- folders -------------------------------------------------------------------------------------

@contextmanager
def work_folder(data_root: str | os.PathLike):
    """A hidden scratch folder inside the data root (so a final rename is cheap and cannot leave
    the data root's filesystem), removed afterwards whatever happened."""
    Path(data_root).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=data_root))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def safe_name(name: str) -> str:
    """A folder name of word characters, '.' and '-' only: no separators, never '.' or '..'."""
    # 48 characters: even 4-byte UTF-8 ones, plus a "-2" suffix, stay under the 255-byte name limit.
    return re.sub(r"[^\w.-]+", "_", name).strip("._-")[:48] or "dataset"


def publish(built: Path, data_root: Path, name: str) -> Path:
    """Move the finished dataset to data_root/<name>, <name>-2, … : always a new folder."""
    base = safe_name(name)
    for i in itertools.count(1):
        target = data_root / (base if i == 1 else f"{base}-{i}")
        if target.name in RESERVED_NAMES or os.path.lexists(target):
            continue
        try:
            built.rename(target)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):  # taken since we looked: try the next name
                continue
            raise
        return target


def link_or_copy(src: Path, dst: Path) -> None:
    # Training only reads dataset files, so sharing them by hard link is safe and costs no space.
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dst)
