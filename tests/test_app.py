"""The app through the real client (gradio_client) against an in-process launched server, plus
the catalog and views it is wired to."""
import re
import shutil
from pathlib import Path

import pytest

from bees_ants.catalog import DATASET_REFUSAL
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app_fixtures import api_client, app_settings, dataset_zip, running_app
from conftest import IMAGE_SIZE
from bees_ants import catalog
from bees_ants.catalog import CatalogError, Settings
from bees_ants.checkpoint import load_checkpoint, save_checkpoint
from bees_ants.device import describe_device, pick_device
from bees_ants.figures import confusion_figure
from bees_ants.jobs import Job
from bees_ants.predict import Evaluation
from bees_ants.train import EpochRecord, TrainConfig
from bees_ants.views.evaluation import evaluation_markdown, per_class_table
from bees_ants.views.training import status_markdown
from bees_ants.visitors import Visitor

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations


def train_args(dataset_dir, **kw):
    args = dict(dataset=str(dataset_dir), arch="resnet18", mode="fixed", backbone="none", epochs=3, lr=0.02,
                momentum=0.9, batch_size=4, step_size=7, gamma=0.1, frozen_epochs=5)
    return {**args, **kw}


def output_ids(client: Client, endpoint: str) -> list[str]:
    """The elem_ids of an endpoint's outputs, in the order the API returns them (state is not returned)."""
    components = {c["id"]: c for c in client.config["components"]}
    dependency = next(d for d in client.config["dependencies"] if d["api_name"] == endpoint)
    return [components[i]["props"]["elem_id"] for i in dependency["outputs"] if not components[i]["skip_api"]]


def named(client: Client, endpoint: str, outputs) -> dict:
    """An endpoint's outputs keyed by the elem_id of the widget each one updates, so tests name what
    they check instead of mirroring the order. Only /models and /predict, whose order README
    documents for gradio_client users, are unpacked by position."""
    return dict(zip(output_ids(client, endpoint), outputs, strict=True))


def call(client: Client, endpoint: str, *args, **kwargs) -> dict:
    return named(client, endpoint, client.predict(*args, api_name=f"/{endpoint}", **kwargs))


def visitor_of(client: Client) -> Visitor:
    """The visitor the app sees behind an API client: its session."""
    return Visitor(f"session:{client.session_hash}")


