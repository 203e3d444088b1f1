"""The app in a real browser: headless Debian Chromium driven by Playwright.

Skips when Playwright or the browser is missing. Screenshots of each stage go to /tmp/screens/
(or $BEES_ANTS_SCREENSHOTS) so a person can look at them.
"""
import os
import re
import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=path)", allow_module_level=True)

from app_fixtures import dataset_zip  # noqa: E402
from bees_ants.config import MODE_DEFAULTS, TrainConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # gradio vs pandas 3 deprecations
expect = sync_api.expect
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENS = Path(os.environ.get("BEES_ANTS_SCREENSHOTS", "/tmp/screens"))
LONG = 60_000  # ms; generous for a loaded 2-core machine, never a measured quantity


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def close_visitors(browser):
    """Each test's visitors (browser contexts) leave with it: an open Gradio page keeps a share of
    a core busy (its timers and frames) while the next tests run."""
    yield
    for context in browser.contexts:
        context.close()


def choose(page, elem_id, option):
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def set_up_training(page, mode, epochs, lr, patience=0):
    choose(page, "arch", "resnet18")
    choose(page, "backbone", "none (random init)")  # ImageNet would need the internet
    radio = page.get_by_label(mode)
    if not radio.is_checked():  # picking a mode sets its own rate and patience: let that land first
        radio.check()
        rate = MODE_DEFAULTS["finetune"]["lr"] if mode.startswith("fine-tune") else TrainConfig.lr
        expect(page.locator("#lr input")).to_have_value(str(rate))
    for elem_id, value in (("epochs", epochs), ("lr", lr), ("batch-size", 4), ("patience", patience)):
        page.locator(f"#{elem_id} input").fill(str(value))


def open_page(browser, url):
    """A page in a new browser context (a new visitor), or in `browser`'s context when it is one
    (the same visitor: contexts share their localStorage, where the visitor id lives)."""
    if not isinstance(browser, sync_api.BrowserContext):
        browser = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = browser.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#train-btn", timeout=LONG)
    return page


def show_tab(page, name):
    """Click a tab until it is the selected one: a click in the first moments after the page
    appears, before Gradio has wired its tabs, is lost (seen under load right after open_page)."""
    tab = page.get_by_role("tab", name=name, exact=True)
    for _ in range(5):
        tab.click()
        try:
            expect(tab).to_have_attribute("aria-selected", "true", timeout=5_000)
            return
        except AssertionError:
            continue
    expect(tab).to_have_attribute("aria-selected", "true")


