"""A dataset built class by class (draft.py): names checked, every file checked, caps, the
importer's split, and the result trains."""
from pathlib import Path

import pytest

from bees_ants import catalog, draft as draft_module
from bees_ants.catalog import Settings
from bees_ants.data import DatasetError
from bees_ants.draft import Draft
from bees_ants.train import TrainingRun
from bees_ants.visitors import Visitor
from conftest import COLOURS, small_config, write_image


def images(tmp_path: Path, cls: str, n: int, start: int = 0) -> list[Path]:
    seed = 1000 * list(COLOURS).index(cls)
    return [write_image(tmp_path / "picked" / cls / f"IMG_{i}.png", COLOURS[cls], seed=seed + i)
            for i in range(start, start + n)]


def filled(tmp_path: Path, sizes: dict[str, int]) -> Draft:
    d = Draft(tmp_path / "visitor" / ".draft")
    for cls, n in sizes.items():
        d.add_class(cls)
        assert d.add_images(cls, images(tmp_path, cls, n)) == (n, [])
    return d


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_a_built_dataset_is_split_stratified_and_trains_above_chance(tmp_path):
    d = filled(tmp_path, {"ants": 10, "bees": 10, "wasps": 5})
    assert d.counts() == {"ants": 10, "bees": 10, "wasps": 5}
    assert d.split_preview() == {"ants": (8, 2), "bees": (8, 2), "wasps": (4, 1)}
    report = d.finish(tmp_path / "data", "My set")
    assert Path(report.path) == tmp_path / "data" / "My_set"
    assert report.classes == ["ants", "bees", "wasps"]
    assert report.counts == {"train": {"ants": 8, "bees": 8, "wasps": 4}, "val": {"ants": 2, "bees": 2, "wasps": 1}}
    assert "seed 0" in report.split
    # The draft stays for more images; a second dataset from it gets a new folder, the same split.
    again = d.finish(tmp_path / "data", "My set")
    assert Path(again.path).name == "My_set-2" and again.counts == report.counts
    assert sorted(p.name for p in Path(report.path, "val", "ants").iterdir()) == \
        sorted(p.name for p in Path(again.path, "val", "ants").iterdir())
    run = TrainingRun(small_config(Path(report.path), tmp_path, epochs=6))
    best = max(r.val_acc for r in run)
    assert best > 0.6  # chance is 1/3


def test_hostile_and_broken_files_get_a_reason_and_the_rest_are_kept(tmp_path):
    d = Draft(tmp_path / "visitor" / ".draft")
    d.add_class("ants")
    good = images(tmp_path, "ants", 2)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("not an image")
    (odd / "fake.png").write_bytes(b"this is no png")
    (odd / "cut.png").write_bytes(good[0].read_bytes()[:60])
    (odd / "..png").write_bytes(good[1].read_bytes())  # a name that is nearly a path: never used as one
    link = odd / "passwd.png"
    link.symlink_to("/etc/passwd")
    added, skipped = d.add_images("ants", [*good, good[0], *sorted(odd.iterdir()), odd / "missing.png"])
    reasons = {s.path: s.reason for s in skipped}
    assert added == 2
    assert reasons["notes.txt"] == "unsupported file type '.txt'"
    assert "not an image" in reasons["fake.png"]
    assert reasons["cut.png"]  # truncated
    assert reasons["IMG_0.png"] == "already in this class"
    assert reasons["..png"] == "already in this class"  # the same bytes as IMG_1.png, stored by content
    assert "not an image" in reasons["passwd.png"]
    assert "cannot read file" in reasons["missing.png"]
    stored = files_under(d.folder)
    assert len(stored) == 2 and all(p.parent == d.root / "ants" for p in stored)  # nothing left in incoming


def test_class_names_are_checked_and_never_become_paths(tmp_path):
    d = Draft(tmp_path / "visitor" / ".draft")
    for bad in ("../x", "..", "a/b", "", "   ", ".hidden", "train", "VAL", "x" * 41, None, ["ants"]):
        with pytest.raises(DatasetError):
            d.add_class(bad)
    assert d.add_class("  honey   bee ") == "honey bee"
    assert d.add_class("Ameise-1") == "Ameise-1"
    with pytest.raises(DatasetError, match="already a class"):
        d.add_class("HONEY BEE")
    for cls in ("../x", "wasps", None):  # only a listed class reaches a path
        with pytest.raises(DatasetError, match="choose a class from the list"):
            d.add_images(cls, images(tmp_path, "ants", 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picked", "visitor"]
    assert d.classes() == ["Ameise-1", "honey bee"]


def test_rename_and_remove_keep_the_images_where_they_belong(tmp_path):
    d = filled(tmp_path, {"ants": 3, "bees": 2})
    assert d.rename_class("ants", "Ants") == "Ants"  # a change of case is a rename, not a clash
    with pytest.raises(DatasetError, match="already a class"):
        d.rename_class("Ants", "bees")
    with pytest.raises(DatasetError):
        d.rename_class("Ants", "../bees")
    assert d.counts() == {"Ants": 3, "bees": 2}
    d.remove_class("bees")
    assert d.counts() == {"Ants": 3}
    assert files_under(d.folder) == set((d.root / "Ants").iterdir())
    with pytest.raises(DatasetError, match="at least 2 classes"):
        d.finish(tmp_path / "data", "x")
    assert not (tmp_path / "data").exists()


def test_a_class_too_small_to_split_is_named_and_nothing_is_published(tmp_path):
    d = filled(tmp_path, {"ants": 3, "bees": 1})
    assert d.split_preview()["bees"] == (1, 0)
    with pytest.raises(DatasetError, match="'bees/' has 1 readable image"):
        d.finish(tmp_path / "data", "x")
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_caps_on_classes_and_images(tmp_path, monkeypatch):
    monkeypatch.setattr(draft_module, "MAX_CLASSES", 2)
    monkeypatch.setattr(draft_module, "MAX_IMAGES", 3)
    d = filled(tmp_path, {"ants": 2})
    d.add_class("bees")
    with pytest.raises(DatasetError, match="at most 2 classes"):
        d.add_class("wasps")
    added, skipped = d.add_images("bees", images(tmp_path, "bees", 3))
    assert added == 1
    assert [s.reason for s in skipped] == ["the draft already holds the limit of 3 images"] * 2


def test_the_draft_is_the_visitors_own_and_becomes_their_dataset(tmp_path):
    settings = Settings(data_root=tmp_path / "data", weights_dir=tmp_path / "weights")
    me, other = Visitor("browser:" + "a" * 32), Visitor("browser:" + "b" * 32)
    mine = catalog.draft(settings, me)
    mine.add_class("ants")
    mine.add_class("bees")
    for cls in ("ants", "bees"):
        mine.add_images(cls, images(tmp_path, cls, 3))
    assert catalog.draft(settings, other).classes() == []
    report = mine.finish(catalog.upload_folder(settings, me), "built")
    assert report.path in [c.path for c in catalog.dataset_choices(settings, me)]
    assert report.path not in [c.path for c in catalog.dataset_choices(settings, other)]
    # The draft itself is not a dataset anyone can pick.
    assert not any(".draft" in c.path for c in catalog.dataset_choices(settings, me))