def train(client: Client, dataset_dir, **kw) -> list[dict]:
    """Every streamed output of a /train request, once it is over."""
    return [named(client, "train", out) for out in client.submit(**train_args(dataset_dir, **kw), api_name="/train")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = app_settings(tmp_path_factory.mktemp("app"))
    with running_app(settings) as url:
        yield api_client(url), settings


@pytest.fixture(scope="module")
def first_run(server):
    """Every streamed output of one short training run started through /train."""
    client, settings = server
    # Fine-tuning: each epoch takes a moment, so the page sees every epoch arrive (fixed-mode epochs
    # on cached features can all finish between two redraws).
    return train(client, settings.dataset_dirs[0], mode="finetune")


@pytest.fixture(scope="module")
def first_model(first_run):
    return first_run[-1]["model"]["value"]


def rows(table_output):
    return table_output["data"]


def test_train_streams_per_epoch_updates_until_done(first_run):
    assert first_run[0]["notice"] == ""  # started: no refusal
    first_status = first_run[0]["status"]
    assert "Scanning **tiny**" in first_status  # feedback before any epoch: the job starts with the scan
    assert f"device: {describe_device(pick_device())}" in first_status
    seen_rows = [len(rows(out["history"])) for out in first_run]
    assert seen_rows == sorted(seen_rows) and seen_rows[-1] == 3
    assert any(0 < n < 3 for n in seen_rows), "no update arrived between the first epoch and the end"
    assert any("Training: epoch 1 of 3 done" in out["status"] and "ETA" in out["status"] for out in first_run)
    final = first_run[-1]
    assert "Finished 3 epochs" in final["status"] and "best val acc" in final["status"]
    assert "train **16** images (ants 8, bees 8)" in final["dataset-info"]
    assert [r[0] for r in rows(final["history"])] == [3, 2, 1]  # newest first
    assert final["curves"].count("<circle") == 2 * 2 * 3  # loss and accuracy, train and val, 3 epochs
    assert "Best val accuracy" in final["result"]
    assert final["val-grid"]["visible"] and Path(final["val-grid"]["value"]).is_file()  # the val predictions grid


def test_finished_run_refreshes_the_model_pickers_of_the_other_tabs(server, first_run, first_model):
    client, _ = server
    final = first_run[-1]
    assert final["eval-model"]["value"] == first_model and Path(first_model).name in final["result"]
    assert final["model"]["choices"][0] == [catalog.checkpoint_label(load_checkpoint(first_model)), first_model]
    assert all(out["model"] == {"__type__": "update"} for out in first_run[:-1])  # untouched while it trains
    picker, note, eval_picker = client.predict(api_name="/models")  # as README shows it
    assert picker["choices"][0] == eval_picker["choices"][0] == final["model"]["choices"][0] and note == ""


def test_a_new_page_catches_up_with_the_finished_run(server, first_run):
    client, _ = server
    # An API client is identified by its session: a new session is someone else, who sees no run
    # (a browser keeps its identity across reloads: test_e2e_browser's second page catches up).
    stranger = api_client(client.src)
    assert "No training yet" in call(stranger, "follow")["status"]
    # The same session coming back (a new Client object) is the same visitor: its page already
    # shows the finished run, so following it draws nothing new, and the run is still theirs.
    same = api_client(client.src)
    same.session_hash = client.session_hash
    assert set(call(same, "follow").values()) == {None}
    assert "Nothing to cancel" in same.predict(api_name="/cancel")
    picker, *_ = same.predict(api_name="/models")
    assert picker["value"] == first_run[-1]["model"]["value"]


def test_predict_labels_each_file_and_explains_unreadable_ones(server, first_model, tmp_path):
    client, settings = server
    images = sorted((settings.dataset_dirs[0] / "val").rglob("*.png"))[:3]
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    gallery, confidences, problems, table = client.predict(  # as README shows it
        first_model, [handle_file(str(p)) for p in [*images, junk]], api_name="/predict")
    assert len(gallery) == 3 and all(" · " in g["caption"] and g["caption"].endswith("%") for g in gallery)
    assert {c["label"] for c in confidences["confidences"]} == {"ants", "bees"}
    by_file = {r[0]: r for r in rows(table)}
    assert {by_file[p.name][1] for p in images} <= {"ants", "bees"}
    assert "not an image" in by_file["notes.txt"][3]
    assert "1 could not be read" in problems and "notes.txt" in problems


def test_predict_refuses_models_outside_the_weights_folder(server, first_run):
    client, settings = server
    image = next((settings.dataset_dirs[0] / "val").rglob("*.png"))
    gallery, _, problems, table = client.predict("/etc/passwd", [handle_file(str(image))], api_name="/predict")
    assert gallery == [] and rows(table) == [] and "choose a model from the list" in problems
    with pytest.raises(AppError, match="choose a model from the list"):
        client.predict("/etc/passwd", api_name="/random_val")


def test_random_val_predictions(server, first_model):
    client, _ = server
    grid = client.predict(first_model, api_name="/random_val")
    assert Path(grid["value"]).is_file()


def test_second_train_is_refused_and_cancel_keeps_the_best_checkpoint(server, first_run):
    client, settings = server
    # Fine-tuning for many epochs: it is certainly still running when we act on its first record.
    long_run = client.submit(**train_args(settings.dataset_dirs[0], mode="finetune", epochs=500), api_name="/train")
    for out in long_run:
        if rows(named(client, "train", out)["history"]):
            break
    refused = call(client, "train", **train_args(settings.dataset_dirs[0]))["notice"]
    assert "Not started" in refused and "you already have a training job" in refused and "of 500" in refused
    assert "Cancel requested" in client.predict(api_name="/cancel")
    final = named(client, "train", long_run.result())
    assert "Cancelled after" in final["status"] and "of 500 epochs" in final["status"]
    assert "Checkpoint:" in final["result"]
    label, _ = final["model"]["choices"][0]
    assert label.startswith("resnet18 · finetune") and label.endswith("(cancelled)")
    assert "Nothing to cancel" in client.predict(api_name="/cancel")


def test_error_in_the_training_thread_is_shown_and_the_app_keeps_serving(server, first_run):
    client, settings = server
    final = train(client, settings.dataset_dirs[1])[-1]
    assert "Training failed" in final["status"] and "at least 2" in final["status"]
    assert final["result"] == ""
    picker, *_ = client.predict(api_name="/models")  # still serving
    assert picker["choices"]


@pytest.mark.parametrize("request_, reason", [
    (dict(dataset="/etc"), DATASET_REFUSAL),
    (dict(backbone="/etc/passwd"), "choose starting weights from the list"),
    (dict(epochs=None), "every training setting needs a value"),
], ids=["dataset", "backbone", "empty-setting"])
def test_requests_for_things_the_server_does_not_offer_are_refused(server, first_run, request_, reason):
    client, settings = server
    notice = call(client, "train", **train_args(settings.dataset_dirs[0], **request_))["notice"]
    assert notice == f"⚠ **Not started:** {reason}"


def test_train_takes_the_form_by_name_and_by_position(server, first_run):
    """/train's parameters keep their names and order: gradio_client users pass them either way."""
    client, settings = server
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/train"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == [
        "dataset", "arch", "mode", "backbone", "epochs", "lr", "momentum", "batch_size", "step_size", "gamma",
        "frozen_epochs", "optimizer", "train_blocks", "patience", "stop_metric", "lr_schedule"]
    by_position = [str(settings.dataset_dirs[0]), "resnet18", "fixed", "none", None, 0.02, 0.9, 4, 7, 0.1, 5, "sgd", 0, 0,
                   "val_acc"]
    assert call(client, "train", *by_position)["notice"] == "⚠ **Not started:** every training setting needs a value"


