"""Dataset scanning, refusal messages and image decoding."""
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bees_ants import data as data_mod
from bees_ants import images
from bees_ants.data import DatasetError, augment_batch, load_dataset
from bees_ants.images import UnreadableImage, load_image
from bees_ants.models import preprocessing_for
from conftest import SHARED, make_dataset

PREP = preprocessing_for("resnet18")


def test_scan_counts_and_reports_skipped_files(tiny_dataset):
    ants = tiny_dataset / "train" / "ants"
    (ants / "notes.txt").write_text("not an image")
    (ants / "fake.jpg").write_text("this is text, not a jpeg")
    good = (ants / "ants_0.png").read_bytes()
    (ants / "truncated.png").write_bytes(good[: len(good) // 2])
    ds = load_dataset(tiny_dataset, PREP)
    assert ds.classes == ["ants", "bees"]
    assert ds.counts() == {"train": {"ants": 8, "bees": 8}, "val": {"ants": 4, "bees": 4}}
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in ds.skipped}
    assert set(reasons) == {"notes.txt", "fake.jpg", "truncated.png"}
    assert "unsupported file type" in reasons["notes.txt"]
    assert "not an image" in reasons["fake.jpg"]
    assert reasons["truncated.png"] == "truncated image file"
    assert "skipped 3 file(s)" in ds.summary()
    # every kept image is decoded once, shorter side = the weights' resize size
    assert all(min(im.shape[1:]) == PREP.resize_size for im in ds.splits["train"].images)


def gif(path, colours) -> None:
    """A palette GIF with one frame per colour."""
    frames = [Image.new("RGB", (40, 30), c).convert("P") for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


def test_gifs_train_from_their_first_frame(tiny_dataset):
    gif(tiny_dataset / "train" / "ants" / "moving.gif", [(255, 0, 0), (0, 255, 0)])
    gif(tiny_dataset / "val" / "bees" / "still.GIF", [(0, 0, 255)])
    ds = load_dataset(tiny_dataset, PREP)
    assert ds.skipped == [] and ds.counts() == {"train": {"ants": 9, "bees": 8}, "val": {"ants": 4, "bees": 5}}
    first = ds.splits["train"].images[ds.splits["train"].paths.index(str(tiny_dataset / "train/ants/moving.gif"))]
    assert first[:, 0, 0].tolist() == [255, 0, 0]  # the first frame, as RGB
    assert load_image(tiny_dataset / "val" / "bees" / "still.GIF").getpixel((0, 0)) == (0, 0, 255)


def test_decode_threads_and_pixels_in_flight_are_bounded():
    assert 1 <= images.DECODE_THREADS <= 4
    assert images.decode_budget.pixels >= images.MAX_PIXELS  # the largest image allowed still decodes


@pytest.mark.parametrize("layout, message", [
    ("missing_root", "does not exist"),
    ("no_val", "has no 'val/' folder"),
    ("one_class", "at least 2"),
    ("class_mismatch", "different classes"),
    ("unreadable_class", "class 'bees' has no readable image"),
])
def test_bad_layouts_are_refused_with_a_clear_message(tmp_path, layout, message):
    root = tmp_path / "ds"
    if layout == "no_val":
        make_dataset(root)
        shutil.rmtree(root / "val")
    elif layout == "one_class":
        make_dataset(root, classes=("ants",))
    elif layout == "class_mismatch":
        make_dataset(root)
        (root / "val" / "bees").rename(root / "val" / "wasps")
    elif layout == "unreadable_class":
        make_dataset(root)
        for f in (root / "val" / "bees").iterdir():
            f.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=message):
        load_dataset(root, PREP)


def _encode(img: Image.Image, fmt: str, **kw) -> io.BytesIO:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"),
                                       ("I;16", "PNG"), ("LA", "PNG"), ("1", "BMP"), ("RGB", "WEBP")])
