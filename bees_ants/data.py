"""Image folders in, decoded tensors out.

A dataset is `root/{train,val}/<class>/<image>` (torchvision's ImageFolder layout). `load_dataset`
scans it, refuses layouts that cannot train (with a message naming the problem), and then holds
its images one of two ways, decided per dataset against a memory budget:
- decoded once: when the decoded images fit, every image is decoded exactly once (in parallel
  threads, which PIL allows since it releases the GIL) and kept as a uint8 tensor resized so its
  shorter side is the eval resize size. Epochs then only crop, flip and normalise tensors.
- streamed: when they would not fit, only the image headers are read up front (sizes, and files
  that are no image at all); every pass then reads, decodes, resizes and augments its batches in
  torch DataLoader worker processes, so memory stays flat however large the set.
`train_batches` and `eval_batches` serve both, so the training loop and the predictor never know.
Decoding a single image is images.py's; how big to decode and crop comes from the backbone, as the
`models.Preprocessing` the caller passes in (only its sizes and interpolation are read here).
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torchvision.transforms import v2

from . import images
from .device import batch_slices
from .errors import UserError
from .images import (DECODE_PIXEL_BUDGET, DECODE_THREADS, MAX_ASPECT, PixelBudget, UnreadableImage, center_crop_batch,
                     image_to_tensor, load_image, open_image)
from .settings import memory_budget_mb

if TYPE_CHECKING:  # handed in by the caller; data sits below models and never imports it
    from .models import Preprocessing

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")  # GIF: 1st frame
# The tutorial's dataset. Kept as the real source; offline users point --data-dir at a copy.
HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
HYMENOPTERA_FILES = {"train": 245, "val": 153}  # files per split in the official archive
# Decode once or stream: decoded bytes per pixel (uint8 RGB), and how much wider than square a
# typical photo is (4:3 and 3:2 are the common cameras), for a first estimate from the file count.
BYTES_PER_PIXEL = 3
ASPECT_ALLOWANCE = 1.4


def memory_budget_bytes(megabytes: int | None = None) -> int:
    """The RAM a run may fill with decoded images and cached activations: `megabytes` when given,
    else $BEES_ANTS_MEMORY_BUDGET_MB, else half of what the OS reports available right now (the
    model, its gradients and the other visitors' runs need the rest)."""
    megabytes = megabytes or memory_budget_mb()
    if megabytes:
        return megabytes * 2**20
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):  # not Linux: what is free, which undercounts (caches)
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available // 2


class DatasetError(UserError):
    """A dataset that cannot be trained on; the message says what to fix."""


class DatasetDownloadError(DatasetError):
    """The tutorial's set is not on disk and could not be fetched. The message gives the CLI's way
    out (--data-dir); the app catches this class and names its own (`target`, `reason` say what)."""

    def __init__(self, target: Path, reason: str):
        self.target, self.reason = target, reason
        super().__init__(f"the ants/bees dataset is not at '{target}' and could not be downloaded from "
                         f"{HYMENOPTERA_URL} ({reason}). Offline? Copy an extracted hymenoptera_data folder "
                         "there, or pass --data-dir PATH")


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class Split:
    """One split's images with their labels and paths, held one of two ways (see the module doc)."""
    images: list[torch.Tensor] | None  # uint8 CHW, shorter side == resize_size; None: streamed
    labels: torch.Tensor               # int64
    paths: list[str]
    streamed_as: Preprocessing | None = None  # streamed: how each pass decodes the files
    # Streamed files that fail to decode in a pass are dropped from the split after it and listed
    # here, with their reason; `load_dataset` makes this the dataset's own `skipped` list.
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: list[int]) -> "Split":
        images = None if self.images is None else [self.images[i] for i in indices]
        return Split(images, self.labels[indices], [self.paths[i] for i in indices], self.streamed_as, self.skipped)

    def drop(self, failed: dict[int, str]) -> None:
        """Forget the files that could not be decoded in a pass (index -> reason)."""
        self.skipped += [SkippedFile(self.paths[i], reason) for i, reason in sorted(failed.items())]
        keep = [i for i in range(len(self)) if i not in failed]
        self.labels, self.paths = self.labels[keep], [self.paths[i] for i in keep]


