"""Grad-CAM in a real browser: Explain on the Predict tab, heatmaps over the Evaluate tab's mistakes.

Same browser and skips as test_e2e_browser; screenshots go to the same folder.
"""
import re
import shutil

import pytest

from test_e2e_browser import LONG, SCREENS, browser, expect, open_page, show_tab  # noqa: F401 (browser: a fixture)
from bees_ants.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations


@pytest.fixture(scope="module")
def shared_model(served_app, trained_checkpoint, tmp_path_factory):
    """The session's toy model as a shared model of the app, said to be trained on a copy of its
    data whose val class folders are swapped, so its evaluation has mistakes to explain."""
    _, settings = served_app
    ckpt = load_checkpoint(trained_checkpoint)
    swapped = shutil.copytree(ckpt.meta["dataset"]["root"], tmp_path_factory.mktemp("swapped") / "toy")
    (swapped / "val" / "ants").rename(swapped / "val" / "tmp")
    (swapped / "val" / "bees").rename(swapped / "val" / "ants")
    (swapped / "val" / "tmp").rename(swapped / "val" / "bees")
    meta = {**ckpt.meta, "dataset": {**ckpt.meta["dataset"], "root": str(swapped)}}
    return save_checkpoint(settings.weights_dir / "toy.pt", ckpt.state_dict, meta)


def all_loaded(page, selector):
    page.wait_for_function(f"[...document.querySelectorAll('{selector} img')].every(i => i.naturalWidth > 0)")


@pytest.mark.timeout(300)
def test_explain_uploads_and_mistakes(browser, served_app, shared_model):  # noqa: F811
    url, settings = served_app
    SCREENS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, url)
    show_tab(page, "Predict")
    expect(page.locator("#model input")).to_have_value(re.compile(r"^resnet18 · fixed"), timeout=LONG)
    expect(page.locator("#explained")).to_be_hidden()  # on demand only
    images = sorted((settings.dataset_dirs[0] / "val").rglob("*.png"))[::2]
    page.locator("#files input[type=file]").set_input_files([str(p) for p in images])
    expect(page.locator("#gallery img")).to_have_count(len(images), timeout=LONG)

    page.locator("#explain-btn").click()
    expect(page.locator("#explained img")).to_have_count(len(images), timeout=LONG)
    all_loaded(page, "#explained")
    captions = page.locator("#gallery .caption-label").all_inner_texts()
    assert captions and page.locator("#explained .caption-label").all_inner_texts() == captions
    page.screenshot(path=str(SCREENS / "explain.png"), full_page=True)

    page.locator("#files button[aria-label='Clear']").click()  # other uploads: the old heatmaps go
    expect(page.locator("#explained")).to_be_hidden()
    page.locator("#explain-btn").click()
    expect(page.locator(".toast-body").first).to_contain_text("Add images to classify first")

    page.get_by_role("tab", name="Evaluate & export").click()
    page.locator("#eval-btn").click()
    expect(page.locator("#mistakes img").first).to_be_visible(timeout=LONG)
    expect(page.locator("#mistakes-gradcam input")).not_to_be_checked()
    count = page.locator("#mistakes img").count()
    page.locator("#mistakes-gradcam input").check()
    expect(page.locator("#mistakes")).to_contain_text("where the model saw the class it chose", timeout=LONG)
    expect(page.locator("#mistakes img")).to_have_count(count)
    all_loaded(page, "#mistakes")
    page.screenshot(path=str(SCREENS / "mistakes-gradcam.png"), full_page=True)
    page.locator("#mistakes-gradcam input").uncheck()
    expect(page.locator("#mistakes")).not_to_contain_text("where the model saw", timeout=LONG)
    expect(page.locator("#mistakes img")).to_have_count(count)