def test_every_common_pixel_format_becomes_rgb(mode, fmt):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    if mode == "I;16":
        src = Image.fromarray((np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50))
        assert src.mode.startswith("I;16")
    else:
        src = rgb.convert(mode)
    out = load_image(_encode(src, fmt), min_side=60)
    assert out.mode == "RGB" and min(out.size) == 60 and out.size == (80, 60)
    if mode == "I;16":  # 16-bit range scaled, not clipped to white
        assert 50 < np.asarray(out).mean() < 200


def test_rgba_transparency_composites_on_white():
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert np.asarray(load_image(_encode(clear, "PNG"))).min() == 255


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    out = load_image(_encode(img, "JPEG", exif=exif))
    assert out.size == (20, 40)


def test_unreadable_bytes_raise_a_reason():
    with pytest.raises(UnreadableImage, match="not an image"):
        load_image(io.BytesIO(b"%PDF-1.4 not an image"))


def test_a_bug_while_decoding_is_raised_not_skipped(tiny_dataset, monkeypatch):
    def broken(img):
        raise ValueError("a bug, not a bad file")
    monkeypatch.setattr(data_mod, "image_to_tensor", broken)
    with pytest.raises(ValueError, match="a bug"):
        load_dataset(tiny_dataset, PREP)


def test_decoding_reports_progress(tiny_dataset):
    calls = []
    load_dataset(tiny_dataset, PREP, threads=2, on_progress=lambda *a: calls.append(a))
    assert calls == [("decoding images", i, 24) for i in range(1, 25)]


def test_resize_uses_the_weights_interpolation(tmp_path):
    bicubic = preprocessing_for("efficientnet_b0")
    assert bicubic.interpolation == "bicubic" and PREP.interpolation == "bilinear"
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    size = (round(400 * bicubic.resize_size / 300), bicubic.resize_size)
    out = load_image(path, bicubic.resize_size, bicubic.interpolation)
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(path).resize(size, Image.BICUBIC)))
    assert not np.array_equal(np.asarray(load_image(path, bicubic.resize_size, "bilinear")), np.asarray(out))


def test_augmentation_crops_to_size_and_follows_the_seed():
    images = [torch.randint(0, 256, (3, 256, 341), dtype=torch.uint8) for _ in range(4)]
    torch.manual_seed(0)
    a = augment_batch(images, PREP)
    torch.manual_seed(0)
    assert a.shape == (4, 3, PREP.crop_size, PREP.crop_size) and a.dtype == torch.uint8
    assert torch.equal(a, augment_batch(images, PREP))
    assert not torch.equal(a, augment_batch(images, PREP))  # the generator moved on: a new draw


@pytest.mark.skipif(not (SHARED / "data" / "hymenoptera_data").is_dir(), reason="../shared data absent")
def test_real_hymenoptera_scan():
    ds = load_dataset(SHARED / "data" / "hymenoptera_data", PREP)
    # imageNotFound.gif, a GIF that torchvision's ImageFolder leaves out for its extension, is an
    # image like the others here: every file of the set is used.
    assert ds.counts() == {"train": {"ants": 124, "bees": 121}, "val": {"ants": 70, "bees": 83}}
    assert ds.skipped == []



def test_extreme_aspect_ratio_keeps_the_centre_and_stays_small():
    strip = Image.new("RGB", (20000, 2), (10, 20, 30))
    out = load_image(_encode(strip, "PNG"), min_side=64)
    assert out.size == (256, 64)


def test_decoding_only_the_split_that_is_needed(tiny_dataset):
    ds = load_dataset(tiny_dataset, PREP, decode=("val",))
    assert len(ds.splits["train"]) == 0 and len(ds.splits["val"]) == 8
    with pytest.raises(DatasetError, match="different classes"):  # both splits are still checked
        (tiny_dataset / "train" / "bees").rename(tiny_dataset / "train" / "wasps")
        load_dataset(tiny_dataset, PREP, decode=("val",))
