"""Every tab, filled with a trained model's results, fits a phone and passes axe-core's accessibility
checks, in a real browser (headless Chromium driven by Playwright).

Phone: Chromium's device emulation at 390x844; the page must not scroll sideways and no visible
element may stick out of the viewport (a wide table scrolls inside its own box: its hidden part is
not "visible"). Accessibility: axe-core (npm; .ci/run installs it into .ci-cache/) run on each tab;
no violation may come from the app's own elements. What Gradio itself renders (its footer, empty
boxes, upload buttons) is listed in GRADIO_OWNED: rule id -> CSS selector fragments axe reports for
it, and the README says so. Screenshots of each tab go to $BEES_ANTS_SCREENSHOTS (default
/tmp/screens/); the committed ones are in docs/screenshots/.

Skips when Playwright, Chromium or (for the axe test) axe-core is missing.
"""
import os
import re
from pathlib import Path

import pytest

from test_e2e_browser import LONG, SCREENS, browser, expect, set_up_training  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")
AXE = Path(os.environ.get("AXE_CORE", Path(__file__).parent.parent / ".ci-cache/node_modules/axe-core/axe.min.js"))
TABS = {"train": "Train", "predict": "Predict", "evaluate": "Evaluate & export", "compare": "Compare"}
PHONE = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
DESKTOP = dict(viewport={"width": 1400, "height": 1000})

# Violations in what Gradio renders, not the app: rule -> selector fragments of the nodes axe names.
GRADIO_OWNED = {
    "color-contrast": [".run-history", ".show-api", ".built-with", ".settings",  # the footer
                       ".or"],  # "- or -" inside Gradio's upload box
    # the footer's icons; a gallery's thumbnail buttons ("Thumbnail 1 of 3") around images whose alt
    # is their caption
    "image-redundant-alt": ['img[alt="Runs"]', 'img[alt="Settings"]', 'aria-label="Thumbnail '],
    "aria-prohibited-attr": [".empty"],  # aria-label on the empty-value placeholder div of a Label/Gallery
    # upload boxes' and gallery thumbnails' aria-label, which is not their visible text
    "label-content-name-mismatch": [".upload-container", ".boundedheight", 'aria-label="Thumbnail '],
    # a File box holding files: its "add more" button (aria-label an untranslated "common.upload") in a button
    "nested-interactive": ['aria-label="common.upload"'],
}

# Elements sticking out of the viewport, except those hidden by a box that scrolls or clips them.
OVERFLOW = """() => {
  const w = innerWidth, out = [];
  const clipped = (e, r) => { for (let a = e.parentElement; a; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if (o !== 'visible') { const b = a.getBoundingClientRect(); if (b.right <= w + 1 && b.left >= -1) return true; } }
    return false; };
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (!r.width || !r.height || getComputedStyle(e).visibility === 'hidden') continue;
    if ((r.right > w + 1 || r.left < -1) && !clipped(e, r))
      out.push(`${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''} ${Math.round(r.left)}..${Math.round(r.right)}`);
  }
  return {scrollWidth: document.documentElement.scrollWidth, width: w, out: out.slice(0, 20)};
}"""


