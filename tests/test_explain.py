"""Grad-CAM: the feature map it explains for every backbone, heatmaps that follow the class
evidence, the predictor's explanations, `predict --explain`, and the app's /explain and
/explain_mistakes through the real client."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from bees_ants import catalog
from bees_ants.checkpoint import load_checkpoint, save_checkpoint
from bees_ants.cli import explanation_names, main
from bees_ants.config import ARCHS
from bees_ants.explain import feature_layer, gradcam
from bees_ants.models import build_model
from bees_ants.predict import Predictor
from bees_ants.visitors import Visitor
from app_fixtures import api_client
from conftest import COLOURS, SHARED, write_image
from test_app import named

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations
GREY = np.array((128, 128, 128))


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_explains_the_map_before_the_pool_for_every_backbone(arch):
    torch.manual_seed(0)
    model = build_model(arch, 2).eval()
    # resnet pools `layer4` with a module, mobilenet_v2 with a function call: found the same way.
    layer = feature_layer(model, 128)
    assert layer == ("layer4" if arch.startswith("resnet") else "features")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 128, 128)
    maps = []
    for target in (0, 1):
        heatmaps, probs = gradcam(model, layer, x, torch.full((3,), target))
        assert heatmaps.shape == (3, 128, 128) and probs.shape == (3, 2)
        assert torch.isfinite(heatmaps).all() and heatmaps.min() >= 0
        peaks = heatmaps.flatten(1).amax(1)
        assert all(peak in (0.0, 1.0) for peak in peaks.tolist())  # scaled to its hottest point, or nothing
        maps.append(heatmaps)
    assert ((maps[0] + maps[1]).flatten(1).amax(1) > 0).all()  # some evidence for one class or the other
    heatmaps, probs = gradcam(model, layer, x)  # by default: the predicted class
    predicted = maps[0].where(probs.argmax(1).view(-1, 1, 1) == 0, maps[1])
    torch.testing.assert_close(heatmaps, predicted)
    # the model is left as it was: weights, no gradients, eval mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and not model.training


def corners_image(path: Path, top_left: str, bottom_right: str, seed: int) -> Path:
    """A grey noisy image with one class's colour in its top-left corner and another's in the
    bottom-right one."""
    pixels = np.random.default_rng(seed).normal(0, 35, (224, 224, 3)) + GREY
    pixels[:96, :96] += np.array(COLOURS[top_left]) - GREY
    pixels[-96:, -96:] += np.array(COLOURS[bottom_right]) - GREY
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


def test_heatmaps_lie_where_the_class_evidence_is(full_size_checkpoint, tmp_path):
    """The toy model tells ants (red) from bees (blue) by colour: each class's heatmap is hot in the
    corner of its colour, and follows it when the corners swap."""
    predictor = Predictor(full_size_checkpoint)
    ants, bees = predictor.classes.index("ants"), predictor.classes.index("bees")
    files = [corners_image(tmp_path / "ants_bees.png", "ants", "bees", seed=1),
             corners_image(tmp_path / "bees_ants.png", "bees", "ants", seed=2)]
    for target, corner_of_target in ((ants, ("top_left", "bottom_right")), (bees, ("bottom_right", "top_left"))):
        for explanation, where in zip(predictor.explain(files, targets=[target, target]), corner_of_target):
            heat = explanation.heatmap
            corners = {"top_left": heat[:96, :96].mean(), "bottom_right": heat[-96:, -96:].mean()}
            hot, cold = corners[where], corners["bottom_right" if where == "top_left" else "top_left"]
            assert hot > 3 * cold, (explanation.name, predictor.classes[target], corners)


def test_explanations_use_the_predictors_own_crops_and_labels(full_size_checkpoint, tmp_path):
    predictor = Predictor(full_size_checkpoint)
    files = [write_image(tmp_path / "red.jpg", COLOURS["ants"], size=(300, 200), seed=1),
             tmp_path / "missing.png",
             write_image(tmp_path / "blue.png", COLOURS["bees"], size=(90, 160), seed=2)]
    (tmp_path / "notes.png").write_text("not an image")
    files.append(tmp_path / "notes.png")
    weights = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    saved = []  # what autograd keeps for backward: only the head's few inputs, not the backbone's maps
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        explanations = predictor.explain(files)
    assert 0 < sum(saved) < 512 * 7 * 7  # less than one feature map (resnet18: 512 x 7 x 7)
    predictions = predictor.predict(files)
    assert [e.name for e in explanations] == ["red.jpg", "missing.png", "blue.png", "notes.png"]
    assert [e.error is None for e in explanations] == [True, False, True, False]
    assert "not an image" in explanations[3].error
    for e, p, f in zip(explanations, predictions, files):
        if e.error is None:
            assert (e.label, e.confidence) == (p.label, pytest.approx(p.confidence, abs=1e-4))
            assert torch.equal(e.crop, predictor.prepare(f)[1])  # the pixels the model saw
            assert e.heatmap.shape == e.crop.shape[1:] and e.overlay().size == (224, 224)
    other = predictor.explain(files[:1], targets=[predictor.classes.index("bees")])[0]
    assert other.label == "bees" and other.confidence == pytest.approx(1 - explanations[0].confidence, abs=1e-4)
    assert all(torch.equal(weights[k], v) for k, v in predictor.model.state_dict().items())
    assert predictor.predict(files[:1])[0].confidence == pytest.approx(predictions[0].confidence)


def test_overlay_names_are_safe_and_unique():
    paths = [Path("a/photo 1.jpg"), Path("b/photo 1.png"), Path("c/Photo_1.gif"), Path("d/日本.jpg"), Path("e/..png")]
    assert explanation_names(paths) == ["photo_1-gradcam.jpg", "photo_1-2-gradcam.jpg", "Photo_1-3-gradcam.jpg",
                                        "image-gradcam.jpg", "image-2-gradcam.jpg"]


def test_cli_predict_explain_writes_an_overlay_per_readable_image(full_size_checkpoint, tmp_path, capsys):
    images = [write_image(tmp_path / "one" / "bee photo.png", COLOURS["bees"], seed=1),
              write_image(tmp_path / "two" / "bee photo.png", COLOURS["bees"], seed=2),
              write_image(tmp_path / "ant.jpg", COLOURS["ants"], seed=3)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "overlays" / "new"
    code = main(["predict", str(full_size_checkpoint), str(tmp_path / "one"), str(tmp_path / "two"),
                 str(images[2]), str(tmp_path / "broken.jpg"), "--explain", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # the broken file; the others still got their line and their overlay
    assert len(captured.out.strip().splitlines()) == 4
    assert "Grad-CAM of the predicted class over resnet18's 'layer4' feature map" in captured.err
    written = ["bee_photo-gradcam.jpg", "bee_photo-2-gradcam.jpg", "ant-gradcam.jpg"]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    for image, name in zip(images, written):
        assert f"Grad-CAM of {image}: {out / name}" in captured.err
        with Image.open(out / name) as overlay:
            assert overlay.format == "JPEG" and overlay.width > overlay.height > 200
            assert np.asarray(overlay).std() > 10  # a picture, not a blank page
    (tmp_path / "file").write_text("")
    assert main(["predict", str(full_size_checkpoint), str(images[2]), "--explain", str(tmp_path / "file" / "x")]) == 2
    assert "cannot create that folder" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "data" / "hymenoptera_data").is_dir(), reason="../shared data absent")
def test_explain_real_photos_of_every_size(full_size_checkpoint):
    files = sorted((SHARED / "data" / "hymenoptera_data" / "val" / "ants").iterdir())[:6]
    explanations = Predictor(full_size_checkpoint).explain(files)
    assert all(e.error is None and e.heatmap.shape == (224, 224) and e.heatmap.max() <= 1 for e in explanations)


# -- the app -------------------------------------------------------------------------------------

def own_model(settings, client: Client, checkpoint: Path, dataset_root: Path) -> str:
    """`checkpoint` as the client's own model, saying it was trained on `dataset_root`."""
    ckpt = load_checkpoint(checkpoint)
    meta = {**ckpt.meta, "dataset": {**ckpt.meta["dataset"], "root": str(dataset_root)}}
    folder = catalog.checkpoint_folder(settings, Visitor(f"session:{client.session_hash}"))
    return str(save_checkpoint(folder / "mine.pt", ckpt.state_dict, meta))


