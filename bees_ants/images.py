"""Any image file (or a picture already in memory) to an upright 8-bit RGB tensor, safely.

Decoding is where untrusted input meets memory: one upload can be a 100-megapixel photo, a
16-bit scan, a palette GIF, a truncated file or no image at all. Everything here either returns
an RGB image resized so its shorter side is what the model's preprocessing asks for, or raises
`UnreadableImage` with a reason a person can read; and the full-size pixels being decoded at once
are capped process-wide (`decode_budget`), however many threads decode. Datasets (data.py), the
predictor, the importer and the thumbnails all decode through `load_image`.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

# PIL refuses images above ~89 MP with a DecompressionBombWarning; we treat anything past this as
# a reason to skip rather than let one hostile upload use gigabytes of memory.
MAX_PIXELS = 64_000_000
MAX_ASPECT = 4  # longer side at most 4x the shorter: panoramas keep their centre
# Decoding threads: a few keep the model fed; one per core on a big machine only multiplies the
# full-size images held at once.
DECODE_THREADS = min(os.cpu_count() or 2, 4)
# Full-size pixels being decoded at once, process-wide (~3 bytes each, plus a converted copy):
# two of the largest images, ~400 MB; an image alone may always go ahead, however large.
DECODE_PIXEL_BUDGET = 2 * MAX_PIXELS


class PixelBudget:
    """A semaphore counted in pixels: `with budget.hold(n):` waits while others hold too many."""

    def __init__(self, pixels: int):
        self.pixels, self.in_flight = pixels, 0
        self._free = threading.Condition()

    def hold(self, n: int):
        budget = self

        class _Hold:
            def __enter__(self):
                with budget._free:
                    budget._free.wait_for(lambda: budget.in_flight == 0 or budget.in_flight + n <= budget.pixels)
                    budget.in_flight += n

            def __exit__(self, *exc):
                with budget._free:
                    budget.in_flight -= n
                    budget._free.notify_all()
        return _Hold()


decode_budget = PixelBudget(DECODE_PIXEL_BUDGET)


class UnreadableImage(ValueError):
    """One file that cannot be used as an image; the message is the reason it is skipped."""


def load_image(path_or_file, min_side: int | None = None, interpolation: str = "bilinear") -> Image.Image:
    """Open any common image (a path, a file object or a PIL image) as 8-bit RGB, upright (EXIF),
    shorter side == min_side if given, resized with `interpolation` (a models.Preprocessing's: "bilinear", "bicubic").

    Handles grayscale, palette, RGBA (composited on white, as a viewer shows it), CMYK and
    16-bit/float images. Raises UnreadableImage with a readable reason for anything unreadable.
    """
    img = open_image(path_or_file)
    try:
        if min_side and img.format == "JPEG":
            # Let libjpeg decode at a reduced scale (still >= min_side): big photos decode ~4x faster.
            img.draft("RGB", (min_side, min_side))
    except (OSError, SyntaxError, ValueError) as e:
        img.close()
        raise UnreadableImage(_describe_decode_error(e)) from None
    with decode_budget.hold(img.width * img.height):  # full-size pixels live only inside
        return _decode_and_resize(img, min_side, interpolation)


def open_image(path_or_file) -> Image.Image:
    """Open an image and read its header (format, size) without decoding any pixel; raises
    UnreadableImage for what is no image at all or too large to decode. A picture already in
    memory (a webcam frame) gets the same checks."""
    try:
        img = path_or_file if isinstance(path_or_file, Image.Image) else Image.open(path_or_file)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(_describe_decode_error(e)) from None
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise UnreadableImage(f"image too large ({img.width}x{img.height} pixels)")
    return img


def _decode_and_resize(opened: Image.Image, min_side: int | None, interpolation: str) -> Image.Image:
    try:
        img = _resized(opened, min_side, interpolation)
    except BaseException:
        opened.close()
        raise
    if img is not opened:
        opened.close()  # an animation keeps its file open for the next frames; we use the first
    return img


def _resized(img: Image.Image, min_side: int | None, interpolation: str) -> Image.Image:
    try:
        img.load()  # a GIF (or any animation): its first frame
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
    # Pillow reports a broken file's bytes with any of these (ValueError too, e.g. a PNG text chunk
    # too large to decompress); each is a reason to skip that file.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(_describe_decode_error(e)) from None
    if max(img.size) > MAX_ASPECT * min(img.size):
        # A 100000x1 strip would resize to gigabytes; classification looks at the centre anyway.
        w, h = img.size
        cw, ch = min(w, MAX_ASPECT * h), min(h, MAX_ASPECT * w)
        img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    if min_side:
        scale = min_side / min(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling[interpolation.upper()])
    return img


def _describe_decode_error(e: Exception) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not an image file (or a format Pillow cannot read)"
    if isinstance(e, OSError) and e.filename is not None:  # the file, not its bytes: no server path in the reason
        return f"cannot read file: {e.strerror or type(e).__name__}"
    msg = str(e)
    if "truncated" in msg:
        return "truncated image file"
    return f"cannot decode image: {msg}"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def center_crop_batch(images: list[torch.Tensor], crop_size: int) -> torch.Tensor:
    return torch.stack([TF.center_crop(im, [crop_size, crop_size]) for im in images])
