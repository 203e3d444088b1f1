"""A new user, in a real browser (headless Chromium with its fake camera): a three-class dataset built
from image files and webcam snapshots, hostile files refused with a reason, the dataset created,
trained, and the webcam then classified live; a pasted image classified too.

Skips when Playwright or the browser is missing. Screenshots go to $BEES_ANTS_SCREENSHOTS (default
/tmp/screens/)."""
import base64
import re
from pathlib import Path

import pytest

from conftest import COLOURS, write_image
from test_e2e_browser import ARGS, CHROMIUM, LONG, SCREENS, expect, set_up_training, show_tab, sync_api

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")
# Chromium's fake camera: a moving test pattern, granted without a permission prompt.
CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
# Snapshot, then wait until it is handled: the line says "Taking 1 frame(s)…" and then what became
# of the frame, which may read as the last one did ("already in this class"), so the observer waits
# for the line's text (.md: not the progress marks beside it) to change to something other than
# "Taking". While the camera streams, Playwright's click never finds the page "stable" (a person's
# click does land): the buttons (Burst, Snapshot) get their click event directly.
SNAP = """(line) => new Promise(resolve => {
  const text = line.querySelector('.md');
  const observer = new MutationObserver(() => {
    if (!text.textContent.includes('Taking')) { observer.disconnect(); resolve(text.textContent); }
  });
  observer.observe(text, {subtree: true, childList: true, characterData: true});
  setTimeout(() => { observer.disconnect(); resolve('no answer in 30 s: ' + text.textContent); }, 30000);
  document.querySelector('#snap-btn').click();
})"""


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, *CAMERA])
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera", "clipboard-read", "clipboard-write"])
        yield context.new_page()
        browser.close()


def add_class(page, name):
    page.locator("#class-name input, #class-name textarea").first.fill(name)
    page.locator("#add-class-btn").click()
    expect(page.locator("#draft-class")).to_contain_text(name)
    expect(page.locator("#draft-class input:checked")).to_have_value(name)


def class_images(tmp_path, cls, colour, n):
    return [str(write_image(tmp_path / cls / f"photo {i}.png", colour, seed=i)) for i in range(n)]


@pytest.mark.timeout(600)
def test_build_train_and_predict_live(served_app, page, tmp_path):  # the page closes first: its stream ends
    url, _ = served_app
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#train-btn", timeout=LONG)
    page.locator("#builder").get_by_text("Build a dataset").click()
    expect(page.locator("#draft-table")).to_contain_text("No classes yet")

    # Two classes from files; a hostile name and hostile files get their reasons, the rest is kept.
    page.locator("#class-name input, #class-name textarea").first.fill("../etc")
    page.locator("#add-class-btn").click()
    expect(page.locator("#draft-added")).to_contain_text("a class name has 1-40 letters")
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"no png inside")
    for cls, colour in (("red", COLOURS["ants"]), ("blue", COLOURS["bees"])):
        add_class(page, cls)
        files = class_images(tmp_path, cls, colour, 6) + ([str(junk), str(fake)] if cls == "red" else [])
        page.locator("#draft-files input[type=file]").set_input_files(files)
        expect(page.locator("#draft-added")).to_contain_text(f"Added 6 image(s) to {cls}", timeout=LONG)
    expect(page.locator("#draft-table")).to_contain_text(re.compile(r"red\s*6\s*5\s*1"))

    # The third from the webcam: the camera is opened and records once, then stays open while a
    # burst and snapshots take its frames. The fake camera's pattern repeats, so two frames can be
    # the same picture, which the draft keeps once ("already in this class"): snap until there are six.
    add_class(page, "camera")
    camera = page.locator("#draft-camera")
    camera.get_by_text("Click to Access Webcam").click(timeout=LONG)
    camera.get_by_role("button", name="capture photo").click(timeout=LONG)  # "Record": the stream starts
    page.locator("#burst-frames input").fill("8")
    page.locator("#burst-btn").dispatch_event("click")
    taken = page.locator("#draft-added")
    # The burst is under way, or already over: a quick burst's frames may all be in before the
    # "Taking" line is seen.
    expect(taken).to_contain_text(re.compile(r"Taking 8 frame\(s\)|image\(s\) to camera"))
    expect(taken).not_to_contain_text(re.compile("Taking|to take"), timeout=LONG)  # every frame of the burst handled
    camera_count = page.locator("#draft-table tr", has_text="camera").locator("td").nth(1)
    for _ in range(20):
        before = int(camera_count.inner_text())
        if before >= 6:
            break
        outcome = page.locator("#draft-added").evaluate(SNAP)
        # One the class already holds (the pattern repeats) adds nothing and says so.
        if "already in this class" not in outcome:
            expect(camera_count).not_to_have_text(str(before))
    expect(camera.get_by_text("Click to Access Webcam")).to_be_hidden()  # still open: no restart per shot
    expect(camera.locator("video")).to_be_visible()
    expect(page.locator("#snap-help")).to_contain_text("duplicate")
    expect(page.locator("#draft-gallery img")).to_have_count(6)

    page.locator("#draft-name input, #draft-name textarea").first.fill("webcam set")
    page.locator("#create-btn").click()
    expect(page.locator("#draft-created")).to_contain_text("webcam_set", timeout=LONG)
    expect(page.locator("#dataset input")).to_have_value("webcam_set · blue, camera, red")
    page.locator("#builder").screenshot(path=str(SCREENS / "dataset-builder.png"))

    # Random init (no internet for ImageNet weights): ten cheap fixed-extractor epochs separate these.
    set_up_training(page, "fixed feature extractor", 10, 0.001)
    page.locator("#train-btn").click()
    expect(page.locator("#status")).to_contain_text("Finished 10 epochs", timeout=LONG)

    # Live: the new model classifies the webcam stream, its top classes with confidences.
    show_tab(page, "Predict")  # clicked until selected: in one run a single click left its model box empty
    expect(page.locator("#model input")).to_have_value(re.compile(r"^resnet18 · fixed"))
    # In the browser (onnxruntime-web) when its files can be had, else the server's stream.
    page.locator("#browser-live [data-role=start]").click()
    running = page.locator("#browser-live [data-role=fps]").filter(has_text="frames/s").or_(page.locator("#live-camera"))
    expect(running).to_be_visible(timeout=LONG)
    on_server = page.locator("#live-camera").is_visible()
    if on_server:
        page.locator("#live-camera").get_by_text("Click to Access Webcam").click()
        page.locator("#live-camera").get_by_role("button", name="capture photo").click(timeout=LONG)  # "Record"
        label = page.locator("#live-label")
    else:
        label = page.locator("#browser-live [data-role=top]")
    # The top class comes first: the camera's pattern is what the "camera" class learned from.
    expect(label).to_contain_text(re.compile(r"camera.*\d+%", re.S), timeout=LONG)
    if not on_server:  # stopped, as a person would before pasting: flat out, it takes a core from this test
        page.locator("#browser-live [data-role=stop]").click()
    # Paste: an image put on the clipboard, then the box's "Paste from Clipboard".
    picture = Path(class_images(tmp_path, "pasted", COLOURS["bees"], 1)[0]).read_bytes()
    page.evaluate("""async (b64) => {
        const blob = await (await fetch('data:image/png;base64,' + b64)).blob();
        await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]);
    }""", base64.b64encode(picture).decode())
    page.locator("#paste").get_by_text("Paste from Clipboard").click()
    expect(page.locator("#paste-label")).to_contain_text(re.compile(r"top classes\s*blue.*\d+%", re.S), timeout=LONG)
    page.locator("#live").screenshot(path=str(SCREENS / "live-webcam.png"))
