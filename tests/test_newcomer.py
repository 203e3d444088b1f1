"""A newcomer's first run: offline advice in each interface's own words, the note before the first
click, and a Train tab whose job view has one writer per page."""
import urllib.error

import pytest
import torch
import torchvision.datasets.utils
import torchvision.models._api
from gradio_client import Client

from app_fixtures import FixedJob, api_client, app_settings, running_app
from bees_ants import catalog, ui
from bees_ants.errors import UserError
from bees_ants.ui.train_tab import first_use_note, prepare_run
from bees_ants.catalog import CatalogError, Settings
from bees_ants.data import DatasetDownloadError, ensure_hymenoptera
from bees_ants.models import WeightsDownloadError, build_model
from bees_ants.train import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

APP_WAYS = ("Add your own dataset (.zip)", "none (random init)", "Start from weights",
            "BEES_ANTS_DATASETS=", "BEES_ANTS_BACKBONE_WEIGHTS=")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: the tutorial's download and torchvision's weights download both fail, and
    torchvision's cache is empty."""
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))


def test_the_cli_keeps_its_flags(offline, tmp_path):
    with pytest.raises(DatasetDownloadError, match="--data-dir PATH") as dataset:
        ensure_hymenoptera(tmp_path)
    assert "URLError" in dataset.value.reason and dataset.value.target == tmp_path / "hymenoptera_data"
    with pytest.raises(WeightsDownloadError, match="--backbone-weights PATH") as weights:
        build_model("resnet18", 2, "imagenet")
    assert weights.value.arch == "resnet18"


def test_the_app_names_its_own_ways_and_both_problems_at_once(offline, tmp_path):
    choice = catalog.DatasetChoice("tutorial", str(tmp_path / "hymenoptera_data"), str(tmp_path))
    with pytest.raises(UserError) as refused:
        prepare_run(choice, TrainConfig(data_dir=choice.path, backbone_weights="imagenet"))
    message = str(refused.value)
    assert all(way in message for way in APP_WAYS), message
    assert "--" not in message  # no CLI flag in the app


def test_first_use_note_before_the_first_click(offline, tmp_path):
    fresh = Settings(data_root=tmp_path / "data", weights_dir=tmp_path / "weights")  # a first start: no dataset
    tutorial = catalog.default_dataset(catalog.dataset_choices(fresh, None))
    assert tutorial.download_to  # still the default: downloaded on first use
    note = first_use_note(tutorial.path, "imagenet", "resnet18", fresh)
    assert "Downloaded on first use" in note and "ants/bees" in note and "ImageNet weights for resnet18" in note
    assert all(way in note for way in APP_WAYS)
    settings = app_settings(tmp_path / "app")
    tiny = str(settings.dataset_dirs[0])
    assert first_use_note(tiny, "none", "resnet18", settings) == ""  # nothing to fetch: no note


def test_a_typed_path_is_refused_with_a_way_forward(tmp_path):
    settings = app_settings(tmp_path)
    with pytest.raises(CatalogError) as refused:
        catalog.find_dataset(settings, None, "/home/me/photos")
    assert "Add your own dataset (.zip)" in str(refused.value) and "BEES_ANTS_DATASETS=" in str(refused.value)


def _outputs(client: Client, endpoint: str, values) -> dict:
    components = {c["id"]: c for c in client.config["components"]}
    dependency = next(d for d in client.config["dependencies"] if d["api_name"] == endpoint)
    ids = [components[i]["props"]["elem_id"] for i in dependency["outputs"] if not components[i]["skip_api"]]
    return dict(zip(ids, values, strict=True))


def test_offline_first_run_through_the_app(offline, tmp_path):
    settings = app_settings(tmp_path)
    tutorial = str(settings.data_root / "hymenoptera_data")  # listed, downloaded on first use
    args = dict(dataset=tutorial, arch="resnet18", mode="fixed", backbone="imagenet", epochs=1, lr=0.01,
                momentum=0.9, batch_size=4, step_size=7, gamma=0.1, frozen_epochs=1)
    with running_app(settings) as url:
        client = api_client(url)
        final = _outputs(client, "train", list(client.submit(**args, api_name="/train"))[-1])
        assert "Training failed" in final["status"]
        assert all(way in final["status"] for way in APP_WAYS), final["status"]
        assert "--data-dir" not in final["status"] and "--backbone-weights" not in final["status"]
        # A failed download marks the tutorial's set unavailable: the list stops offering a dead end.
        assert tutorial not in [c.path for c in catalog.dataset_choices(settings, None)]

        typed = _outputs(client, "train", client.predict(**{**args, "dataset": "/home/me/photos"},
                                                         api_name="/train"))
        assert "Not started" in typed["notice"] and "Add your own dataset (.zip)" in typed["notice"]


# -- one writer of the job view per page ------------------------------------------------------------

def test_only_the_timer_draws_the_job_view_on_a_page(tmp_path):
    """Every event that writes the status on a page is the timer's tick, which a page never sends
    again while one is pending; the streaming /train and /follow hang off a button no page shows."""
    app = ui.build_app(app_settings(tmp_path))
    components = {c["id"]: c for c in app.config["components"]}
    status = next(i for i, c in components.items() if c["props"].get("elem_id") == "status")
    writers = [d for d in app.config["dependencies"] if status in d["outputs"]]
    assert {d["api_name"] for d in writers} == {"tick", "train", "follow", "status"}
    for d in writers:
        (target, event), = d["targets"]
        if d["api_name"] == "tick":
            assert components[target]["type"] == "timer" and event == "tick" and d["trigger_mode"] == "once"
        else:
            assert components[target]["props"]["elem_id"] == "api-only"
            assert components[target]["props"]["visible"] is False


def ticked(tab, seen: int):
    """What one tick of the page's timer sends: its updates merged (a finished job's val grid comes
    in a second update, after the rest), or its one update as it is (gr.skip())."""
    parts = list(tab.tick(seen, None, None))
    return parts[0] if len(parts) == 1 else {k: v for part in parts for k, v in part.items()}


def test_a_tick_draws_a_changed_job_and_otherwise_only_the_clock(tmp_path):
    from bees_ants.jobs import Job
    settings = app_settings(tmp_path)
    app = ui.build_app(settings)
    tab = next(f for f in app.fns.values() if f.api_name == "tick").fn.__self__  # the TrainTab
    job = Job(id=1, owner="v", config=TrainConfig(data_dir=str(settings.dataset_dirs[0])), device="cpu",
              submitted=0.0, status="running", version=7, started=0.0)
    tab.jobs = FixedJob(job)
    drawn = ticked(tab, -1)
    assert drawn[tab.seen] == 7 and tab.curves in drawn
    assert set(ticked(tab, 7)) == {tab.status}  # same version: the elapsed time only
    job.version = 9
    assert ticked(tab, 7)[tab.seen] == 9