@dataclass
class Dataset:
    root: str
    classes: list[str]
    splits: dict[str, Split]
    skipped: list[SkippedFile] = field(default_factory=list)
    storage: str = ""  # how the images are held and why, e.g. "decoded once in memory: 62 MB (budget 2 GB)"

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split, e.g. {'train': {'ants': 123, 'bees': 121}, ...}."""
        out = {}
        for name, split in self.splits.items():
            c = Counter(split.labels.tolist())
            out[name] = {cls: c.get(i, 0) for i, cls in enumerate(self.classes)}
        return out

    def summary(self) -> str:
        lines = [f"dataset {self.root}: {len(self.classes)} classes"]
        for name, per_class in self.counts().items():
            total = sum(per_class.values())
            parts = ", ".join(f"{c} {n}" for c, n in per_class.items())
            lines.append(f"  {name}: {total} images ({parts})")
        if self.storage:
            lines.append(f"  {self.storage}")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s):")
            lines += [f"    {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def augment_batch(images: list[torch.Tensor], preprocessing: Preprocessing) -> torch.Tensor:
    """The tutorial's train augmentation: RandomResizedCrop + horizontal flip, on uint8 tensors.
    torchvision draws from torch's global generator, so a seed makes runs reproducible."""
    augment = v2.Compose([
        v2.RandomResizedCrop(preprocessing.crop_size, interpolation=v2.InterpolationMode(preprocessing.interpolation),
                             antialias=True),
        v2.RandomHorizontalFlip(),
    ])
    return torch.stack([augment(im) for im in images])


def train_batches(split: Split, preprocessing: Preprocessing, batch_size: int, shuffle: bool = True,
                  device: torch.device | str = "cpu"):
    """(augmented uint8 images, labels) batches of `split`, in a fresh random order if `shuffle`,
    for a model on `device` (streamed batches are put in pinned memory for a CUDA one)."""
    order = torch.randperm(len(split)) if shuffle else torch.arange(len(split))
    batches = [order[s] for s in batch_slices(len(split), batch_size)]
    if split.images is None:
        yield from _streamed(split, batches, functools.partial(augment_batch, preprocessing=preprocessing), device)
        return
    for idx in batches:
        yield augment_batch([split.images[i] for i in idx], preprocessing), split.labels[idx]


def eval_batches(split: Split, crop_size: int, batch_size: int, device: torch.device | str = "cpu"):
    """(centre-cropped uint8 images, labels) batches of `split`, in order, for a model on `device`."""
    if split.images is None:
        batches = [torch.arange(len(split))[s] for s in batch_slices(len(split), batch_size)]
        yield from _streamed(split, batches, functools.partial(center_crop_batch, crop_size=crop_size), device)
        return
    for s in batch_slices(len(split), batch_size):
        yield center_crop_batch(split.images[s], crop_size), split.labels[s]


class _StreamedBatches(torch.utils.data.Dataset):
    """What a DataLoader worker does for a streamed split: item = a batch of indices, value =
    (uint8 batch, labels of the images that decoded, {index: reason} for those that did not)."""

    def __init__(self, split: Split, make_batch: Callable[[list[torch.Tensor]], torch.Tensor]):
        self.paths, self.labels, self.prep, self.make_batch = split.paths, split.labels, split.streamed_as, make_batch

    def __getitem__(self, indices: list[int]):
        images, kept, failed = [], [], {}
        for i in indices:
            try:
                images.append(image_to_tensor(load_image(self.paths[i], self.prep.resize_size, self.prep.interpolation)))
                kept.append(i)
            except UnreadableImage as e:  # changed or broken since the scan: skipped, not a crash
                failed[i] = str(e)
        crop = self.prep.crop_size
        batch = self.make_batch(images) if images else torch.empty(0, 3, crop, crop, dtype=torch.uint8)
        return batch, self.labels[kept], failed


def _fresh_worker(worker_id: int) -> None:
    # A forked worker inherits the parent's decode budget, possibly mid-update by another thread;
    # it decodes one image at a time, so it gets a budget of its own.
    images.decode_budget = PixelBudget(DECODE_PIXEL_BUDGET)


