"""Curves as drawings the browser makes (SVG), an idle page's timer, the dataset hash in
checkpoints, and runs side by side (/compare), through the views and the real client."""
import shutil
import xml.etree.ElementTree as ET
from dataclasses import asdict

import gradio as gr
import pytest

from app_fixtures import FixedJob, api_client, app_settings
from bees_ants import ui
from bees_ants.checkpoint import load_checkpoint
from bees_ants.datahash import dataset_hash
from bees_ants.jobs import Job
from bees_ants.train import EpochRecord, TrainConfig, TrainingRun
from bees_ants.ui.train_tab import ACTIVE_TICK_S, IDLE_TICK_S
from bees_ants.views.comparison import comparison_curves, comparison_markdown, run_name
from bees_ants.views.evaluation import checkpoint_curves
from bees_ants.views.training import status_markdown, training_curves
from conftest import IMAGE_SIZE, make_dataset, small_config, write_image
from test_app import call, train

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations

HISTORY = [EpochRecord(1, 3, 0.9, 0.5, 0.7, 0.6, 0.001, 3.0, 0.6, 1),
           EpochRecord(2, 3, 0.6, 0.7, float("inf"), 0.8, 0.001, 3.0, 0.8, 2),
           EpochRecord(3, 3, 0.4, 0.8, 0.4, 0.75, 0.001, 9.0, 0.8, 2)]


def plots(html: str) -> dict[str, ET.Element]:
    """The loss and accuracy SVGs of a curves drawing, by title."""
    return {svg.get("aria-label"): svg for svg in ET.fromstring(html).iter("svg")}


def points(svg: ET.Element) -> list[str]:
    """The hover text of every point drawn, e.g. 'val · epoch 2: 80%'."""
    return [c.find("title").text for c in svg.iter("circle")]


def test_a_runs_curves_are_its_history_drawn_over_the_planned_epochs(tmp_path):
    config = TrainConfig(data_dir=str(tmp_path), mode="progressive", epochs=10, frozen_epochs=2)
    job = Job(id=1, owner="v", config=config, device="CPU", submitted=0.0, started=0.0, status="running",
              history=HISTORY)
    drawn = plots(training_curves(job))
    assert set(drawn) == {"Loss", "Accuracy"}
    assert points(drawn["Accuracy"]) == ["train · epoch 1: 50%", "train · epoch 2: 70%", "train · epoch 3: 80%",
                                         "val · epoch 1: 60%", "val · epoch 2: 80%", "val · epoch 3: 75%"]
    # the diverged val loss of epoch 2 is left out, not drawn off the chart
    assert "val · epoch 2" not in " ".join(points(drawn["Loss"])) and len(points(drawn["Loss"])) == 5
    ticks = [t.text for t in drawn["Loss"].iter("text") if t.get("text-anchor") == "middle"]
    assert "9" in ticks  # the axis spans the planned 10 epochs while 3 are done
    best = next(t for t in drawn["Accuracy"].iter("text") if t.get("class") == "best")
    assert best.find("title").text == "best val acc 80.0% (epoch 2)"
    assert any(t.text == "unfrozen" for t in drawn["Loss"].iter("text"))
    assert "fixed for 2 epochs, then fine-tune" in status_markdown(job)
    # The saved model's curves are the same drawing, over the epochs it ran.
    meta = {"mode": "progressive", "history": [asdict(r) for r in HISTORY],
            "hyperparameters": {"epochs": 10, "frozen_epochs": 2}}
    saved = plots(checkpoint_curves(meta))
    assert points(saved["Accuracy"]) == points(drawn["Accuracy"])
    assert "9" not in [t.text for t in saved["Loss"].iter("text")]


def test_no_history_says_why_the_plot_is_empty():
    drawn = plots(training_curves(None))
    assert points(drawn["Loss"]) == [] and any(t.text == "no epochs yet" for t in drawn["Loss"].iter("text"))


def test_names_from_metadata_are_escaped_in_the_drawing():
    meta = {"arch": "resnet18", "mode": "fixed", "created": "2026-01-02T03:04:05", "history": [asdict(HISTORY[0])]}
    html = comparison_curves([meta, {**meta, "arch": "<script>x</script>"}])
    assert "<script>" not in html and ET.fromstring(html) is not None


# -- the page's timer ------------------------------------------------------------------------------

def ticked(tab, seen: int):
    """What one tick of the page's timer sends: its updates merged (a finished job's val grid comes
    in a second update, after the rest), or its one update as it is (gr.skip())."""
    parts = list(tab.tick(seen, None, None))
    return parts[0] if len(parts) == 1 else {k: v for part in parts for k, v in part.items()}


@pytest.fixture
def tab(tmp_path):
    app = ui.build_app(app_settings(tmp_path))
    return next(f for f in app.fns.values() if f.api_name == "tick").fn.__self__  # the TrainTab


def test_an_idle_page_ticks_slowly_and_its_ticks_draw_nothing(tab):
    tab.jobs = FixedJob(None)
    first = ticked(tab, -1)  # a new page: draws "no training yet" once, then slows down
    assert "No training yet" in first[tab.status] and first[tab.timer].value == IDLE_TICK_S
    for _ in range(50):
        assert ticked(tab, first[tab.seen]) == gr.skip()


