"""Building a dataset and live predictions through the real client (gradio_client): the draft is its
visitor's own, hostile names and files get reasons, the created dataset trains, and a pasted image
is classified with the visitor's model only."""
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from app_fixtures import api_client
from conftest import COLOURS, write_image
from test_app import call, train, visitor_of

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


def pictures(folder: Path, cls: str, n: int) -> list:
    seed = 1000 * list(COLOURS).index(cls)
    return [handle_file(str(write_image(folder / cls / f"{i}.png", COLOURS[cls], seed=seed + i))) for i in range(n)]


def classes_shown(out: dict) -> list[str]:
    return [value for _, value in out["draft-class"]["choices"]]


@pytest.fixture(scope="module")
def built(served_app, tmp_path_factory):
    """A visitor who built a two-class dataset through the API and trained on it:
    (client, the /draft_create outputs, the /train outputs)."""
    url, _ = served_app
    folder = tmp_path_factory.mktemp("pictures")
    client = api_client(url)
    for cls in ("ants", "bees"):
        out = call(client, "draft_add_class", cls)
        assert out["draft-class"]["value"] == cls and out["draft-added"] == f"Added class **{cls}**: now add its images."
        out = call(client, "draft_add_images", cls, pictures(folder, cls, 5))
        assert out["draft-added"] == f"Added **5** image(s) to **{cls}**."
    created = call(client, "draft_create", "api set")
    run = train(client, created["dataset"]["value"], epochs=3)
    return client, created, run


def test_files_are_checked_as_they_arrive_and_the_split_is_shown(served_app, tmp_path):
    url, _ = served_app
    client = api_client(url)
    call(client, "draft_add_class", "wasps")
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"\xff\xd8 not really a jpeg")
    out = call(client, "draft_add_images", "wasps", [*pictures(tmp_path, "wasps", 4), handle_file(str(junk)),
                                                      handle_file(str(fake))])
    added = out["draft-added"]
    assert added.startswith("Added **4** image(s) to **wasps**.") and "Skipped 2 file(s)" in added
    assert "`notes.txt`: unsupported file type '.txt'" in added and "`photo.jpg`: " in added
    assert "| wasps | 4 | 3 | 1 |" in out["draft-table"]
    assert out["draft-gallery"]["visible"] and len(out["draft-gallery"]["value"]) == 4
    frame = call(client, "draft_add_frame", "wasps", pictures(tmp_path / "frame", "wasps", 5)[4])
    assert "| wasps | 5 | 4 | 1 |" in frame["draft-table"]


def test_class_names_that_are_paths_are_refused(served_app, tmp_path):
    url, settings = served_app
    client = api_client(url)
    call(client, "draft", None)  # the client's visit is recorded (housekeeping.touch): written before we look
    before = sorted(settings.data_root.parent.rglob("*"))
    for name in ("../x", "..", "a/b", ".draft", "train"):
        out = call(client, "draft_add_class", name)
        assert out["draft-added"].startswith("⚠ ") and classes_shown(out) == []
    assert sorted(settings.data_root.parent.rglob("*")) == before


def test_the_created_dataset_is_the_builders_own_and_trains(built, served_app):
    client, created, run = built
    _, settings = served_app
    path = str(visitor_of(client).folder(settings.data_root) / "api_set")
    assert created["dataset"]["value"] == path
    assert "Created `api_set`" in created["draft-created"] and "| ants | 4 | 1 |" in created["draft-created"]
    assert "Finished 3 epochs" in run[-1]["status"]
    stranger = api_client(client.src)
    notice = call(stranger, "train", dataset=path, arch="resnet18", mode="fixed", backbone="none", epochs=1, lr=0.02,
                  momentum=0.9, batch_size=4, step_size=7, gamma=0.1, frozen_epochs=5)["notice"]
    assert "Not started" in notice and "choose a dataset from the list" in notice


