"""The app through the real client (gradio_client) against an in-process launched server, plus
the catalog and views it is wired to."""
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app_fixtures import app_settings, running_app
from bees_ants import catalog, views
from bees_ants.catalog import CatalogError, Settings
from bees_ants.jobs import Job
from bees_ants.train import EpochRecord, TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations

# Outputs of /train, in order (the page's `seen` state is not part of the API).
NOTICE, STATUS, DATASET, CURVES, TABLE, RESULT, GRID, MODEL, MODEL_NOTE = range(9)


def train_args(dataset_dir, **kw):
    args = dict(dataset=str(dataset_dir), arch="resnet18", mode="fixed", backbone="none", epochs=3, lr=0.02,
                momentum=0.9, batch_size=4, step_size=7, gamma=0.1)
    return {**args, **kw}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = app_settings(tmp_path_factory.mktemp("app"))
    with running_app(settings) as url:
        yield Client(url, verbose=False), settings


@pytest.fixture(scope="module")
def first_run(server):
    """Every streamed output of one short training run started through /train."""
    client, settings = server
    job = client.submit(**train_args(settings.dataset_dirs[0]), api_name="/train")
    return list(job)


def rows(table_output):
    return table_output["data"]


def test_train_streams_per_epoch_updates_until_done(first_run):
    assert first_run[0][NOTICE] == ""  # started: no refusal
    first_status = first_run[0][STATUS]
    assert "Scanning **tiny**" in first_status or "Training:" in first_status  # feedback before any epoch
    assert "device: CPU" in first_status
    seen_rows = [len(rows(out[TABLE])) for out in first_run]
    assert seen_rows == sorted(seen_rows) and seen_rows[-1] == 3
    assert any(0 < n < 3 for n in seen_rows), "no update arrived between the first epoch and the end"
    assert any("Training: epoch 1 of 3 done" in out[STATUS] and "ETA" in out[STATUS] for out in first_run)
    final = first_run[-1]
    assert "Finished 3 epochs" in final[STATUS] and "best val acc" in final[STATUS]
    assert "train **16** images (ants 8, bees 8)" in final[DATASET]
    assert [r[0] for r in rows(final[TABLE])] == [3, 2, 1]  # newest first
    assert final[CURVES]["type"] == "matplotlib"
    assert "Best val accuracy" in final[RESULT] and ".pt" in final[RESULT]
    assert final[GRID]["visible"] and Path(final[GRID]["value"]).is_file()  # the val predictions grid


def test_finished_run_checkpoint_is_listed_newest_first(server, first_run):
    client, _ = server
    choices = first_run[-1][MODEL]["choices"]
    label, path = choices[0]
    assert first_run[-1][MODEL]["value"] == path and path in first_run[-1][RESULT]
    assert label.startswith("resnet18 · fixed · val ") and "%" in label
    picker, note = client.predict(api_name="/models")
    assert picker["choices"][0] == [label, path] and note == ""


def test_a_new_page_catches_up_with_the_finished_run(server, first_run):
    client, _ = server
    fresh = Client(client.src, verbose=False)  # a new session, like a reload or a second browser
    status, _, _, table, result, *_ = fresh.predict(api_name="/follow")
    assert status == first_run[-1][STATUS] and rows(table) == rows(first_run[-1][TABLE]) and result


def test_predict_labels_each_file_and_explains_unreadable_ones(server, first_run, tmp_path):
    client, settings = server
    model = first_run[-1][MODEL]["value"]
    images = sorted((settings.dataset_dirs[0] / "val").rglob("*.png"))[:3]
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    gallery, confidences, problems, table = client.predict(
        model, [handle_file(str(p)) for p in [*images, junk]], api_name="/predict")
    assert len(gallery) == 3 and all(" · " in g["caption"] and g["caption"].endswith("%") for g in gallery)
    assert {c["label"] for c in confidences["confidences"]} == {"ants", "bees"}
    by_file = {r[0]: r for r in rows(table)}
    assert [by_file[p.name][1] in ("ants", "bees") for p in images] == [True] * 3
    assert "not an image" in by_file["notes.txt"][3]
    assert "1 could not be read" in problems and "notes.txt" in problems


def test_predict_refuses_models_outside_the_weights_folder(server, first_run, tmp_path):
    client, settings = server
    image = next((settings.dataset_dirs[0] / "val").rglob("*.png"))
    gallery, _, problems, table = client.predict("/etc/passwd", [handle_file(str(image))], api_name="/predict")
    assert gallery == [] and rows(table) == [] and "choose a model from the list" in problems
    with pytest.raises(AppError, match="choose a model from the list"):
        client.predict("/etc/passwd", api_name="/random_val")


def test_random_val_predictions(server, first_run):
    client, _ = server
    grid = client.predict(first_run[-1][MODEL]["value"], api_name="/random_val")
    assert Path(grid["value"]).is_file()


