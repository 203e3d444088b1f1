"""Does the page classify as the server does? The ants/bees val images (../shared) through
window.beesAnts.classify in headless Chromium, against the Predictor on the same checkpoint: how
many top-1 labels agree, and the largest difference in any class's probability. The page is the
exported one (served by http.server) or the app's Predict tab (--app).

    BEES_ANTS_ORT_DIR=.../onnxruntime-web/dist python -m bench.web_parity CKPT [--app]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import shutil
import socket
import statistics
import tempfile
import threading
from pathlib import Path

from bees_ants.predict import Predictor

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
VAL = SHARED / "data" / "hymenoptera_data" / "val"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

# The image decoded without colour management (as Pillow does), then classified by the page.
CLASSIFY_BYTES = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes]), {colorSpaceConversion: "none"});
  return await window.beesAnts.classify(bitmap);
}"""


@contextlib.contextmanager
def static_server(folder: Path):
    """`folder` served by Python's own static file server on a free port; yields its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def app_with_model(checkpoint: str, root: Path):
    """The app with `checkpoint` as its one shared model; yields its URL."""
    from bees_ants.catalog import Settings
    from bees_ants.ui import CSS, build_app
    for folder in ("weights", "data"):
        (root / folder).mkdir()
    for suffix in (".pt", ".pt.json"):
        shutil.copyfile(checkpoint[:-3] + suffix, root / "weights" / f"model{suffix}")
    app = build_app(Settings(data_root=root / "data", dataset_dirs=(), weights_dir=root / "weights"))
    with socket.socket() as s:  # a free port: other apps may hold Gradio's usual ones
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                           ssr_mode=False, css=CSS)
    try:
        yield url
    finally:
        app.close()


def classify_in_page(page, path: Path) -> dict[str, float]:
    ranked = page.evaluate(CLASSIFY_BYTES, base64.b64encode(path.read_bytes()).decode())
    return {r["label"]: r["probability"] for r in ranked}


def compare(page, predictor: Predictor, files: list[Path]) -> dict:
    """Top-1 agreement and the differences in probability (each image's largest), page vs predictor."""
    served = predictor.predict(files)
    agree, diffs = 0, []
    for path, prediction in zip(files, served):
        in_page = classify_in_page(page, path)
        agree += max(in_page, key=in_page.get) == max(prediction.probabilities, key=prediction.probabilities.get)
        diffs.append(max(abs(in_page[c] - p) for c, p in prediction.probabilities.items()))
    return {"images": len(files), "top1_agree": agree, "max_prob_diff": max(diffs),
            "median_prob_diff": statistics.median(diffs), "over_0.01": sum(d > 0.01 for d in diffs)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--app", action="store_true", help="the app's Predict tab instead of the exported page")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from bees_ants.webpage import export_web
    files = sorted(p for p in VAL.rglob("*") if p.is_file())
    predictor = Predictor(args.checkpoint, device="cpu")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        if args.app:
            with app_with_model(args.checkpoint, Path(tmp)) as url:
                page.goto(url)
                page.get_by_role("tab", name="Predict").click()
                page.wait_for_function("document.querySelector('#model input')?.value", timeout=600_000)  # the model picked
                page.click("#browser-live [data-role=start]")  # the model fetched, the camera started
                page.wait_for_function("window.beesAnts && beesAnts.framesPerSecond() > 0", timeout=600_000)
                page.click("#browser-live [data-role=stop]")
                result = compare(page, predictor, files)
        else:
            folder = export_web(args.checkpoint, Path(tmp) / "page.web")
            with static_server(folder) as url:
                page.goto(url)
                page.wait_for_selector("#status[data-ready]", timeout=120_000)
                result = compare(page, predictor, files)
        browser.close()
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