def test_a_choice_outside_a_fixed_list_is_refused_by_gradio(server, first_run):
    client, settings = server
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(**train_args(settings.dataset_dirs[0], arch="vgg99"), api_name="/train")


def test_a_bug_is_not_passed_off_as_advice(server, first_run, monkeypatch):
    client, settings = server

    def broken(*args):
        raise ValueError("a bug in the server")

    monkeypatch.setattr(catalog, "find_dataset", broken)
    with pytest.raises(AppError, match="a bug in the server"):  # an error, not a "Not started" notice
        client.predict(**train_args(settings.dataset_dirs[0]), api_name="/train")


# -- your own dataset, evaluation, download and export -------------------------------------------

@pytest.fixture(scope="module")
def imported(server, tmp_path_factory):
    """The outputs of uploading a zip of three class folders (and a stray text file)."""
    client, _ = server
    archive = dataset_zip(tmp_path_factory.mktemp("upload") / "garden bugs.zip", {"ants": 5, "bees": 5, "wasps": 5},
                          {"bees/notes.txt": b"not an image"})
    return call(client, "import_dataset", handle_file(str(archive)))


@pytest.fixture(scope="module")
def bugs_model(server, imported):
    """A checkpoint trained on the uploaded dataset."""
    client, _ = server
    final = train(client, imported["dataset"]["value"], epochs=2)[-1]
    assert "Finished 2 epochs" in final["status"]
    return final["model"]["value"]


def test_uploaded_zip_becomes_a_selected_dataset(server, imported):
    client, settings = server
    path = str(visitor_of(client).folder(settings.data_root) / "garden_bugs")  # the uploader's own folder
    picker = imported["dataset"]
    assert picker["value"] == path and path in [value for _, value in picker["choices"]]
    info = imported["import-info"]
    assert "Imported `garden_bugs`" in info and "3 classes, 15 images" in info
    assert "| wasps | 4 | 1 |" in info and "80% train / 20% val" in info
    assert "`bees/notes.txt`: unsupported file type '.txt'" in info
    thumbs = imported["thumbs"]
    assert thumbs["visible"] and [t["caption"] for t in thumbs["value"]] == ["ants"] * 3 + ["bees"] * 3 + ["wasps"] * 3


