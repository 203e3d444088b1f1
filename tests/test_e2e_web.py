"""The model in the browser (onnxruntime-web): the exported web page served by Python's static
file server, and the app's Predict tab, each classifying with window.beesAnts.classify what the
server's Predictor classifies; the page's preprocessing gives Pillow's very pixels.

Skips without Playwright, Chromium, or onnxruntime-web's files (BEES_ANTS_ORT_DIR: .ci/run
installs them from npm); the export tests also need the ONNX extras.
"""
import base64
import json
import os
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest

from bees_ants.errors import UserError
from bees_ants.checkpoint import Checkpoint
from bees_ants.cli import main
from bees_ants.models import build_model, preprocessing_for
from bees_ants.predict import Predictor
from bees_ants.webpage import FLAVOURS, ORT_CDN, ORT_DIR_ENV, ORT_INTEGRITY, export_web, local_runtime
from conftest import COLOURS, write_image

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations
pytest.importorskip("onnxscript", reason="web export needs onnx and onnxscript (requirements.txt)")
ORT_DIR = os.environ.get(ORT_DIR_ENV)
needs_runtime = pytest.mark.skipif(not ORT_DIR, reason=f"set {ORT_DIR_ENV} to onnxruntime-web's dist folder "
                                                      "(npm install onnxruntime-web; .ci/run does)")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
LONG = 120_000  # ms; generous for a loaded 2-core machine, never a measured quantity
SCREENS = Path(os.environ.get("BEES_ANTS_SCREENSHOTS", "/tmp/screens"))
# Decoded as Pillow decodes (no colour management), then classified by the page.
CLASSIFY = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes]), {colorSpaceConversion: "none"});
  return await window.beesAnts.classify(bitmap);
}"""
PREPROCESS = """async ([b64, prep]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes]), {colorSpaceConversion: "none"});
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height), ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return window.beesAnts.preprocess(rgba, bitmap.width, bitmap.height, prep).join(",");
}"""  # one string: as an array, Playwright would pass its 150,528 numbers one by one (seconds an image)


def images(folder: Path) -> list[Path]:
    """PNGs of both classes, smaller and larger than the crop, landscape and portrait."""
    sizes = [(64, 48), (300, 200), (130, 97), (257, 400)]
    return [write_image(folder / f"{i}.png", COLOURS["ants" if i % 2 else "bees"], size=size, seed=300 + i)
            for i, size in enumerate(sizes)]


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def agrees(page, predictor: Predictor, files: list[Path]) -> None:
    """The page's ranking is the predictor's, its probabilities the same to float precision."""
    for path, served in zip(files, predictor.predict(files)):
        ranked = page.evaluate(CLASSIFY, b64(path))
        assert [r["label"] for r in ranked] == sorted(served.probabilities, key=served.probabilities.get, reverse=True)
        for r in ranked:
            assert r["probability"] == pytest.approx(served.probabilities[r["label"]], abs=1e-4)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web_page(trained_checkpoint, tmp_path_factory):
    return export_web(trained_checkpoint, tmp_path_factory.mktemp("web") / "page.web", ort_dir=ORT_DIR)


def test_web_export_without_local_runtime_points_at_the_cdn(trained_checkpoint, web_page, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.delenv(ORT_DIR_ENV, raising=False)
    # The checkpoint's ONNX model as `web_page` exported it: the page around it is what is tested here
    # (the export itself: `web_page`, tests/test_export.py).
    monkeypatch.setattr("bees_ants.webpage.export_onnx",
                        lambda checkpoint, output: shutil.copyfile(web_page / "model.onnx", output))
    folder = tmp_path / "page.web"
    assert main(["export", str(trained_checkpoint), "--format", "web", "--output", str(folder)]) == 0
    assert f"exported to {folder} and {folder}.zip" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["classify.js", "index.html", "model.json", "model.onnx",
                                                        "runtime.json"]
    runtime = json.loads((folder / "runtime.json").read_text())
    assert runtime["base"] == ORT_CDN and runtime["integrity"] == ORT_INTEGRITY
    assert json.loads((folder / "model.json").read_text())["class_names"] == ["ants", "bees"]
    with zipfile.ZipFile(tmp_path / "page.web.zip") as z:  # the zip unpacks to the same folder
        files = [name for name in z.namelist() if not name.endswith("/")]
        assert sorted(files) == sorted(f"page.web/{p.name}" for p in folder.iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers


def test_a_folder_without_the_runtime_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(UserError, match="npm install onnxruntime-web@"):
        local_runtime(tmp_path)


@needs_runtime
def test_the_pinned_hashes_are_those_of_the_local_runtime():
    """The CDN and a local folder are checked against the same hashes: those of npm's files."""
    import hashlib
    folder = local_runtime()
    for name in {f for flavour in FLAVOURS.values() for f in flavour.values()}:
        if (folder / name).is_file():
            digest = base64.b64encode(hashlib.sha384((folder / name).read_bytes()).digest()).decode()
            assert ORT_INTEGRITY[name] == f"sha384-{digest}", name