def value(output):
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


@pytest.fixture(scope="module")
def owner(served_app, full_size_checkpoint, tmp_path_factory):
    """A client with its own model, whose val set has its two class folders swapped: every val
    image is a mistake."""
    url, settings = served_app
    client = api_client(url)
    swapped = shutil.copytree(load_checkpoint(full_size_checkpoint).meta["dataset"]["root"],
                              tmp_path_factory.mktemp("swapped") / "data")
    (swapped / "val" / "ants").rename(swapped / "val" / "tmp")
    (swapped / "val" / "bees").rename(swapped / "val" / "ants")
    (swapped / "val" / "tmp").rename(swapped / "val" / "bees")
    return client, own_model(settings, client, full_size_checkpoint, swapped)


def test_app_explains_the_uploads_with_the_predictions_labels(owner, tmp_path):
    client, model = owner
    files = [handle_file(write_image(tmp_path / f"{i}.png", COLOURS[c], seed=i))
             for i, c in enumerate(("ants", "bees", "bees"))]
    gallery, *_ = client.predict(model, files, api_name="/predict")
    explained = value(client.predict(model, files, api_name="/explain"))
    assert [e["caption"] for e in explained] == [g["caption"] for g in gallery]
    for e in explained:
        with Image.open(e["image"]) as overlay:
            assert overlay.size == (224, 224)
    with pytest.raises(AppError, match="Add images to classify first"):
        client.predict(model, [], api_name="/explain")


def test_app_explains_only_the_visitors_own_models(served_app, owner, tmp_path):
    url, _ = served_app
    _, model = owner
    stranger = api_client(url)
    image = handle_file(write_image(tmp_path / "a.png", COLOURS["ants"]))
    with pytest.raises(AppError, match="No trained model yet"):
        stranger.predict(model, [image], api_name="/explain")


def test_app_draws_heatmaps_over_the_mistakes(owner):
    client, model = owner
    with pytest.raises(AppError, match="Evaluate a model first"):
        client.predict(True, api_name="/explain_mistakes")
    out = named(client, "evaluate", client.predict(model, api_name="/evaluate"))
    assert out["mistakes-gradcam"]["visible"] and out["mistakes-gradcam"]["value"] is False
    plain = value(out["mistakes"])
    assert len(plain) == 8  # the swapped val set: every image is a mistake
    heatmaps = value(client.predict(True, api_name="/explain_mistakes"))
    assert [h["caption"] for h in heatmaps] == [p["caption"] for p in plain]
    for h, p in zip(heatmaps, plain):
        with Image.open(h["image"]) as overlay, Image.open(p["image"]) as thumbnail:
            assert overlay.size == (224, 224) and thumbnail.size != overlay.size
    again = value(client.predict(False, api_name="/explain_mistakes"))
    assert [a["caption"] for a in again] == [p["caption"] for p in plain]