def test_second_train_is_refused_and_cancel_keeps_the_best_checkpoint(server, first_run):
    client, settings = server
    # Fine-tuning for many epochs: it is certainly still running when we act on its first record.
    long_run = client.submit(**train_args(settings.dataset_dirs[0], mode="finetune", epochs=500), api_name="/train")
    for out in long_run:
        if rows(out[TABLE]):
            break
    refused = client.predict(**train_args(settings.dataset_dirs[0]), api_name="/train")
    assert "Not started" in refused[NOTICE] and "already running" in refused[NOTICE]
    assert "of 500" in refused[NOTICE]
    assert "Cancel requested" in client.predict(api_name="/cancel")
    final = long_run.result()
    assert "Cancelled after" in final[STATUS] and "of 500 epochs" in final[STATUS]
    assert "Checkpoint:" in final[RESULT]
    label, _ = final[MODEL]["choices"][0]
    assert label.startswith("resnet18 · finetune") and label.endswith("(cancelled)")
    assert "Nothing to cancel" in client.predict(api_name="/cancel")


def test_error_in_the_training_thread_is_shown_and_the_app_keeps_serving(server, first_run):
    client, settings = server
    final = client.submit(**train_args(settings.dataset_dirs[1]), api_name="/train").result()
    assert "Training failed" in final[STATUS] and "at least 2" in final[STATUS]
    assert final[RESULT] == ""
    picker, _ = client.predict(api_name="/models")  # still serving
    assert picker["choices"]


def test_requests_for_things_the_server_does_not_offer_are_refused(server, first_run):
    client, settings = server
    for bad in (dict(dataset="/etc"), dict(backbone="/etc/passwd"), dict(epochs=None)):
        refused = client.predict(**train_args(settings.dataset_dirs[0], **bad), api_name="/train")
        assert "Not started" in refused[NOTICE]
    with pytest.raises(AppError, match="not in the list of choices"):  # fixed lists: Gradio checks them
        client.predict(**train_args(settings.dataset_dirs[0], arch="vgg99"), api_name="/train")


# -- catalog and views, no server ----------------------------------------------------------------

def test_catalog_offers_tutorial_data_root_folders_and_extra_dirs(tmp_path):
    settings = app_settings(tmp_path)
    (tmp_path / "data" / "mine" / "train" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "mine" / "val").mkdir()
    (tmp_path / "data" / "not_a_dataset").mkdir()
    choices = catalog.dataset_choices(settings)
    assert [Path(c.path).name for c in choices] == ["hymenoptera_data", "mine", "tiny", "one_class"]
    assert choices[0].download_to == str(tmp_path / "data") and "downloaded on first use" in choices[0].label
    assert choices[2].label == "tiny · ants, bees"
    assert catalog.default_dataset(choices).path == str(tmp_path / "data" / "mine")
    with pytest.raises(CatalogError):
        catalog.find_dataset(settings, "/etc")


def test_settings_from_environment(tmp_path):
    env = {"BEES_ANTS_DATASETS": f"{tmp_path / 'a'}:{tmp_path / 'b'}", "BEES_ANTS_WEIGHTS_DIR": "w",
           "BEES_ANTS_BACKBONE_WEIGHTS": str(tmp_path)}
    settings = Settings.from_env(env)
    assert settings.dataset_dirs == (tmp_path / "a", tmp_path / "b") and settings.weights_dir == Path("w")
    assert settings.backbone_weights == tmp_path and settings.data_root == Path("data")


def test_backbone_default_is_a_local_file_for_the_arch(tmp_path):
    for name in ("mobilenet_v2-imagenet.pth", "mobilenet_v3_large-x.pth", "readme.txt"):
        (tmp_path / name).write_bytes(b"")
    choices = catalog.backbone_choices(Settings(backbone_weights=tmp_path))
    assert [c.value for c in choices][-2:] == ["imagenet", "none"]
    assert [c.arch for c in choices[:2]] == ["mobilenet_v2", "mobilenet_v3_large"]
    assert catalog.default_arch(choices) == "mobilenet_v2"
    assert catalog.backbone_for_arch(choices, "mobilenet_v3_large").value.endswith("mobilenet_v3_large-x.pth")
    assert catalog.backbone_for_arch(choices, "resnet18").value == "imagenet"
    no_files = catalog.backbone_choices(Settings())
    assert catalog.default_arch(no_files) == "resnet18" and no_files[0].value == "imagenet"
    assert catalog.find_backbone(Settings(), "none").weights is None


def test_status_line_for_each_stage(tmp_path):
    job = Job(id=1, config=TrainConfig(data_dir=str(tmp_path / "bees"), epochs=4), device="CPU (2 threads)",
              started=0.0, status="running")
    assert "epoch 1 of 4 running" in views.status_markdown(job, now=5.0)
    job.history = [EpochRecord(1, 4, 0.7, 0.6, 0.5, 0.8, 0.001, 30.0, 0.8, 1)]
    line = views.status_markdown(job, now=75.0)
    assert "epoch 1 of 4 done" in line and "elapsed 1:15" in line and "ETA 1:30" in line and "80.0%" in line
    job.status, job.error, job.finished = "failed", "boom", 80.0
    assert "Training failed" in views.status_markdown(job) and "boom" in views.status_markdown(job)
    assert "No training yet" in views.status_markdown(None)