def test_another_visitor_can_neither_see_nor_touch_the_draft(built, tmp_path):
    client, _, _ = built
    stranger = api_client(client.src)
    assert classes_shown(call(stranger, "draft", None)) == []
    # The stranger's page offers no class to name, so Gradio refuses the name before the app sees it;
    # once the stranger has a class list of their own, the app refuses names that are not on it.
    with pytest.raises(AppError, match="not in the list of choices"):
        stranger.predict("ants", [], api_name="/draft_add_images")
    call(stranger, "draft_add_class", "mine")
    for endpoint, args in (("draft_remove", ()), ("draft_rename", ("x",))):
        with pytest.raises(AppError, match="not in the list of choices"):
            stranger.predict("ants", *args, api_name=f"/{endpoint}")
    assert classes_shown(call(client, "draft", None)) == ["ants", "bees"]
    assert "| ants | 5 | 4 | 1 |" in call(client, "draft", "ants")["draft-table"]


def test_rename_and_remove_through_the_app(served_app, tmp_path):
    url, _ = served_app
    client = api_client(url)
    call(client, "draft_add_class", "cat")
    call(client, "draft_add_images", "cat", pictures(tmp_path, "ants", 2))
    out = call(client, "draft_rename", "cat", "Katze")
    assert classes_shown(out) == ["Katze"] and out["draft-added"] == "Renamed **cat** to **Katze**."
    assert "| Katze | 2 | 1 | 1 |" in out["draft-table"]
    out = call(client, "draft_rename", "Katze", "../up")
    assert out["draft-added"].startswith("⚠ a class name has") and classes_shown(out) == ["Katze"]
    out = call(client, "draft_remove", "Katze")
    assert classes_shown(out) == [] and out["draft-added"] == "Removed class **Katze** and its images."
    refused = call(client, "draft_create", "empty")
    assert refused["draft-created"].startswith("⚠ **Not created:** add at least 2 classes")
    assert refused["dataset"] == {"__type__": "update"}


def test_a_pasted_image_is_classified_with_the_visitors_own_model_only(built, tmp_path):
    client, _, run = built
    model = run[-1]["model"]["value"]
    image = pictures(tmp_path, "bees", 1)[0]
    label = client.predict(model, image, api_name="/classify_one")
    assert label["label"] in ("ants", "bees") and {c["label"] for c in label["confidences"]} == {"ants", "bees"}
    stranger = api_client(client.src)
    for other in (model, "/etc/passwd"):
        with pytest.raises(AppError, match="No trained model yet|choose a model from the list"):
            stranger.predict(other, image, api_name="/classify_one")


def test_a_file_that_is_no_image_is_refused_in_the_snapshot_and_paste_boxes(built, tmp_path):
    client, _, run = built
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG's signature, then garbage
    before = call(client, "draft", "ants")["draft-table"]
    # The boxes hand the app the file, which it decodes with its own checks: its reason, no
    # server path (Gradio's own decoding answered "cannot identify image file '/tmp/…'").
    added = call(client, "draft_add_frame", "ants", handle_file(str(junk)))["draft-added"]
    assert "Added **0** image(s)" in added and "`notes.png`: not an image file" in added
    with pytest.raises(AppError) as refused:
        client.predict(run[-1]["model"]["value"], handle_file(str(junk)), api_name="/classify_one")
    assert str(refused.value) == "Not classified: not an image file (or a format Pillow cannot read)"
    assert call(client, "draft", "ants")["draft-table"] == before


def test_a_streamed_webcam_frame_that_is_no_image_gets_the_apps_reason(trained_checkpoint):
    """The webcam streams frames inline (data URLs), which no API client can send: the box is
    checked directly. The frame stays in memory and is decoded by the predictor, with its reason."""
    import base64
    import io

    from gradio.components.image import ImageData
    from PIL import Image

    from bees_ants.predict import Predictor
    from bees_ants.ui.common import untrusted_image

    def frame(data: bytes):
        box = untrusted_image(sources=["webcam"], streaming=True, render=False)
        return box.preprocess(ImageData(url="data:image/jpeg;base64," + base64.b64encode(data).decode()))

    picture = io.BytesIO()
    Image.new("RGB", (64, 48), COLOURS["bees"]).save(picture, "JPEG")
    good, junk = Predictor(trained_checkpoint).predict([frame(picture.getvalue()), frame(b"\xff\xd8junk")],
                                                       names=["good", "junk"])
    assert good.error is None and good.label in ("ants", "bees")
    assert junk.error == "not an image file (or a format Pillow cannot read)"