@needs_runtime
@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])  # bilinear and bicubic recipes
def test_the_page_crops_the_pixels_pillow_does(browser, web_page, tmp_path, arch):
    from bench.web_parity import static_server
    prep = asdict(preprocessing_for(arch))
    predictor = Predictor(Checkpoint(build_model(arch, 2).state_dict(), {"arch": arch, "class_names": ["a", "b"],
                                     "mode": "fixed", "preprocessing": prep}), device="cpu")
    page = browser.new_page()
    with static_server(web_page) as url:
        page.goto(url)
        for path in images(tmp_path):
            _, crop, _ = predictor.prepare(path)
            pixels = [int(v) for v in page.evaluate(PREPROCESS, [b64(path), prep]).split(",")]
            assert pixels == crop.flatten().tolist(), path.name
    page.close()


@needs_runtime
def test_the_exported_page_classifies_as_the_server_does(browser, web_page, trained_checkpoint, tmp_path):
    from bench.web_parity import static_server
    page = browser.new_page(viewport={"width": 390, "height": 844})
    with static_server(web_page) as url:
        page.goto(url)
        page.wait_for_selector("#status[data-ready]", timeout=LONG)
        assert "ants, bees in this browser" in page.inner_text("#status")
        agrees(page, Predictor(trained_checkpoint, device="cpu"), images(tmp_path))
        page.set_input_files("#file", str(images(tmp_path)[0]))  # a chosen file: its top classes shown
        page.wait_for_selector("#dropped-top li", timeout=LONG)
        page.click("#start")  # the fake camera's frames, classified one after another
        page.wait_for_function("beesAnts.framesPerSecond() > 0", timeout=LONG)
        assert "frames/s, in this browser (WebAssembly)" in page.inner_text("[data-role=fps]")
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / "web-page-phone.png"))
    page.close()


@pytest.fixture(scope="module")
def app_with_model(trained_checkpoint, web_page, tmp_path_factory):
    """The app with the trained checkpoint as a shared model (every visitor may use it), its ONNX
    export already made (the app exports on demand otherwise: tests/test_export.py covers that)."""
    from app_fixtures import running_app

    from bees_ants.catalog import Settings
    root = tmp_path_factory.mktemp("webapp")
    for suffix in (".pt", ".pt.json"):
        shutil.copyfile(str(trained_checkpoint)[:-3] + suffix, root / f"shared-model{suffix}")
    shutil.copyfile(web_page / "model.onnx", root / "shared-model.onnx")  # newer than the checkpoint: up to date
    (root / "data").mkdir()
    with running_app(Settings(data_root=root / "data", dataset_dirs=(), weights_dir=root)) as url:
        yield url


def open_live(browser, url, **page_options):
    page = browser.new_page(**page_options)
    page.goto(url)
    page.get_by_role("tab", name="Predict").click()
    page.wait_for_selector("#browser-live [data-role=start]", timeout=LONG)
    page.wait_for_function("window.beesAnts !== undefined", timeout=LONG)
    page.wait_for_function("document.querySelector('#model input')?.value", timeout=LONG)  # the model picked
    return page


@needs_runtime
def test_the_predict_tab_classifies_the_webcam_in_the_browser(browser, app_with_model, trained_checkpoint, tmp_path):
    page = open_live(browser, app_with_model, viewport={"width": 1400, "height": 1000})
    page.click("#browser-live [data-role=start]")
    page.wait_for_function("window.beesAnts.framesPerSecond() > 0", timeout=LONG)
    live = page.inner_text("#browser-live")
    assert "frames/s, in this browser (WebAssembly)" in live and "frames never leave it" in live
    assert len(page.locator("#browser-live [data-role=top] li").all()) == 2  # top-3 of two classes
    assert not page.locator("#live-camera").is_visible()  # the server's stream stays off
    agrees(page, Predictor(trained_checkpoint, device="cpu"), images(tmp_path))
    page.click("#browser-live [data-role=stop]")
    page.close()


@needs_runtime
def test_without_the_runtime_the_page_says_so_and_streams_to_the_server(browser, app_with_model):
    page = open_live(browser, app_with_model)
    page.route("**/ort-wasm-simd-threaded.wasm", lambda route: route.abort())
    page.click("#browser-live [data-role=start]")
    page.wait_for_selector("#live-camera", state="visible", timeout=LONG)
    assert "onnxruntime-web could not start here" in page.inner_text("#browser-live [data-role=status]")
    page.close()