@pytest.mark.timeout(600)  # two training runs and every tab, at browser speed on a loaded machine
def test_train_watch_reload_cancel_predict_evaluate_export(browser, served_app, tmp_path):
    url, settings = served_app
    SCREENS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, url)
    expect(page.locator("#status")).to_contain_text("No training yet")
    expect(page.locator("#dataset input")).to_have_value("tiny · ants, bees")
    # Another backbone brings its own default weights back (no local file here: ImageNet).
    choose(page, "backbone", "none (random init)")
    choose(page, "arch", "mobilenet_v2")
    expect(page.locator("#backbone input")).to_have_value(re.compile("^ImageNet"))

    # A long fine-tuning run: watch epoch rows arrive, click Train again, follow from a second page.
    set_up_training(page, "fine-tune the whole network", 200, 0.01)
    page.locator("#train-btn").click()
    expect(page.locator("#status")).to_contain_text(re.compile(r"Training: epoch \d+ of 200 done"), timeout=LONG)
    expect(page.locator("#history tbody tr").first).to_contain_text("%")
    page.screenshot(path=str(SCREENS / "train_running.png"), full_page=True)

    page.locator("#train-btn").click()
    expect(page.locator(".toast-body").first).to_contain_text("you already have a training job")
    expect(page.locator("#notice")).to_contain_text("Not started")

    second = open_page(page.context, url)  # another tab of the same browser: same job, same history
    expect(second.locator("#status")).to_contain_text(re.compile(r"epoch \d+ of 200"), timeout=LONG)
    expect(second.locator("#history tbody tr").first).to_contain_text("%")
    second.close()

    page.locator("#cancel-btn").click()
    expect(page.locator("#status")).to_contain_text("Cancelled after", timeout=LONG)
    expect(page.locator("#result")).to_contain_text("Checkpoint:")

    # A short run to the end: best accuracy, checkpoint and the val predictions grid.
    set_up_training(page, "fixed feature extractor", 3, 0.02)
    page.locator("#train-btn").click()
    expect(page.locator("#status")).to_contain_text("Finished 3 epochs", timeout=LONG)
    expect(page.locator("#history [role=grid]")).to_have_attribute("aria-rowcount", "4")  # header + 3 epochs
    expect(page.locator("#result")).to_contain_text("Best val accuracy")
    expect(page.locator("#val-grid img")).to_be_visible(timeout=LONG)
    page.wait_for_function("document.querySelector('#val-grid img').naturalWidth > 0")
    page.screenshot(path=str(SCREENS / "train_done.png"), full_page=True)

    # Predict: the new model is picked, an image gets its label, a non-image gets its reason.
    page.get_by_role("tab", name="Predict").click()
    expect(page.locator("#model input")).to_have_value(re.compile(r"^resnet18 · fixed · val \d+\.\d%"))
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    images = sorted((settings.dataset_dirs[0] / "val").rglob("*.png"))[::3]
    page.locator("#files input[type=file]").set_input_files([*map(str, images), str(junk)])
    expect(page.locator("#gallery")).to_contain_text(re.compile(r"(ants|bees) · \d+%"), timeout=LONG)
    expect(page.locator("#gallery img")).to_have_count(len(images))
    expect(page.locator("#problems")).to_contain_text("notes.txt")
    expect(page.locator("#problems")).to_contain_text("not an image file")
    expect(page.locator("#confidences")).to_contain_text(re.compile(r"(ants|bees).*\d+%", re.S))
    page.locator("#gallery img").nth(1).click()  # select another image: its confidences show
    expect(page.locator("#confidences")).to_contain_text(re.compile(r"(ants|bees).*\d+%", re.S))
    page.keyboard.press("Escape")
    page.locator("#val-btn").click()
    expect(page.locator("#val-samples img")).to_be_visible(timeout=LONG)
    page.wait_for_function("document.querySelector('#val-samples img').naturalWidth > 0")
    page.screenshot(path=str(SCREENS / "predict.png"), full_page=True)

    # Evaluate: the newest model's card and curves; then the cancelled run (a weaker model) on its val set.
    page.get_by_role("tab", name="Evaluate & export").click()
    expect(page.locator("#eval-model input")).to_have_value(re.compile(r"^resnet18 · fixed · val"))
    expect(page.locator("#model-card")).to_contain_text("fixed feature extractor")
    expect(page.locator("#model-card")).to_contain_text("Classes: ants, bees")
    expect(page.locator("#model-curves svg circle").first).to_be_visible(timeout=LONG)
    page.locator("#eval-model input").click()
    page.get_by_role("option", name=re.compile(r"finetune.*cancelled")).click()
    expect(page.locator("#model-card")).to_contain_text("cancelled")
    page.locator("#eval-btn").click()
    expect(page.locator("#eval-summary")).to_contain_text(re.compile(r"val accuracy \d+\.\d% \(\d+ of 8 images\)"),
                                                          timeout=LONG)
    expect(page.locator("#confusion img")).to_be_visible()
    expect(page.locator("#per-class")).to_contain_text(re.compile(r"ants.*bees.*all", re.S))
    page.wait_for_function("document.querySelector('#confusion img').naturalWidth > 0")
    page.screenshot(path=str(SCREENS / "evaluate.png"), full_page=True)

    # Take it away: the checkpoint, then its torch.export program, each with how to load it.
    page.locator("#download-btn").click()
    link = page.locator("#model-file a")  # the file's download link
    expect(link).to_have_attribute("href", re.compile(r"/resnet18-finetune-[\d-]+\.pt$"), timeout=LONG)
    expect(page.locator("#model-file-note")).to_contain_text("python -m bees_ants predict")
    page.locator("#export-btn").click()
    expect(link).to_have_attribute("href", re.compile(r"/resnet18-finetune-[\d-]+\.pt2$"), timeout=LONG)
    expect(page.locator("#model-file-note")).to_contain_text("torch.export.load")
    page.screenshot(path=str(SCREENS / "export.png"), full_page=True)