def test_uploaded_dataset_classes_reach_the_checkpoint(server, bugs_model):
    client, _ = server
    shown = call(client, "model_info", bugs_model)
    card, curves = shown["model-card"], shown["model-curves"]
    assert "Classes:** ants, bees, wasps" in card and "`garden_bugs` (train 12 · val 3 images)" in card
    assert curves["visible"] and "<svg" in curves["value"]
    assert load_checkpoint(bugs_model).meta["class_names"] == ["ants", "bees", "wasps"]


@pytest.mark.parametrize("members, message", [
    ({"../evil.png": b"x", "/tmp/abs.png": b"x", "ants/a.png": b"x"}, "need at least 2 class folders with images"),
    (None, "not a readable zip archive"),
])
def test_unusable_zips_are_refused_with_a_message_and_leave_nothing(server, tmp_path, members, message):
    client, settings = server
    archive = tmp_path / "bad.zip"
    if members is None:
        archive.write_text("not a zip")
    else:
        dataset_zip(archive, {}, members)
    before = sorted(settings.data_root.rglob("*"))
    refused = call(client, "import_dataset", handle_file(str(archive)))
    info = refused["import-info"]
    assert "Not imported" in info and message in info and "Nothing was kept" in info
    assert not refused["thumbs"]["visible"]
    assert refused["dataset"] == {"__type__": "update"}  # the dataset choice is left as it was
    assert sorted(settings.data_root.rglob("*")) == before
    assert not list(settings.data_root.parent.rglob("evil.png"))


def evaluate(client, model):
    """/evaluate's summary, then its confusion plot, per-class rows and mistakes, None where hidden."""
    out = call(client, "evaluate", model)
    confusion, table, mistakes = (out[pane]["value"] if out[pane]["visible"] else None
                                  for pane in ("confusion", "per-class", "mistakes"))
    return out["eval-summary"], confusion, table and rows(table), mistakes


def test_evaluate_gives_confusion_per_class_numbers_and_mistakes(server, bugs_model):
    client, _ = server
    summary, confusion, table, mistakes = evaluate(client, bugs_model)
    assert confusion["type"] == "matplotlib"
    assert [r[0] for r in table] == ["ants", "bees", "wasps", "all"]
    assert [r[1] for r in table] == [1, 1, 1, 3]  # val images per class
    correct = table[-1][2]
    assert f"({correct} of 3 images)" in summary
    assert len(mistakes or []) == 3 - correct  # no mistakes: the gallery is hidden


def variant_checkpoint(settings, model: str, name: str, dataset_root: Path) -> str:
    """A copy of `model` in the weights folder that says it was trained on `dataset_root`."""
    ckpt = load_checkpoint(model)
    meta = {**ckpt.meta, "dataset": {**ckpt.meta["dataset"], "root": str(dataset_root)}}
    return str(save_checkpoint(settings.weights_dir / name, ckpt.state_dict, meta))


def test_mistakes_come_worst_first_with_true_and_predicted_labels(server, first_model, tmp_path):
    client, settings = server
    swapped = shutil.copytree(settings.dataset_dirs[0], tmp_path / "swapped")  # val labels swapped: mostly wrong
    (swapped / "val" / "ants").rename(swapped / "val" / "tmp")
    (swapped / "val" / "bees").rename(swapped / "val" / "ants")
    (swapped / "val" / "tmp").rename(swapped / "val" / "bees")
    model = variant_checkpoint(settings, first_model, "swapped.pt", swapped)
    summary, _, table, mistakes = evaluate(client, model)
    assert len(mistakes) == 8 - table[-1][2] > 0 and "mistake(s)" in summary
    captions = [re.fullmatch(r"true: (ants|bees) · predicted: (ants|bees) \((\d+)%\)", m["caption"]) for m in mistakes]
    assert all(c and c[1] != c[2] for c in captions)
    confidences = [int(c[3]) for c in captions]  # two classes: the most confident mistake has the highest loss
    assert confidences == sorted(confidences, reverse=True)


def test_evaluate_explains_a_dataset_that_is_gone(server, first_model, tmp_path):
    client, settings = server
    model = variant_checkpoint(settings, first_model, "moved.pt", tmp_path / "gone")
    summary, *panes = evaluate(client, model)
    assert "is no longer on this server" in summary and "gone" in summary and panes == [None, None, None]


