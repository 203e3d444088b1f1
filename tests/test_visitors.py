"""Two visitors on one running app, through the API: each gradio_client `Client` is one visitor
(the app identifies an API client by its session). What one uploads, trains and runs is invisible
and untouchable for the other, and the other's requests for it are refused exactly like requests
for things that do not exist."""
import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest

from bees_ants.catalog import DATASET_REFUSAL
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app_fixtures import FixedJob, api_client, app_settings, dataset_zip, running_app
from conftest import make_dataset
from test_app import call, named, rows, train, train_args, visitor_of

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations

LONG_NAME = "x" * 100_000
ODD_VALUES = [7, ["a", "b"], {"path": "/etc/passwd"}, LONG_NAME]


@pytest.fixture(scope="module")
def alice(served_app):
    url, _ = served_app
    return api_client(url)


@pytest.fixture(scope="module")
def bob(served_app):
    url, _ = served_app
    return api_client(url)


@pytest.fixture(scope="module")
def alice_dataset(alice, tmp_path_factory):
    """Alice uploads a zip: the dataset lands in her own folder."""
    archive = dataset_zip(tmp_path_factory.mktemp("alice") / "alice bugs.zip", {"ants": 5, "bees": 5})
    path = call(alice, "import_dataset", handle_file(str(archive)))["dataset"]["value"]
    assert "alice_bugs" in path
    return path


@pytest.fixture(scope="module")
def alice_model(alice, alice_dataset):
    """Alice trains on her upload; the checkpoint lands in her own folder."""
    final = train(alice, alice_dataset, epochs=2)[-1]
    assert "Finished 2 epochs" in final["status"]
    return final["model"]["value"]


def made_up(path: str) -> str:
    """A path of the same shape as `path` that names nothing."""
    return str(Path(path).with_name("resnet18-fixed-made-up.pt"))


def test_uploads_and_checkpoints_go_to_the_visitors_own_folders(served_app, alice, bob, alice_dataset, alice_model):
    _, settings = served_app
    assert Path(alice_dataset).parent == visitor_of(alice).folder(settings.data_root)
    assert Path(alice_model).parent == visitor_of(alice).folder(settings.weights_dir)
    assert visitor_of(alice).key != visitor_of(bob).key


def test_the_other_visitor_does_not_see_them(alice, bob, alice_dataset, alice_model):
    picker, note, eval_picker = alice.predict(api_name="/models")
    assert alice_model in [path for _, path in picker["choices"]]
    picker, note, eval_picker = bob.predict(api_name="/models")
    listed = [path for _, path in picker["choices"] + eval_picker["choices"]]
    assert alice_model not in listed and picker["value"] is None and "No trained model yet" in note
    # Bob's dataset list refuses Alice's upload as if it did not exist
    refused = call(bob, "train", **train_args(alice_dataset))["notice"]
    assert refused == call(bob, "train", **train_args(made_up(alice_dataset)))["notice"]
    assert refused == f"⚠ **Not started:** {DATASET_REFUSAL}"
    assert "No training yet" in call(bob, "follow")["status"]  # and nothing was started


def refusal(client: Client, endpoint: str, model) -> object:
    """What `endpoint` answers `client` about `model`: the outputs that carry the reason, or the
    error message."""
    image = next(Path(__file__).parent.glob("*.py"))  # any file: the model is refused first
    try:
        if endpoint == "predict":
            return call(client, endpoint, model, [handle_file(str(image))])["problems"]
        if endpoint == "model_info":
            return call(client, endpoint, model)["model-card"]
        if endpoint == "evaluate":
            return call(client, endpoint, model)["eval-summary"]
        client.predict(model, api_name=f"/{endpoint}")
    except AppError as e:
        return f"AppError: {e}"
    raise AssertionError(f"/{endpoint} accepted {str(model)[:80]!r}")