def _streamed(split: Split, batches: list[torch.Tensor], make_batch, device: torch.device | str):
    """Yield `batches` of a streamed split, decoded by DataLoader workers (DECODE_THREADS of them,
    at most 2 batches each ahead of the loop); afterwards drop the files that failed."""
    # A daemonic process (ZeroGPU's GPU worker) may not start processes: it decodes in-process.
    workers = 0 if multiprocessing.current_process().daemon else min(DECODE_THREADS, len(batches))
    # Augmentation draws from each worker's torch generator, which the DataLoader seeds from the
    # global one: a seeded run reproduces (the order is drawn by the caller, as for decoded splits).
    # Indices travel as lists: index tensors sent to the workers are moved to shared memory by the
    # queue's feeder thread, which grew this process by ~9 MB per batch (measured, glibc arenas).
    # Pinned pages only speed up copies to a CUDA device, and pinning initialises CUDA, which a
    # ZeroGPU app process must not do (torch says CUDA is available there): the model's device decides.
    loader = torch.utils.data.DataLoader(_StreamedBatches(split, make_batch), batch_size=None,
                                         sampler=[b.tolist() for b in batches],
                                         num_workers=workers, worker_init_fn=_fresh_worker,
                                         pin_memory=torch.device(device).type == "cuda")
    failed = {}
    try:
        for x, y, lost in loader:
            failed.update(lost)
            if len(y):
                yield x, y
    finally:
        if failed:
            split.drop(failed)


def _list_split(split_dir: Path) -> tuple[list[str], dict[str, list[Path]], list[SkippedFile]]:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, skipped = {}, []
    for cls in classes:
        files[cls] = []
        for p in sorted((split_dir / cls).rglob("*")):
            if p.is_dir() or p.name.startswith("."):
                continue
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                files[cls].append(p)
            else:
                skipped.append(SkippedFile(str(p), f"unsupported file type '{p.suffix or p.name}'"))
    return classes, files, skipped


def count_images(root: str | os.PathLike) -> int:
    """Image files (by name) under root/train and root/val, none opened: the work a queued run
    will do, for the queue's estimate. 0 when the folder is not there (yet)."""
    root = Path(root)
    return sum(len(files) for s in SPLITS if (root / s).is_dir() for files in _list_split(root / s)[1].values())


def _decode(path: Path, preprocessing: Preprocessing):
    try:
        img = load_image(path, preprocessing.resize_size, preprocessing.interpolation)
    except UnreadableImage as e:
        return None, str(e)
    return image_to_tensor(img), None


def _decoded_size(path: Path, resize_size: int):
    """(bytes the image takes decoded at `resize_size`, None) from its header alone, or (None, reason)."""
    try:
        with open_image(path) as img:
            short, long = sorted(img.size)
    except UnreadableImage as e:
        return None, str(e)
    aspect = min(long / max(short, 1), MAX_ASPECT)  # load_image crops wider ones
    return resize_size * round(resize_size * aspect) * BYTES_PER_PIXEL, None


def _each(fn, items: list, threads: int, stage: str, on_progress) -> list:
    """fn(item) for every item in `threads` threads, in order, reporting `stage` progress."""
    out = []
    with ThreadPoolExecutor(threads) as pool:
        for result in pool.map(fn, items):
            out.append(result)
            if on_progress:
                on_progress(stage, len(out), len(items))
    return out