def test_upload_a_zip_dataset(browser, served_app, tmp_path):
    url, _ = served_app
    archive = dataset_zip(tmp_path / "garden bugs.zip", {"ants": 5, "bees": 5, "wasps": 5},
                          {"bees/notes.txt": b"not an image"})
    page = open_page(browser, url)
    page.get_by_text("Add your own dataset (.zip)").click()
    page.locator("#upload input[type=file]").set_input_files(str(archive))
    expect(page.locator("#import-info")).to_contain_text("Imported garden_bugs", timeout=LONG)
    expect(page.locator("#import-info")).to_contain_text("notes.txt")
    expect(page.locator("#thumbs img")).to_have_count(9)  # 3 per class
    expect(page.locator("#dataset input")).to_have_value("garden_bugs · ants, bees, wasps")
    page.wait_for_function("[...document.querySelectorAll('#thumbs img')].every(i => i.naturalWidth > 0)")
    page.screenshot(path=str(SCREENS / "train_upload.png"), full_page=True)
    # a file that is not a zip: a reason on the page, and the selected dataset stays as it was
    fake = tmp_path / "photos.zip"
    fake.write_bytes(b"this is not a zip archive")
    page.locator("#upload button[aria-label='Clear']").click()  # drop the previous zip first
    page.locator("#upload input[type=file]").set_input_files(str(fake))
    expect(page.locator("#import-info")).to_contain_text("Not imported", timeout=LONG)
    expect(page.locator("#dataset input")).to_have_value("garden_bugs · ants, bees, wasps")


def options(page, elem_id) -> list[str]:
    """The labels a dropdown offers."""
    page.locator(f"#{elem_id} input").click()
    expect(page.locator(f"#{elem_id} input")).to_have_attribute("aria-expanded", "true")  # the list is open
    found = page.get_by_role("option").all_inner_texts()
    page.locator("#visitor").click()  # closes the list
    expect(page.get_by_role("option")).to_have_count(0)
    return [o.strip() for o in found]


@pytest.mark.timeout(600)
def test_two_visitors_each_see_only_their_own(browser, served_app, tmp_path):
    url, _ = served_app
    SCREENS.mkdir(parents=True, exist_ok=True)
    one, two = (browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2))
    try:
        # Visitor 1 uploads a zip, trains a model on it, then starts a long run.
        page1 = open_page(one, url)
        expect(page1.locator("#visitor")).to_contain_text("private to this browser", timeout=LONG)
        page1.get_by_text("Add your own dataset (.zip)").click()
        archive = dataset_zip(tmp_path / "visitor one.zip", {"ants": 6, "bees": 6})
        page1.locator("#upload input[type=file]").set_input_files(str(archive))
        expect(page1.locator("#dataset input")).to_have_value("visitor_one · ants, bees", timeout=LONG)
        set_up_training(page1, "fixed feature extractor", 2, 0.02)
        page1.locator("#train-btn").click()
        expect(page1.locator("#status")).to_contain_text("Finished 2 epochs", timeout=LONG)
        show_tab(page1, "Predict")
        expect(page1.locator("#model input")).to_have_value(re.compile(r"^resnet18 · fixed · val"))
        model1 = page1.locator("#model input").input_value()
        show_tab(page1, "Train")
        set_up_training(page1, "fine-tune the whole network", 200, 0.01)
        page1.locator("#train-btn").click()
        expect(page1.locator("#status")).to_contain_text(re.compile(r"Training: epoch \d+ of 200"), timeout=LONG)

        # Visitor 2 sees neither visitor 1's dataset nor their model.
        page2 = open_page(two, url)
        expect(page2.locator("#visitor")).to_contain_text("private to this browser", timeout=LONG)
        expect(page2.locator("#status")).to_contain_text("No training yet")
        datasets2 = options(page2, "dataset")
        assert datasets2 and not any("visitor_one" in d for d in datasets2)
        show_tab(page2, "Predict")
        expect(page2.locator("#model-note")).to_contain_text("No trained model yet")
        assert model1 not in options(page2, "model")
        show_tab(page2, "Train")

        # Visitor 2's run waits behind visitor 1's.
        set_up_training(page2, "fixed feature extractor", 2, 0.02)
        page2.locator("#train-btn").click()
        expect(page2.locator("#status")).to_contain_text("Queued: position 1", timeout=LONG)
        expect(page2.locator("#status")).to_contain_text(re.compile(r"The run ahead of yours: epoch \d+ of 200 done"))
        expect(page2.locator("#notice")).not_to_contain_text("Not started")
        page2.screenshot(path=str(SCREENS / "visitor2_queued.png"), full_page=True)
        page2.locator("#visitor").screenshot(path=str(SCREENS / "visitor2_line.png"))

        # Visitor 1 reloads: still their run, their dataset and their model, and the form as the run has it.
        page1.reload(wait_until="domcontentloaded")
        expect(page1.locator("#status")).to_contain_text(re.compile(r"epoch \d+ of 200"), timeout=LONG)
        expect(page1.locator("#epochs input")).to_have_value("200", timeout=LONG)
        expect(page1.get_by_label("fine-tune the whole network")).to_be_checked()
        expect(page1.locator("#lr input")).to_have_value("0.01")
        expect(page1.locator("#dataset input")).to_have_value("visitor_one · ants, bees")
        assert any("visitor_one" in d for d in options(page1, "dataset"))
        page1.get_by_role("tab", name="Predict").click()
        # (the newest of theirs is selected: the running job's best-so-far checkpoint)
        expect(page1.locator("#model input")).to_have_value(re.compile(r"^resnet18 · "), timeout=LONG)
        assert model1 in options(page1, "model")
        page1.screenshot(path=str(SCREENS / "visitor1_reloaded.png"), full_page=True)
        page1.get_by_role("tab", name="Train").click()

        # Visitor 1 cancels; visitor 2's run starts by itself and finishes.
        page1.locator("#cancel-btn").click()
        expect(page1.locator("#status")).to_contain_text("Cancelled after", timeout=LONG)
        expect(page2.locator("#status")).to_contain_text("Finished 2 epochs", timeout=LONG)
        page2.screenshot(path=str(SCREENS / "visitor2_done.png"), full_page=True)
    finally:
        one.close()
        two.close()


