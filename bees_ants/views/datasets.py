"""Your own dataset: the help and results of the Train tab's zip upload and of the dataset builder."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..data import SkippedFile
from ..draft import MAX_CLASSES, MAX_IMAGES
from ..importer import MAX_FILES, VAL_FRACTION, ImportReport
from .common import skipped_markdown, thumbnail

THUMBNAILS_SHOWN = 3  # per class, one gallery row each

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

SNAPSHOT_HELP = ("**Snapshot** adds the camera's next frame to the selected class; **Burst** adds that many, "
                 "{every:g} s apart. A frame identical to one the class already has is refused as a duplicate "
                 "(a still camera can give the same frame twice).")


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