def _size_text(n: float) -> str:
    value, unit = (n / 2**30, "GB") if n >= 2**30 else (n / 2**20, "MB")
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def load_dataset(root: str | os.PathLike, preprocessing: Preprocessing, threads: int | None = None,
                 decode: tuple[str, ...] = SPLITS,
                 on_progress: Callable[[str, int, int], None] | None = None,
                 memory_budget_mb: int | None = None) -> Dataset:
    """Scan, validate and load a train/val image folder. Raises DatasetError on a bad layout.
    Both splits are always checked; only those in `decode` are loaded (evaluation needs one).
    Their images are decoded once and kept if they fit the memory budget (`memory_budget_bytes`),
    else streamed from disk in every pass (see the module doc). `on_progress(stage, done, total)`
    is called per image: "decoding images", or for a set that may not fit, "checking images" (headers)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DatasetError(f"dataset folder '{root}' has no '{missing[0]}/' folder: expected "
                           f"{root}/train/<class>/… and {root}/val/<class>/…")
    listed = {s: _list_split(root / s) for s in SPLITS}
    classes = listed["train"][0]
    if len(classes) < 2:
        raise DatasetError(f"'{root / 'train'}' has {len(classes)} class folder(s); "
                           "training needs at least 2 (one sub-folder per class)")
    if listed["val"][0] != classes:
        only_train = sorted(set(classes) - set(listed["val"][0]))
        only_val = sorted(set(listed["val"][0]) - set(classes))
        raise DatasetError(f"train and val have different classes: only in train {only_train}, "
                           f"only in val {only_val}")
    skipped = [s for split in SPLITS for s in listed[split][2]]
    jobs = [(split, i, p) for split in decode for i, cls in enumerate(classes) for p in listed[split][1][cls]]
    threads = threads or DECODE_THREADS
    budget = memory_budget_bytes(memory_budget_mb)
    size = preprocessing.resize_size
    decoded_bytes = len(jobs) * size * size * BYTES_PER_PIXEL * ASPECT_ALLOWANCE
    if decoded_bytes > budget:
        # Perhaps too large: the headers give each image's decoded size (and find the files that
        # are no image) without decoding a pixel.
        sizes = _each(lambda j: _decoded_size(j[2], size), jobs, threads, "checking images", on_progress)
        skipped += [SkippedFile(str(p), error) for (_, _, p), (_, error) in zip(jobs, sizes) if error]
        jobs = [j for j, (_, error) in zip(jobs, sizes) if not error]
        decoded_bytes = sum(n for n, _ in sizes if n)
    stream = decoded_bytes > budget
    if stream:
        loaded = [(None, None)] * len(jobs)
        storage = (f"streaming from disk: {_size_text(decoded_bytes)} decoded would exceed the "
                   f"{_size_text(budget)} budget")
    else:
        loaded = _each(lambda j: _decode(j[2], preprocessing), jobs, threads, "decoding images", on_progress)
        storage = (f"decoded once in memory: {_size_text(sum(t.nbytes for t, _ in loaded if t is not None))} "
                   f"(budget {_size_text(budget)})")
    images, paths, labels = ({s: [] for s in SPLITS} for _ in range(3))
    for (split, label, path), (tensor, error) in zip(jobs, loaded):
        if error:
            skipped.append(SkippedFile(str(path), error))
            continue
        images[split].append(tensor)
        paths[split].append(str(path))
        labels[split].append(label)
    for s in decode:
        empty = [c for i, c in enumerate(classes) if i not in set(labels[s])]
        if empty:
            raise DatasetError(f"class '{empty[0]}' has no readable image in '{root / s}'"
                               + _skip_hint(skipped, root / s / empty[0]))
    splits = {s: Split(None if stream else images[s], torch.tensor(labels[s], dtype=torch.long), paths[s],
                       preprocessing if stream else None, skipped) for s in SPLITS}
    return Dataset(str(root), classes, splits, skipped, storage)


def _skip_hint(skipped: list[SkippedFile], folder: Path) -> str:
    here = [s for s in skipped if Path(s.path).parent == folder]
    return f" ({len(here)} file(s) skipped there, e.g. {Path(here[0].path).name}: {here[0].reason})" if here else ""


def ensure_hymenoptera(data_root: str | os.PathLike) -> Path:
    """Return `data_root/hymenoptera_data`, downloading the tutorial's archive when it is missing."""
    target = Path(data_root) / "hymenoptera_data"
    if (target / "train").is_dir() and (target / "val").is_dir():
        return target
    from torchvision.datasets.utils import download_url
    archive = Path(data_root) / "hymenoptera_data.zip"
    try:
        download_url(HYMENOPTERA_URL, str(data_root), filename=archive.name)
    except Exception as e:  # urllib raises many kinds; all mean the same to the user
        raise DatasetDownloadError(target, f"{type(e).__name__}: {e}") from None
    with zipfile.ZipFile(archive) as zf:
        bad = zf.testzip()  # CRC of every member: a broken download fails here, not mid-training
        if bad:
            raise DatasetError(f"downloaded archive {archive} is corrupt (bad member {bad}); delete it and retry")
        zf.extractall(Path(data_root))
    counts = {s: sum(1 for p in (target / s).rglob("*") if p.is_file()) for s in SPLITS}
    if counts != HYMENOPTERA_FILES:
        raise DatasetError(f"downloaded dataset has {counts} files, expected {HYMENOPTERA_FILES}")
    archive.unlink()
    return target