@pytest.fixture(scope="module")
def visitor(browser, served_app, tmp_path_factory):
    """A visitor with a trained model, predictions and an evaluation on screen: (desktop page, url)."""
    url, settings = served_app
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#train-btn", timeout=LONG)
    set_up_training(page, "fixed feature extractor", 2, 0.01)
    page.locator("#train-btn").click()
    expect(page.locator("#status")).to_contain_text("Finished 2 epochs", timeout=LONG)
    expect(page.locator("#val-grid img")).to_be_visible(timeout=LONG)
    open_tab(page, "predict")
    images = sorted((settings.dataset_dirs[0] / "val").rglob("*.png"))[:3]
    page.locator("#files input[type=file]").set_input_files([str(p) for p in images])
    expect(page.locator("#gallery img")).to_have_count(len(images), timeout=LONG)
    open_tab(page, "evaluate")
    page.locator("#eval-btn").click()
    expect(page.locator("#per-class")).to_contain_text("precision", timeout=LONG)
    expect(page.locator("#eval-btn")).to_have_text("Evaluate on its val set")  # itself again, and enabled
    expect(page.locator("#eval-btn")).to_be_enabled()
    # A slow action shows at once that it runs, and cannot be started twice meanwhile.
    page.locator("#onnx-btn").click()
    expect(page.locator("#onnx-btn")).to_have_text("Exporting…")
    expect(page.locator("#export-btn")).to_be_disabled()
    expect(page.locator("#model-file a")).to_have_attribute("href", re.compile(r"\.onnx$"), timeout=LONG)
    expect(page.locator("#onnx-btn")).to_have_text("Export ONNX", timeout=LONG)
    expect(page.locator("#onnx-btn")).to_be_enabled()
    expect(page.locator("#model-file-note")).to_contain_text("preprocessing")
    open_tab(page, "compare")
    page.locator("#compare-models input").click()
    page.get_by_role("option").first.click()
    expect(page.locator("#compare-table")).to_contain_text("best val acc")
    page.keyboard.press("Escape")
    open_tab(page, "train")
    yield page, url
    context.close()


def open_tab(page, tab):
    page.get_by_role("tab", name=TABS[tab], exact=True).click()
    expect(page.locator(f"#tab-{tab}")).to_be_visible()


def test_every_tab_fits_a_phone(browser, visitor):
    desktop, url = visitor
    # The same visitor (its browser id lives in localStorage) on an emulated phone.
    phone = browser.new_context(**PHONE, storage_state=desktop.context.storage_state())
    page = phone.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#train-btn", timeout=LONG)
    expect(page.locator("#status")).to_contain_text("Finished 2 epochs", timeout=LONG)
    SCREENS.mkdir(parents=True, exist_ok=True)
    for tab in TABS:
        open_tab(page, tab)  # every tab's name is on screen: the tab bar wraps instead of hiding some
        if tab == "evaluate":
            page.locator("#eval-btn").click()
            expect(page.locator("#per-class")).to_contain_text("precision", timeout=LONG)
        page.screenshot(path=str(SCREENS / f"phone-{tab}.png"), full_page=True)
        layout = page.evaluate(OVERFLOW)
        assert layout["scrollWidth"] <= layout["width"], (tab, layout)
        assert layout["out"] == [], (tab, layout)
    # The live view (the webcam classified in the browser) fits too, its buttons in the page's width.
    open_tab(page, "predict")
    camera = page.locator("#browser-live").bounding_box()
    assert camera["x"] >= 0 and camera["x"] + camera["width"] <= 390
    phone.close()


def app_violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .map(v => ({id: v.id, targets: v.nodes.map(n => n.target.join(' '))}))""")
    return [f"{v['id']}: {target}" for v in violations for target in v["targets"]
            if not any(owned in target for owned in GRADIO_OWNED.get(v["id"], []))]


@pytest.mark.skipif(not AXE.is_file(), reason=f"no axe-core at {AXE} (npm install --prefix .ci-cache axe-core)")
def test_no_accessibility_violation_of_the_app_own(visitor):
    page, _ = visitor
    for tab in TABS:
        open_tab(page, tab)
        if tab == "train":  # the builder's widgets too
            page.locator("#builder").get_by_text("Build a dataset").click()
            page.locator("#class-name input, #class-name textarea").first.fill("cats")
            page.locator("#add-class-btn").click()
            expect(page.locator("#draft-table")).to_contain_text(re.compile(r"cats\s*0"))
            page.locator("#builder").screenshot(path=str(SCREENS / "builder-table.png"))
        if tab == "evaluate":
            page.screenshot(path=str(SCREENS / "evaluate-desktop.png"), full_page=True)
        violations = app_violations(page)
        assert violations == [], (tab, violations)
