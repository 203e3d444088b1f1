"""Every file the app writes has an owner and a lifetime: budgets refuse with advice, a visitor
deletes only their own things, idle visitors expire, leftovers of killed work are swept at start,
and downloads stay bounded. Time is passed in (`now`), never waited for."""
import dataclasses
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from app_fixtures import api_client, app_settings, running_app
from bees_ants import catalog, housekeeping
from bees_ants.checkpoint import side_file
from bees_ants.housekeeping import DAY, BudgetExceeded, Housekeeper
from bees_ants.settings import Settings
from bees_ants.visitors import Visitor
from conftest import make_dataset

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

ALICE, BOB = Visitor("browser:" + "a" * 32), Visitor("browser:" + "b" * 32)
CAROL = Visitor("hf:carol", "carol")


def settings_in(root: Path, **budgets) -> Settings:
    return Settings(data_root=root / "data", weights_dir=root / "weights", **budgets)


def own_dataset(settings: Settings, visitor: Visitor, name: str) -> Path:
    return make_dataset(catalog.upload_folder(settings, visitor) / name, n_train=2, n_val=1)


def own_model(settings: Settings, visitor: Visitor, name: str, size: int = 100) -> Path:
    path = catalog.checkpoint_folder(settings, visitor) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    return path


def aged(path: Path, seconds: float) -> Path:
    """`path` and everything in it last written `seconds` ago."""
    when = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (when, when), follow_symlinks=False)
    return path


# -- budgets -------------------------------------------------------------------------------------

def test_a_visitor_at_their_dataset_budget_is_told_to_delete_one(tmp_path):
    settings = settings_in(tmp_path, max_datasets=2)
    for name in ("cats", "dogs"):
        own_dataset(settings, ALICE, name)
    with pytest.raises(BudgetExceeded, match="you have 2 datasets, the most a visitor may keep; delete one under"):
        catalog.room_for_dataset(settings, ALICE)
    assert catalog.room_for_dataset(settings, BOB) == catalog.upload_folder(settings, BOB)  # Bob has room
    catalog.delete_dataset(settings, ALICE, str(catalog.upload_folder(settings, ALICE) / "cats"))
    assert catalog.room_for_dataset(settings, ALICE)  # room again


def test_a_draft_cannot_become_an_eleventh_dataset(tmp_path):
    settings = settings_in(tmp_path, max_datasets=1)
    own_dataset(settings, ALICE, "first")
    draft = catalog.draft(settings, ALICE)
    with pytest.raises(BudgetExceeded, match="you have 1 datasets"):
        draft.finish(catalog.room_for_dataset(settings, ALICE), "second")


def test_models_bytes_and_the_whole_server_have_budgets(tmp_path):
    settings = settings_in(tmp_path, max_models=2, visitor_mb=1, space_mb=3)
    own_model(settings, ALICE, "a.pt"), own_model(settings, ALICE, "b.pt")
    with pytest.raises(BudgetExceeded, match="you have 2 models, the most a visitor may keep; delete one under "
                                             "Evaluate & export › Delete this model"):
        catalog.room_for_model(settings, ALICE)

    own_model(settings, BOB, "big.pt", size=1024**2 + 1)  # over Bob's 1 MB
    with pytest.raises(BudgetExceeded, match="your datasets and models take 1.0 MB, past the 1.0 MB a visitor"):
        catalog.room_for_model(settings, BOB)
    with pytest.raises(BudgetExceeded, match=r"take 0.0 MB \(and this one 1.0 MB more\), past the 1.0 MB"):
        catalog.room_for_dataset(settings, ALICE, incoming_bytes=1024**2)

    fresh = dataclasses.replace(settings, weights_dir=tmp_path / "weights2")
    for i, visitor in enumerate((ALICE, BOB, CAROL)):  # 3 visitors with 1 MB each fill the server's 3 MB
        own_model(fresh, visitor, "m.pt", size=1024**2 - 1000 * i)
    with pytest.raises(BudgetExceeded, match="this server's room for visitors' datasets and models is full"):
        catalog.room_for_dataset(fresh, Visitor("browser:" + "d" * 32), incoming_bytes=1024**2)