ENDPOINTS = ["predict", "model_info", "evaluate", "download_checkpoint", "export", "export_web_page", "random_val"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_anothers_checkpoint_is_refused_like_a_made_up_one(alice, bob, alice_model, endpoint):
    refused = refusal(bob, endpoint, alice_model)
    assert refused == refusal(bob, endpoint, made_up(alice_model))
    assert refused == refusal(bob, endpoint, "/nowhere/resnet18-fixed.pt")
    assert "No trained model yet" in refused or "choose a model from the list" in refused
    assert alice_model not in refused and "alice" not in refused
    if endpoint == "model_info":  # the owner is served
        assert "Classes:** ants, bees" in call(alice, endpoint, alice_model)["model-card"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("value", ODD_VALUES, ids=["int", "list", "dict", "100k-chars"])
def test_odd_values_get_the_usual_refusal(alice, alice_model, endpoint, value):
    """Alice has a model, so the usual refusal is "choose a model from the list"."""
    refused = refusal(alice, endpoint, value)
    assert refused == refusal(alice, endpoint, "/nowhere/resnet18-fixed.pt")
    assert "choose a model from the list" in refused and LONG_NAME[:1000] not in refused


@pytest.mark.parametrize("value", ODD_VALUES, ids=["int", "list", "dict", "100k-chars"])
def test_odd_dataset_values_get_the_usual_refusal(bob, value):
    notice = call(bob, "train", **train_args(value))["notice"]
    assert notice == f"⚠ **Not started:** {DATASET_REFUSAL}"


def test_queue_and_cancel_are_per_visitor(served_app, alice, bob, alice_model):
    _, settings = served_app
    # Alice's long run: certainly still running when we act on its first epoch.
    long_run = alice.submit(**train_args(settings.dataset_dirs[0], mode="finetune", epochs=500), api_name="/train")
    for out in long_run:
        if rows(named(alice, "train", out)["history"]):
            break
    # Bob cannot cancel it: he has nothing to cancel.
    assert "Nothing to cancel" in bob.predict(api_name="/cancel")
    # Bob's run waits in the queue behind Alice's (one runner).
    bobs_run = bob.submit(**train_args(settings.dataset_dirs[0], epochs=2), api_name="/train")
    bobs_outputs = []
    for out in bobs_run:
        bobs_outputs.append(named(bob, "train", out))
        if "Queued: position 1" in bobs_outputs[-1]["status"]:
            break
    assert "Queued: position 1" in bobs_outputs[-1]["status"] and bobs_outputs[0]["notice"] == ""
    # Estimated from the work left of Alice's run, and where it stands.
    assert re.search(r"starts in about \d+:\d\d \(estimated\)", bobs_outputs[-1]["status"])
    assert re.search(r"The run ahead of yours: epoch \d+ of 500 done", bobs_outputs[-1]["status"])
    assert not long_run.done()  # Alice's run went on through Bob's cancel and submit
    # Alice cancels hers; Bob's starts by itself and finishes.
    assert "Cancel requested" in alice.predict(api_name="/cancel")
    alice_final = named(alice, "train", long_run.result())
    assert "Cancelled after" in alice_final["status"] and "of 500 epochs" in alice_final["status"]
    bob_final = named(bob, "train", bobs_run.result())
    assert "Finished 2 epochs" in bob_final["status"]
    bobs_model = bob_final["model"]["value"]
    assert Path(bobs_model).parent == visitor_of(bob).folder(settings.weights_dir)
    # Each sees only their own models.
    alices = [p for _, p in alice.predict(api_name="/models")[0]["choices"]]
    bobs = [p for _, p in bob.predict(api_name="/models")[0]["choices"]]
    assert bobs_model not in alices and alice_model in alices and bobs == [bobs_model]


def test_a_page_learns_its_visitor_before_it_lists_their_datasets_and_models(tmp_path):
    """Load events start together: the page's lists must wait for the visitor's registration,
    or they would be drawn for an unknown visitor (shared things only) and never corrected."""
    from bees_ants import ui

    app = ui.build_app(app_settings(tmp_path))
    deps = app.config["dependencies"]
    on_load = [d for d in deps if any(event == "load" for _, event in d["targets"])]
    assert [d["api_name"] for d in on_load] == ["register"]
    chain, after = [], on_load[0]["id"]
    while (nxt := next((d for d in deps if d.get("trigger_after") == after), None)) is not None:
        chain.append(nxt["api_name"])
        after = nxt["id"]
    assert chain == ["restored_form", "refreshed"]


def test_a_reloaded_page_shows_the_form_of_the_latest_run_and_the_dataset_made_last(tmp_path):
    """The page's load chain (restored_form) called as a page would: the form tells the truth
    about the run the status beside it shows."""
    import gradio as gr
    from bees_ants import ui
    from bees_ants.jobs import Job
    from bees_ants.train import TrainConfig
    from bees_ants.ui.train_tab import FORM, form_values_from

    settings = app_settings(tmp_path)
    tab = next(f for f in ui.build_app(settings).fns.values() if f.api_name == "tick").fn.__self__  # the TrainTab
    page = gr.Request(session_hash="page-one")
    own = tab.visitors.of(page, None).folder(settings.data_root)
    older, newer = make_dataset(own / "made-first"), make_dataset(own / "made-last")
    os.utime(older, (1e9, 1e9))  # made in that order
    os.utime(newer, (2e9, 2e9))
    # No run yet: the form's defaults, and the dataset made last (not the first of the list).
    tab.jobs = FixedJob(None)
    shown = tab.restored_form(page, None)
    assert set(shown) == {tab.dataset} and shown[tab.dataset].value == str(newer)
    # Mid-run: every field as the run has it, each one different from the form's default.
    config = TrainConfig(data_dir=str(older), arch="mobilenet_v2", mode="progressive", backbone_weights=None,
                         epochs=40, lr=0.005, momentum=0.8, batch_size=8, step_size=3, gamma=0.5, frozen_epochs=2,
                         optimizer="adamw", train_blocks=4, patience=6, stop_metric="val_loss", lr_schedule="cosine")
    tab.jobs = FixedJob(Job(id=1, owner="v", config=config, device="cpu", submitted=0.0, status="running"))
    shown = tab.restored_form(page, None)
    restored = {name: shown[tab.form[name]] for name in FORM}
    restored["dataset"] = restored["dataset"].value
    assert restored == form_values_from(config)
    assert all(value != tab.form[name].value for name, value in restored.items())
    # Its dataset deleted and its weights file gone since: the newest of theirs, the backbone's default weights.
    shutil.rmtree(older)
    config.backbone_weights = str(tmp_path / "gone.pth")
    shown = tab.restored_form(page, None)
    assert shown[tab.dataset].value == str(newer) and shown[tab.form["backbone"]] == "imagenet"


def test_one_address_gets_a_fair_share_of_the_queue_through_the_api(tmp_path):
    """Every API client is a new visitor, but not a new address: the queue counts jobs by address."""
    settings = dataclasses.replace(app_settings(tmp_path), max_per_address=1)
    with running_app(settings) as url:
        first, second = api_client(url), api_client(url)
        run = first.submit(**train_args(settings.dataset_dirs[0], epochs=300), api_name="/train")
        try:
            next(iter(run))  # the first output: the job exists
            refused = named(second, "train", second.predict(**train_args(settings.dataset_dirs[0]), api_name="/train"))
            assert "Not started" in refused["notice"] and "from your network address" in refused["notice"]
            assert "No training yet" in second.predict(api_name="/status")[0]
        finally:
            first.predict(api_name="/cancel")
            for _ in run:  # to its end
                pass


def test_the_client_address_is_the_connection_or_on_a_space_the_proxys_first_entry(monkeypatch):
    import gradio as gr

    from bees_ants.ui.common import client_address

    request = gr.Request(headers={"x-forwarded-for": "203.0.113.5, 10.0.0.1"}, client={"host": "10.16.3.80", "port": 1})
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert client_address(request) == "10.16.3.80"  # off a Space the header is whatever the client sent
    monkeypatch.setenv("SPACE_ID", "someone/bees-ants")
    assert client_address(request) == "203.0.113.5"  # on a Space every request comes through the proxy
    assert client_address(None) == ""
def test_a_visitor_deletes_their_own_dataset_and_model_and_nobody_elses(served_app, alice, bob, alice_dataset,
                                                                         alice_model, tmp_path):
    """Through the API: Bob's requests to delete Alice's things are refused like made-up names;
    Alice deletes a second upload and a copy of her model, and they leave her lists."""
    _, settings = served_app
    for path in (alice_dataset, "/nowhere"):
        assert "choose one of your own datasets" in call(bob, "delete_dataset", path)["dataset-deleted"]
    for path in (alice_model, made_up(alice_model)):
        deleted = call(bob, "delete_model", path)["model-deleted"]
        assert "choose one of your own models" in deleted and "alice" not in deleted
    assert Path(alice_dataset).is_dir() and Path(alice_model).is_file()

    archive = dataset_zip(tmp_path / "spare.zip", {"ants": 3, "bees": 3})
    spare = call(alice, "import_dataset", handle_file(str(archive)))["dataset"]["value"]
    answer = call(alice, "delete_dataset", spare)
    assert answer["dataset-deleted"] == "Deleted **spare**." and not Path(spare).exists()
    assert spare not in [p for _, p in answer["dataset"]["choices"]] and Path(alice_dataset).is_dir()

    copy = Path(alice_model).with_name("copy.pt")
    copy.write_bytes(Path(alice_model).read_bytes())
    exports = [copy.with_suffix(".onnx"), copy.with_suffix(".web.zip"), copy.with_suffix(".web") / "model.onnx"]
    for p in exports:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"export")
    answer = call(alice, "delete_model", str(copy))
    assert answer["model-deleted"] == "Deleted **copy.pt**." and not copy.exists()
    assert not any(p.exists() for p in exports) and not copy.with_suffix(".web").exists()
    assert str(copy) not in [p for _, p in answer["model"]["choices"]] and Path(alice_model).is_file()