@pytest.mark.timeout(600)
def test_watch_the_curves_then_compare_two_runs(browser, served_app):
    """A new visitor watches a run's curves grow, then puts it next to another run."""
    url, _ = served_app
    SCREENS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, url)
    set_up_training(page, "fixed feature extractor", 3, 0.02)
    page.locator("#train-btn").click()
    expect(page.locator("#status")).to_contain_text("Finished 3 epochs", timeout=LONG)

    set_up_training(page, "fine-tune the whole network", 6, 0.01)
    page.locator("#train-btn").click()
    expect(page.locator("#status")).to_contain_text(re.compile(r"epoch [2-5] of 6 done"), timeout=LONG)
    # every epoch done so far is a point on each curve (train, val), drawn over the run's 6 planned
    # epochs; read in one snapshot of the page, as the next epoch may arrive at any moment
    page.wait_for_function("""() => {
        const done = document.querySelector('#status').innerText.match(/epoch (\\d) of 6 done/);
        return done && document.querySelectorAll('#curves svg[aria-label=Accuracy] circle').length == 2 * done[1];
    }""", timeout=LONG)
    expect(page.locator("#curves svg[aria-label=Accuracy] text", has_text="6")).to_have_count(1)
    page.screenshot(path=str(SCREENS / "train_curves.png"), full_page=True)
    page.locator("#cancel-btn").click()
    expect(page.locator("#status")).to_contain_text("Cancelled after", timeout=LONG)
    ran = int(re.search(r"Cancelled after (\d) of 6", page.locator("#status").inner_text()).group(1))

    page.get_by_role("tab", name="Evaluate & export").click()  # the newest model: the cancelled run
    expect(page.locator("#model-card")).to_contain_text("cancelled")
    expect(page.locator("#model-curves svg[aria-label=Loss] circle")).to_have_count(2 * ran)
    page.screenshot(path=str(SCREENS / "evaluate_curves.png"), full_page=True)

    page.get_by_role("tab", name="Compare").click()
    expect(page.locator("#compare-table")).to_contain_text("Pick two or more")
    for run in (r"fixed · val", r"finetune · val .*cancelled"):
        page.locator("#compare-models input").click()
        page.get_by_role("option", name=re.compile(run)).click()
    page.locator("#visitor").click()  # closes the list
    expect(page.get_by_role("option")).to_have_count(0)
    table = page.locator("#compare-table")
    expect(table).to_contain_text("fine-tune the whole network", timeout=LONG)
    expect(table).to_contain_text("fixed feature extractor")
    expect(table.locator("tr", has_text="data hash").locator("code")).to_have_count(2)
    expect(table.locator("tr", has_text="status")).to_contain_text("cancelled")
    legend = page.locator("#compare-curves .curve-legend")
    expect(legend).to_contain_text(re.compile(r"#1 resnet18/(fixed|finetune).*#2 resnet18/(fixed|finetune)"))
    expect(page.locator("#compare-curves svg[aria-label=Loss] polyline")).to_have_count(4)  # 2 runs x train, val
    page.screenshot(path=str(SCREENS / "compare.png"), full_page=True)