def test_a_job_speeds_the_timer_up_and_its_end_slows_it_down(tab, tmp_path):
    job = Job(id=1, owner="v", config=TrainConfig(data_dir=str(tmp_path)), device="cpu", submitted=0.0,
              status="queued", version=3)
    tab.jobs = FixedJob(job)
    drawn = ticked(tab, 0)  # another tab of this browser started it: seen within IDLE_TICK_S
    assert drawn[tab.timer].value == ACTIVE_TICK_S and drawn[tab.seen] == 3
    assert set(ticked(tab, 3)) == {tab.status}  # the clock moved: the status line alone
    job.status, job.version = "cancelled", 4
    done = ticked(tab, 3)
    assert "Cancelled before it started" in done[tab.status] and done[tab.timer].value == IDLE_TICK_S
    first, grid = tab.tick(3, None, None)  # the status first; the val grid (seconds to draw) after it
    assert tab.grid not in first and "Cancelled" in first[tab.status] and set(grid) == {tab.grid}


def test_the_train_button_starts_the_fast_timer_and_a_refusal_does_not(tab, tmp_path):
    settings = tab.settings
    form = dict(dataset=str(settings.dataset_dirs[0]), arch="resnet18", mode="fixed", backbone="none", epochs=2,
                lr=0.02, momentum=0.9, batch_size=4, step_size=7, gamma=0.1, frozen_epochs=5, optimizer="sgd",
                train_blocks=0, patience=0, stop_metric="val_acc", lr_schedule="step")
    request = gr.Request(session_hash="page-one")
    refused = next(tab.start(request, None, **{**form, "mode": "sideways"}))
    assert "Not started" in refused[tab.notice] and tab.timer not in refused
    started = next(tab.start(request, None, **form))
    assert started[tab.notice] == "" and started[tab.timer].value == ACTIVE_TICK_S
    tab.jobs.cancel(tab.visitors.of(request, None).key)


# -- the dataset's content hash ----------------------------------------------------------------------

def test_the_data_hash_follows_content_not_the_folder(tmp_path):
    one = make_dataset(tmp_path / "one")
    copy = shutil.copytree(one, tmp_path / "elsewhere")
    classes = ["ants", "bees"]
    assert dataset_hash(one, classes) == dataset_hash(copy, classes)
    assert len(dataset_hash(one, classes)) == 64
    write_image(copy / "val" / "bees" / "bees_0.png", (0, 0, 0))  # one image changed
    assert dataset_hash(copy, classes) != dataset_hash(one, classes)
    (one / "train" / "ants" / "ants_0.png").rename(one / "train" / "ants" / "renamed.png")
    assert dataset_hash(one, classes) != dataset_hash(copy, classes)


def test_a_checkpoint_records_the_hash_of_its_data(tiny_dataset, tmp_path):
    run = TrainingRun(small_config(tiny_dataset, tmp_path, epochs=1))
    list(run)
    meta = load_checkpoint(run.checkpoint_path).meta
    assert meta["dataset"]["hash"] == dataset_hash(tiny_dataset, ["ants", "bees"])


# -- runs side by side -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(served_app):
    url, settings = served_app
    client = api_client(url)
    dataset = settings.dataset_dirs[0]
    models = [train(client, dataset, epochs=e, lr=lr)[-1]["model"]["value"] for e, lr in ((2, 0.02), (3, 0.05))]
    return client, models


def test_compare_shows_two_runs_on_one_plot_and_what_differs(two_runs):
    client, models = two_runs
    shown = call(client, "compare", models)
    table = shown["compare-table"]
    metas = [load_checkpoint(m).meta for m in models]
    names = [run_name(i, m) for i, m in enumerate(metas, 1)]
    assert all(f"**{name}**" in table for name in names)
    assert "| **lr** | 0.02 | 0.05 |" in table and "| **epochs** | 2 | 3 |" in table  # what differs, in bold
    digest = metas[0]["dataset"]["hash"][:12]
    assert f"| data hash | `{digest}` | `{digest}` |" in table  # the same data, not in bold
    assert "| epoch of best |" in table.replace("**epoch of best**", "epoch of best")
    assert "The same in all:" in table and "momentum 0.9" in table and f"input size {IMAGE_SIZE} px" in table
    full_size = {**metas[1], "preprocessing": {**metas[1]["preprocessing"], "crop_size": 224}}
    assert f"| **input size** | {IMAGE_SIZE} px | 224 px |" in comparison_markdown([metas[0], full_size])
    drawn = plots(shown["compare-curves"]["value"])
    assert {p.split(" · epoch")[0] for p in points(drawn["Accuracy"])} == {f"{n} · {s}" for n in names
                                                                          for s in ("train", "val")}
    # a checkpoint from before the hash was kept shows a dash
    assert "| data hash | — |" in comparison_markdown([{**metas[0], "dataset": {}}])


def test_compare_refuses_someone_elses_models_like_missing_ones(served_app, two_runs):
    url, _ = served_app
    _, models = two_runs
    stranger = api_client(url)
    for picked in ([models[0]], [models[0], models[1]], ["/etc/passwd"], "not a list", [7]):
        shown = call(stranger, "compare", picked)
        assert shown["compare-table"] == "⚠ choose a model from the list"
        assert shown["compare-curves"]["visible"] is False