def test_hard_linked_draft_images_are_counted_once(tmp_path):
    settings = settings_in(tmp_path)
    folder = own_dataset(settings, ALICE, "cats")
    images = sorted(p for p in folder.rglob("*.png"))
    before = housekeeping.visitor_bytes(settings, ALICE.key)
    os.link(images[0], folder.parent / "again.png")
    assert housekeeping.visitor_bytes(settings, ALICE.key) == before


# -- deleting your own ---------------------------------------------------------------------------

def test_only_your_own_dataset_and_model_can_be_deleted(tmp_path):
    settings = settings_in(tmp_path)
    shared = make_dataset(settings.data_root / "shared")
    mine = own_dataset(settings, ALICE, "cats")
    for visitor, path in ((BOB, mine), (ALICE, shared), (ALICE, "/etc"), (ALICE, 7)):
        with pytest.raises(catalog.CatalogError, match="choose one of your own datasets"):
            catalog.delete_dataset(settings, visitor, str(path) if path != 7 else 7)
    with pytest.raises(catalog.CatalogError, match="your training run is using this dataset"):
        catalog.delete_dataset(settings, ALICE, str(mine), in_use=(str(mine),))
    assert catalog.delete_dataset(settings, ALICE, str(mine)) == "cats"
    assert not mine.exists() and shared.exists()

    model = own_model(settings, ALICE, "m.pt")
    extras = [side_file(model), Path(f"{model}.resume"), model.with_suffix(".pt2"), model.with_suffix(".onnx")]
    for p in extras:
        p.write_bytes(b"x")
    shared_model = settings.weights_dir / "shared.pt"
    shared_model.write_bytes(b"x")
    for visitor, path in ((BOB, model), (ALICE, shared_model)):
        with pytest.raises(catalog.CatalogError, match="choose one of your own models"):
            catalog.delete_checkpoint(settings, visitor, str(path))
    with pytest.raises(catalog.CatalogError, match="your training run is writing this model"):
        catalog.delete_checkpoint(settings, ALICE, str(model), in_use=(str(model),))
    assert catalog.delete_checkpoint(settings, ALICE, str(model)) == "m.pt"
    assert not any(p.exists() for p in [model, *extras]) and shared_model.exists()


# -- expiry --------------------------------------------------------------------------------------

def test_an_idle_anonymous_visitor_expires_and_an_active_one_does_not(tmp_path):
    settings = settings_in(tmp_path, idle_days=7, signed_in_idle_days=90)
    now = time.time()
    for visitor in (ALICE, BOB, CAROL):
        own_dataset(settings, visitor, "set")
        own_model(settings, visitor, "m.pt")
        housekeeping.touch(settings, visitor, now=now - 8 * DAY)  # all last seen 8 days ago
    housekeeping.touch(settings, BOB, now=now - DAY)  # Bob came back yesterday
    forgotten = []
    removed = housekeeping.expire_visitors(settings, now, forget=forgotten.append)
    assert removed == forgotten == [ALICE.key]
    assert not ALICE.folder(settings.data_root).exists() and not ALICE.folder(settings.weights_dir).exists()
    for visitor in (BOB, CAROL):  # active; signed in (90 days)
        assert (visitor.folder(settings.data_root) / "set").is_dir()
        assert (visitor.folder(settings.weights_dir) / "m.pt").is_file()
    # Carol, signed in, goes after her own 90 days; an idle visitor with a job running stays.
    later = now + 90 * DAY
    assert housekeeping.expire_visitors(settings, later, busy=lambda key: key == CAROL.key) == [BOB.key]
    assert housekeeping.expire_visitors(settings, later) == [CAROL.key]


def test_things_from_before_visits_were_recorded_get_the_longer_lifetime_from_now(tmp_path):
    settings = settings_in(tmp_path, idle_days=7, signed_in_idle_days=90)
    aged(own_dataset(settings, ALICE, "old"), 30 * DAY)
    now = time.time()
    assert housekeeping.expire_visitors(settings, now) == []
    assert housekeeping.expire_visitors(settings, now + 30 * DAY) == []  # could be signed in
    assert housekeeping.expire_visitors(settings, now + 91 * DAY) == [ALICE.key]


