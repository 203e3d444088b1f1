"""Datasets from uploaded zips and local folders: both layouts, hostile archives, caps, clean failure."""
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from bees_ants.cli import resolve_data_dir
from bees_ants.data import DatasetError
from bees_ants.importer import extract_members, import_zip, needs_preparing, plan_members, prepare_folder
from conftest import COLOURS, make_dataset, write_image, write_zip


def image_bytes(tmp_path, cls, i) -> bytes:
    seed = 100 * list(COLOURS).index(cls) + i
    return write_image(tmp_path / "img" / f"{cls}_{i}.png", COLOURS[cls], seed=seed).read_bytes()


def class_members(tmp_path, sizes: dict[str, int], prefix="") -> dict[str, bytes]:
    return {f"{prefix}{cls}/{cls}_{i}.png": image_bytes(tmp_path, cls, i) for cls, n in sizes.items() for i in range(n)}


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_dir()}


def test_class_folders_split_stratified_and_seeded(tmp_path):
    members = class_members(tmp_path, {"ants": 10, "bees": 5, "wasps": 3}, prefix="My Photos/")
    members |= {"My Photos/notes.txt": b"hello", "__MACOSX/My Photos/ants/._ants_0.png": b"\0",
                "My Photos/bees/.DS_Store": b"\0", "My Photos/README.md": b"# readme"}
    archive = write_zip(tmp_path / "My Photos.zip", members)
    data = tmp_path / "data"
    report = import_zip(archive, data, seed=0)

    assert Path(report.path) == data / "My_Photos"  # named after the zip, sanitised
    assert report.classes == ["ants", "bees", "wasps"]  # from the folder names, wrapper folder unwrapped
    # per class: round(n / 5) to val, at least one, never all
    assert report.counts == {"train": {"ants": 8, "bees": 4, "wasps": 2}, "val": {"ants": 2, "bees": 1, "wasps": 1}}
    assert report.val_fraction == pytest.approx(4 / 18)
    assert "split per class" in report.split and "seed 0" in report.split
    reasons = {s.path: s.reason for s in report.skipped}
    assert "unsupported file type '.txt'" == reasons["My Photos/notes.txt"]
    assert "unsupported file type '.md'" == reasons["My Photos/README.md"]
    assert reasons["__MACOSX/My Photos/ants/._ants_0.png"] == reasons["My Photos/bees/.DS_Store"] == "hidden or system file"
    for cls, paths in report.thumbnails.items():
        assert 1 <= len(paths) <= 4 and all(Path(p).is_file() and f"/train/{cls}/" in p for p in paths)
    assert "val: 4 images (ants 2, bees 1, wasps 1)" in report.summary()
    assert sorted(p.name for p in data.iterdir()) == ["My_Photos"]  # no work folder left behind
    assert not needs_preparing(report.path)  # a train/val folder, as training expects

    def val_files(path):
        return sorted(p.name for p in (Path(path) / "val").rglob("*.png"))

    again = import_zip(archive, data, seed=0)
    assert Path(again.path) == data / "My_Photos-2"  # a new folder, never an existing one
    assert val_files(again.path) == val_files(report.path)
    other = import_zip(archive, data, seed=1)
    assert val_files(other.path) != val_files(report.path)


def test_train_val_layout_is_kept_and_test_ignored(tmp_path):
    source = make_dataset(tmp_path / "src" / "hymen")
    write_image(source / "test" / "ants" / "t.png", COLOURS["ants"])
    members = {str(p.relative_to(tmp_path / "src")): p.read_bytes() for p in files_under(source)}
    members["hymen\\val\\bees\\windows_style.png"] = image_bytes(tmp_path, "bees", 99)  # backslash separators
    report = import_zip(write_zip(tmp_path / "upload.zip", members), tmp_path / "data", name="Field survey")
    assert Path(report.path) == tmp_path / "data" / "Field_survey"
    assert report.split == "train/val as given"
    assert report.counts == {"train": {"ants": 8, "bees": 8}, "val": {"ants": 4, "bees": 5}}
    assert any("test/" in n for n in report.notes)
    assert not (Path(report.path) / "test").exists()


