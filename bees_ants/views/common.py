"""What several views use: durations, the list of skipped files, gallery thumbnails."""
from __future__ import annotations

from PIL import Image

from ..data import SkippedFile
from ..images import load_image
from ..stats import interval_text

THUMBNAIL_SIDE = 256  # gallery images: small to send, big enough for the gallery's preview


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def skipped_markdown(skipped: list[SkippedFile], max_skipped: int, name=lambda s: s.path) -> str:
    """'Skipped N file(s):' and a bullet per file with its reason; empty when nothing was skipped."""
    if not skipped:
        return ""
    text = f"\n\nSkipped {len(skipped)} file(s):"
    text += "".join(f"\n- `{name(s)}`: {s.reason}" for s in skipped[:max_skipped])
    if len(skipped) > max_skipped:
        text += f"\n- … and {len(skipped) - max_skipped} more"
    return text


def thumbnail(path: str) -> Image.Image:
    """An image file, small, for a gallery (sent as an image, so any dataset folder can be shown)."""
    return load_image(path, THUMBNAIL_SIDE)


def val_images(meta: dict) -> int:
    """How many val images a checkpoint's accuracy was measured on (0: not recorded)."""
    return sum(meta.get("dataset", {}).get("counts", {}).get("val", {}).values())


def best_interval(meta: dict) -> str:
    """ " (95% CI 91.0–97.4%, 153 images)" for a checkpoint's best val accuracy, "" if unknown."""
    n = val_images(meta)
    return f" ({interval_text(meta['best']['val_acc'], n)})" if n and "best" in meta else ""