def test_download_and_export_a_model(server, first_model):
    client, _ = server
    download = call(client, "download_checkpoint", first_model)
    file, note = download["model-file"], download["model-file-note"]
    assert file["visible"] and load_checkpoint(file["value"]).meta["class_names"] == ["ants", "bees"]
    assert Path(file["value"]).name == Path(first_model).name and "python -m bees_ants predict" in note

    export = call(client, "export", first_model)
    file, note = export["model-file"], export["model-file-note"]
    program = torch.export.load(file["value"])
    probs = program.module()(torch.zeros(3, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8))
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3))
    assert "torch.export.load" in note
    exported = Path(first_model).with_suffix(".pt2")
    written = exported.stat().st_mtime_ns
    client.predict(first_model, api_name="/export")
    assert exported.stat().st_mtime_ns == written  # up to date: reused, not exported again
    picker, *_ = client.predict(api_name="/models")
    assert all(path.endswith(".pt") for _, path in picker["choices"])  # the .pt2 is not offered as a model
    for endpoint in ("/download_checkpoint", "/export"):
        with pytest.raises(AppError, match="choose a model from the list"):
            client.predict(str(exported), api_name=endpoint)


# -- catalog and views, no server ----------------------------------------------------------------

def test_catalog_offers_tutorial_data_root_folders_and_extra_dirs(tmp_path):
    settings = app_settings(tmp_path)
    (tmp_path / "data" / "mine" / "train" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "mine" / "val").mkdir()
    (tmp_path / "data" / "not_a_dataset").mkdir()
    choices = catalog.dataset_choices(settings, None)
    assert [Path(c.path).name for c in choices] == ["hymenoptera_data", "mine", "tiny", "one_class"]
    assert choices[0].download_to == str(tmp_path / "data") and "downloaded on first use" in choices[0].label
    assert choices[2].label == "tiny · ants, bees"
    assert catalog.default_dataset(choices).path == str(tmp_path / "data" / "mine")
    with pytest.raises(CatalogError):
        catalog.find_dataset(settings, Visitor("session:x"), "/etc")


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
    job = Job(id=1, owner="someone", config=TrainConfig(data_dir=str(tmp_path / "bees"), epochs=4),
              device="CPU (2 threads)", submitted=0.0, started=0.0, status="running")
    assert "epoch 1 of 4 running" in status_markdown(job, now=5.0)
    job.history, job.remaining = [EpochRecord(1, 4, 0.7, 0.6, 0.5, 0.8, 0.001, 30.0, 0.8, 1)], 90.0
    line = status_markdown(job, now=75.0)
    assert "epoch 1 of 4 done" in line and "elapsed 1:15" in line and "ETA 1:30" in line and "80.0%" in line
    job.remaining = 4.0  # the manager's estimate (jobs.RunTimes) ran out: no countdown at 0:00
    assert "ETA any moment now" in status_markdown(job, now=75.0)
    job.status, job.error, job.finished = "failed", "boom", 80.0
    assert "Training failed" in status_markdown(job) and "boom" in status_markdown(job)
    assert "No training yet" in status_markdown(None)


def test_per_class_table_and_evaluation_summary():
    ev = Evaluation("val", ["ants", "bees", "wasps"], accuracy=5 / 8, loss=0.9,
                    confusion=[[3, 1, 0], [1, 2, 0], [1, 0, 0]], paths=[], true=[], predicted=[], confidence=[],
                    losses=[])
    ev.true = [0] * 4 + [1] * 3 + [2]  # only the counts matter for the table and the summary
    table = per_class_table(ev).values.tolist()
    assert table == [["ants", 4, 3, "75.0%", "60.0%"], ["bees", 3, 2, "66.7%", "66.7%"],
                     ["wasps", 1, 0, "0.0%", "—"], ["all", 8, 5, "62.5%", ""]]
    summary = evaluation_markdown(ev, {"best": {"val_acc": 0.75, "epoch": 3}})
    assert "val accuracy 62.5% (5 of 8 images)" in summary and "**3 mistake(s)**" in summary
    assert "Recorded when it was trained: 75.0% (epoch 3)" in summary
    assert confusion_figure(ev).axes[0].get_xlabel() == "predicted"