def forge_size(path: Path, member: str, size: int) -> None:
    """Make both headers of `member` declare `size` uncompressed bytes (a zip bomb's lie)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(member).header_offset
    struct.pack_into("<I", data, local + 22, size)
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, size)
    path.write_bytes(bytes(data))


def test_hostile_entries_are_refused_and_nothing_is_written_outside(tmp_path):
    link = zipfile.ZipInfo("ants/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    fifo = zipfile.ZipInfo("bees/fifo.png")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    hostile = {"../evil.png": "path leads out", "../../../../evil.png": "path leads out",
               "ants/../../../evil.png": "path leads out", "..\\..\\..\\evil.png": "path leads out",
               "/tmp/abs.png": "absolute path", "C:/abs.png": "absolute path", "C:abs.png": "absolute path",
               "ants/link.png": "symbolic link", "bees/fifo.png": "not a regular file",
               "ants/ANTS_0.PNG": "duplicate entry", "bees/bomb.png": "corrupt"}
    archive = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in class_members(tmp_path, {"ants": 3, "bees": 3}).items():
            zf.writestr(name, data)
        for name in hostile:
            if name not in ("ants/link.png", "bees/fifo.png"):
                zf.writestr(name, image_bytes(tmp_path, "ants", 0) if name != "bees/bomb.png" else b"\0" * 3_000_000)
        zf.writestr(link, "../../../../etc/passwd")
        zf.writestr(fifo, "")
    forge_size(archive, "bees/bomb.png", 100)  # declared 100 bytes, really 3 MB
    assert {i.filename for i in zipfile.ZipFile(archive).infolist()} >= set(hostile)  # zipfile kept the names
    before = files_under(tmp_path)

    data = tmp_path / "deep" / "data"
    report = import_zip(archive, data, max_file_bytes=1_000_000)
    reasons = {s.path: s.reason for s in report.skipped}
    for name, reason in hostile.items():
        assert reason in reasons[name], name
    assert report.counts == {"train": {"ants": 2, "bees": 2}, "val": {"ants": 1, "bees": 1}}
    new = files_under(tmp_path) - before
    assert new and all(p.is_relative_to(report.path) for p in new)  # only the dataset itself was written
    assert max(p.stat().st_size for p in new) < 1_000_000
    assert not any(p.name in ("evil.png", "abs.png", "passwd") for p in new)


def test_extraction_counts_real_bytes_not_declared_ones(tmp_path):
    archive = write_zip(tmp_path / "a.zip", {"ants/huge.png": b"\0" * 300_000, "ants/small.png": b"\0" * 10_000})
    with zipfile.ZipFile(archive) as zf:
        members = [(info, tuple(info.filename.split("/"))) for info in zf.infolist()]
        skipped = extract_members(zf, members, tmp_path / "out", max_bytes=10**6, max_file_bytes=100_000)
        assert [(s.path, "per image" in s.reason) for s in skipped] == [("ants/huge.png", True)]
        assert [p.name for p in files_under(tmp_path / "out")] == ["small.png"]
        with pytest.raises(DatasetError, match="expands past the limit"):
            extract_members(zf, members, tmp_path / "out2", max_bytes=50_000, max_file_bytes=10**6)


@pytest.mark.parametrize("members, caps, message", [
    ({f"ants/{i}.png": b"x" for i in range(6)}, {"max_files": 5}, "6 images, more than the limit of 5"),
    ({"ants/a.png": b"\0" * 2_000_000}, {"max_bytes": 1_000_000}, "expand to 1.9 MB, more than the limit"),
])
def test_caps_refuse_the_archive_before_anything_is_written(tmp_path, members, caps, message):
    archive = write_zip(tmp_path / "big.zip", members)
    with pytest.raises(DatasetError, match=message):
        import_zip(archive, tmp_path / "data", **caps)
    assert not (tmp_path / "data").exists()
    assert plan_members(zipfile.ZipFile(archive).infolist(), 10, 10**7, 10**7)[1] == []  # under the caps: all fine


def test_not_a_zip_or_corrupt_zip(tmp_path):
    (tmp_path / "text.zip").write_text("not a zip at all")
    good = write_zip(tmp_path / "good.zip", class_members(tmp_path, {"ants": 2, "bees": 2}))
    (tmp_path / "cut.zip").write_bytes(good.read_bytes()[:300])
    for name in ("text.zip", "cut.zip", "missing.zip"):
        with pytest.raises(DatasetError, match="not a readable zip archive"):
            import_zip(tmp_path / name, tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("sizes, prefix, message", [
    ({"ants": 4}, "", "at least 2 class folders with images, found only 'ants/'"),
    ({"ants": 4, "bees": 1}, "", r"'bees/' has 1 readable image\(s\); each class needs at least 2"),
    ({"ants": 2, "bees": 2}, "data/train/", "found 'train/' without its partner; expected either train/"),
])
def test_unusable_layouts_are_refused_and_cleaned_up(tmp_path, sizes, prefix, message):
    archive = write_zip(tmp_path / "x.zip", class_members(tmp_path, sizes, prefix))
    with pytest.raises(DatasetError, match=message):
        import_zip(archive, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # the extracted work folder is gone


def test_unreadable_images_are_reported_or_fail_cleanly(tmp_path):
    members = class_members(tmp_path, {"ants": 4, "bees": 4})
    members["ants/fake.jpg"] = b"this is text, not a jpeg"
    report = import_zip(write_zip(tmp_path / "x.zip", members), tmp_path / "data")
    assert [(s.path, s.reason) for s in report.skipped] == [("ants/fake.jpg", "not an image file (or a format Pillow cannot read)")]
    assert report.counts == {"train": {"ants": 3, "bees": 3}, "val": {"ants": 1, "bees": 1}}  # split among readable ones

    # A train/val zip whose only val image of a class is broken cannot train: refused, nothing kept.
    members = {f"{s}/{c}/{c}_{i}.png": image_bytes(tmp_path, c, i) for s in ("train", "val") for c in ("ants", "bees")
               for i in range(2)}
    members |= {"val/bees/bees_0.png": b"broken", "val/bees/bees_1.png": b"broken"}
    with pytest.raises(DatasetError, match=r"'val/bees/' has 0 readable image\(s\).*2 skipped, e.g. bees_0.png: not an image"):
        import_zip(write_zip(tmp_path / "broken.zip", members), tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["x"]


def test_local_folder_is_split_into_a_new_folder_and_left_untouched(tmp_path):
    source = tmp_path / "photos"
    for cls in ("ants", "bees"):
        for i in range(5):
            write_image(source / cls / f"{i}.png", COLOURS[cls], seed=i)
    (source / "bees" / "notes.txt").write_text("x")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files_under(source)}
    report = prepare_folder(source, tmp_path / "data")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files_under(source)} == before
    assert report.counts == {"train": {"ants": 4, "bees": 4}, "val": {"ants": 1, "bees": 1}}
    assert [s.path for s in report.skipped] == ["bees/notes.txt"]
    made = files_under(Path(report.path))
    assert len(made) == 10 and all(any(os.path.samefile(m, p) for p in before) for m in made)  # hard links


def test_cli_data_dir_accepts_a_zip_or_class_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prepared = make_dataset(tmp_path / "ready")
    assert not needs_preparing(prepared) and resolve_data_dir(str(prepared)) == str(prepared)
    archive = write_zip(tmp_path / "bugs.zip", class_members(tmp_path, {"ants": 3, "bees": 3}))
    assert needs_preparing(archive)
    path = resolve_data_dir(str(archive))
    assert Path(path) == Path("data") / "bugs" and needs_preparing(path) is False
    assert "reuse it with --data-dir data/bugs" in capsys.readouterr().out
    for cls in ("ants", "bees"):
        for i in range(3):
            write_image(tmp_path / "classes" / cls / f"{i}.png", COLOURS[cls], seed=i)
    assert needs_preparing(tmp_path / "classes")
    assert Path(resolve_data_dir(str(tmp_path / "classes"))) == Path("data") / "classes"