def test_a_visitor_using_the_app_throughout_a_short_lifetime_never_expires(tmp_path):
    # Visits are recorded at most every ten minutes; a lifetime shorter than that (an operator's
    # 3 minutes, as bench.soak runs) must still count every visit that matters.
    settings = settings_in(tmp_path, idle_days=3 / 1440)
    own_model(settings, ALICE, "m.pt")
    start = time.time()
    for minute in range(12):  # a request a minute for 12 minutes, the sweep just after each
        now = start + 60 * minute
        housekeeping.touch(settings, ALICE, now=now)
        assert housekeeping.expire_visitors(settings, now + 1) == [], minute
    assert housekeeping.expire_visitors(settings, now + 4 * 60) == [ALICE.key]  # gone 3 minutes after the last


def test_signed_in_visitors_can_be_kept_for_ever(tmp_path):
    settings = settings_in(tmp_path, signed_in_idle_days=0)
    own_model(settings, CAROL, "m.pt")
    housekeeping.touch(settings, CAROL, now=time.time() - 1000 * DAY)
    assert housekeeping.expire_visitors(settings, time.time()) == []


def test_an_expired_visitors_job_record_is_forgotten_and_a_running_one_kept(tmp_path):
    from bees_ants.jobs import JobManager
    from conftest import small_config
    settings = settings_in(tmp_path, idle_days=7)
    manager = JobManager(state_dir=tmp_path / "jobs")
    manager.submit(ALICE.key, small_config(tmp_path / "no-such-data", tmp_path))
    assert list(manager.follow(ALICE.key))[-1].status == "failed"
    own_model(settings, ALICE, "m.pt")
    housekeeping.touch(settings, ALICE, now=time.time() - 8 * DAY)
    assert list((tmp_path / "jobs").glob("job-*.json"))
    keeper = Housekeeper(settings, tmp_path / "cache", forget=manager.forget)
    keeper.sweep()
    assert manager.latest(ALICE.key) is None and not list((tmp_path / "jobs").glob("job-*.json"))
    assert not ALICE.folder(settings.weights_dir).exists()


# -- leftovers -----------------------------------------------------------------------------------

def test_a_kill_during_an_import_is_swept_when_the_app_starts(tmp_path):
    from bees_ants.ui import build_app
    settings = app_settings(tmp_path)
    mine = ALICE.folder(settings.data_root)
    make_dataset(mine / ".import-k1ll3d" / "files")
    killed_import = aged(mine / ".import-k1ll3d", 3600)
    shared_import = aged(make_dataset(settings.data_root / ".import-0ld"), 3600)
    incoming = mine / ".draft" / "incoming"
    incoming.mkdir(parents=True)
    checks = [incoming / name for name in ("check-1.png", "check-2.jpg")]
    for p in checks:
        p.write_bytes(b"half an image")
        aged(p, 3600)
    half_model = aged(own_model(settings, ALICE, ".m.pt.x1y2.tmp"), 3600)
    # Work going on now, and datasets whose names look like leftovers, stay.
    running_import = make_dataset(mine / ".import-running")
    aged(running_import, 3600)
    (running_import / "train" / "just-written.png").write_bytes(b"x")
    named_like_one = aged(own_dataset(settings, ALICE, "check-cats"), 3600)
    fresh_check = incoming / "check-now.png"
    fresh_check.write_bytes(b"x")

    build_app(settings)
    assert not killed_import.exists() and not shared_import.exists() and not half_model.exists()
    assert not any(p.exists() for p in checks)
    assert running_import.is_dir() and named_like_one.is_dir() and fresh_check.is_file()


def test_temp_files_go_after_their_time(tmp_path):
    settings = settings_in(tmp_path, temp_minutes=60)
    keeper = Housekeeper(settings, tmp_path / "cache")
    downloads, images = keeper.downloads, keeper.images
    model = own_model(settings, ALICE, "m.pt")
    copy = Path(keeper.download_copy(ALICE, str(model)))
    images.mkdir()
    image = images / "x.jpeg"
    image.write_bytes(b"jpeg")
    keeper.sweep(now=time.time() + 59 * 60)
    assert copy.is_file() and image.is_file()
    keeper.sweep(now=time.time() + 61 * 60)
    assert not copy.exists() and not image.exists() and model.is_file()
    keeper.sweep(now=time.time() + 200 * 60)
    assert list(downloads.rglob("*")) == []  # the empty folders go too


def test_what_gradio_keeps_in_its_cache_goes_after_the_uploads_lifetime(tmp_path):
    # Gradio 6's own sweep stops for good under concurrent uploads; the app sweeps its cache folder:
    # uploads (a folder per content hash), the empty tmp* file its File box leaves per file, and
    # their folders, but not the app's own temp folders (their own, shorter, lifetime).
    settings = settings_in(tmp_path, upload_minutes=60, temp_minutes=1)
    cache = tmp_path / "cache"
    keeper = Housekeeper(settings, cache)
    old_upload, new_upload = cache / "a1b2" / "photo.png", cache / "c3d4" / "photo.png"
    left_by_file_box, fresh_tmp = cache / "tmpk8x2_q", cache / "tmp_now"
    for f in (old_upload, new_upload, left_by_file_box, fresh_tmp):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"" if f.name.startswith("tmp") else b"png")
    keeper.images.mkdir()
    later = time.time() + 61 * 60
    for f in (new_upload, fresh_tmp):  # arrived an hour after the others
        f.write_bytes(f.read_bytes())
        os.utime(f, (later, later))
    keeper.sweep(now=later)
    assert not old_upload.parent.exists() and not left_by_file_box.exists()
    assert new_upload.is_file() and fresh_tmp.is_file() and keeper.images.is_dir()


def test_gradio_forgets_the_files_the_app_swept(tmp_path):
    from bees_ants.ui import build_app, forget_removed_files
    app = build_app(app_settings(tmp_path))
    gone, there = tmp_path / "gone.png", tmp_path / "there.png"
    there.write_bytes(b"png")
    app.temp_file_sets[0].update({str(gone), str(there)})
    forget_removed_files(app)
    assert str(there) in app.temp_file_sets[0] and str(gone) not in app.temp_file_sets[0]


def test_a_download_of_a_model_trained_long_ago_gets_its_full_time(tmp_path):
    # The copy is a hard link: it shares the checkpoint's modification time (when it was trained).
    settings = settings_in(tmp_path, temp_minutes=60)
    keeper = Housekeeper(settings, tmp_path / "cache")
    model = aged(own_model(settings, ALICE, "m.pt"), 3 * DAY)
    copy = Path(keeper.download_copy(ALICE, str(model)))
    keeper.sweep(now=time.time() + 59 * 60)
    assert copy.is_file()
    keeper.sweep(now=time.time() + 61 * 60)
    assert not copy.exists() and model.is_file()


# -- downloads through the app -------------------------------------------------------------------

@pytest.fixture(scope="module")
def download_server(tmp_path_factory, trained_checkpoint):
    root = tmp_path_factory.mktemp("downloads")
    settings = dataclasses.replace(app_settings(root), keep_downloads=3)
    settings.weights_dir.mkdir(parents=True)
    # A name of its own: other apps (other test runs) may share Gradio's cache folder.
    model = shutil.copy(trained_checkpoint, settings.weights_dir / f"shared-{uuid.uuid4().hex}.pt")
    with running_app(settings) as url:
        yield url, str(model), root


def copies(model: str) -> tuple[int, int]:
    """How many files of `model` (or its export) Gradio's cache folder holds, and their bytes."""
    from gradio.utils import get_upload_folder
    found = [p for p in Path(get_upload_folder()).rglob(Path(model).stem + ".*") if p.is_file()]
    return len(found), sum(p.stat().st_size for p in found)


def test_repeated_downloads_leave_a_bounded_number_of_files(download_server):
    url, model, root = download_server
    client = api_client(url, download_files=str(root / "client"))
    for _ in range(6):  # twice the 3 kept, of each kind: enough to show the oldest go
        for endpoint in ("/download_checkpoint", "/export_onnx"):
            client.predict(model, api_name=endpoint)
    count, size = copies(model)
    largest = max(Path(model).stat().st_size, Path(model).with_suffix(".onnx").stat().st_size)
    assert 1 <= count <= 3 and size <= 3 * largest  # 12 downloads, the newest 3 kept
