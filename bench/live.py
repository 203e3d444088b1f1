"""Live predictions on a CPU while a training run fine-tunes in the same process (as in the app):
the time to classify one webcam frame, and the training's batches per second, with frames
classified in the app's live thread (one torch thread) or in an ordinary thread (torch's usual
count), frames coming as a page streams them (every STREAM_EVERY seconds). All figures come from
this one run, so compare them as ratios; other load on the machine disturbs them all.

With --browser: the Predict tab's live webcam in headless Chromium with a fake camera, the same
model classified in the page (onnxruntime-web) and streamed to the server (the fallback): frames
classified per second each way, and the server's CPU seconds per second for that one live page
(this process's CPU time: the app runs in it; Chromium does not). Needs BEES_ANTS_ORT_DIR (or
internet for the CDN).

    python -m bench.live [--seconds 20] [--browser [--checkpoint CKPT]]
"""
from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bees_ants.predict import Predictor
from bees_ants.train import TrainConfig, TrainingRun
from bees_ants.ui.live import LIVE_THREAD, STREAM_EVERY

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DATA = SHARED / "data" / "hymenoptera_data"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet-dequant.pth"


class BatchCounter:
    """Training batches done, from the run's progress reports."""

    def __init__(self):
        self.batches, self.started = 0, threading.Event()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "training":
            self.batches += 1
            self.started.set()


def stream(pool: ThreadPoolExecutor | None, predictor: Predictor, seconds: float, counter: BatchCounter) -> dict:
    """Frames for `seconds`, one every STREAM_EVERY s at most (none when `pool` is None): median ms
    per frame, and training batches per second meanwhile."""
    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    times, batches, start = [], counter.batches, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sent = time.perf_counter()
        if pool is not None:
            pool.submit(predictor.predict, [frame.copy()], names=["frame"]).result()
            times.append(time.perf_counter() - sent)
        time.sleep(max(0.0, STREAM_EVERY - (time.perf_counter() - sent)))  # the page's pace, not a wait
    elapsed = time.perf_counter() - start
    return {"ms": 1000 * statistics.median(times) if times else None,
            "batches_s": (counter.batches - batches) / elapsed}


# Counts the updates of a top-classes element: one per classified frame, whichever path drew it.
COUNT_UPDATES = """(selector) => {
  window.benchUpdates = 0;
  new MutationObserver(() => { window.benchUpdates += 1; })
    .observe(document.querySelector(selector), {childList: true, subtree: true, characterData: true});
}"""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def page_rate(page, selector: str, seconds: float, server_frames=None) -> dict:
    """Frames per second over `seconds` (counted by the server when it classifies them, else by
    the page's redraws) and this process's CPU seconds per second meanwhile."""
    page.evaluate(COUNT_UPDATES, selector)
    frames0, cpu0, start = server_frames() if server_frames else 0, time.process_time(), time.perf_counter()
    time.sleep(seconds)  # the page runs on its own meanwhile: this is the measurement window
    elapsed = time.perf_counter() - start
    frames = server_frames() - frames0 if server_frames else page.evaluate("window.benchUpdates")
    return {"frames_s": frames / elapsed, "server_cpu_s_per_s": (time.process_time() - cpu0) / elapsed}


def browser_vs_server(checkpoint: str, seconds: float) -> dict:
    """The live webcam of one page, in the browser and streamed to the server, same model."""
    from playwright.sync_api import sync_playwright

    from bees_ants.catalog import Settings
    from bees_ants.ui import CSS, build_app
    from bees_ants.ui.live import LiveView

    root = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    (root / "weights").mkdir()
    (root / "data").mkdir()
    for suffix in (".pt", ".pt.json"):  # a shared model, which every page may use
        shutil.copyfile(checkpoint[:-3] + suffix, root / "weights" / f"model{suffix}")
    classified = {"frames": 0}
    plain = LiveView.classify_frame

    @functools.wraps(plain)  # keeps the signature Gradio reads to pass the request in
    def counted(self, *args, **kwargs):
        result = plain(self, *args, **kwargs)
        classified["frames"] += result is not None
        return result

    LiveView.classify_frame = counted  # before the app wires it: the server's frames are counted
    app = build_app(Settings(data_root=root / "data", dataset_dirs=(), weights_dir=root / "weights"))
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, ssr_mode=False, css=CSS)
    results = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Predict").click()
            page.wait_for_function("document.querySelector('#model input')?.value", timeout=600_000)  # the model picked
            results["idle page"] = page_rate(page, "body", seconds / 2)
            page.click("#browser-live [data-role=start]")
            page.wait_for_function("window.beesAnts && beesAnts.framesPerSecond() > 0", timeout=600_000)
            time.sleep(3)  # past the first frames (the runtime compiles its kernels)
            results["browser"] = page_rate(page, "#browser-live [data-role=top]", seconds)
            results["browser"]["backend"] = page.evaluate("beesAnts.model.backend")
            page.click("#browser-live [data-role=stop]")
            page.close()

            page = browser.new_page()  # the runtime refused: the page falls back to the server's stream
            page.route("**/ort-wasm-simd-threaded.wasm", lambda route: route.abort())
            page.goto(url)
            page.get_by_role("tab", name="Predict").click()
            page.wait_for_function("document.querySelector('#model input')?.value", timeout=600_000)  # the model picked
            page.click("#browser-live [data-role=start]")
            page.wait_for_selector("#live-camera", state="visible", timeout=600_000)
            page.locator("#live-camera").get_by_text("Click to Access Webcam").click()
            page.locator("#live-camera").get_by_role("button", name="capture photo").click(timeout=60_000)
            page.wait_for_function("document.querySelector('#live-label').innerText.includes('%')", timeout=600_000)
            time.sleep(3)
            results["server"] = page_rate(page, "#live-label", seconds, lambda: classified["frames"])
            browser.close()
    finally:
        app.close()
        LiveView.classify_frame = plain
        shutil.rmtree(root, ignore_errors=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="per measurement")
    parser.add_argument("--browser", action="store_true", help="the page's live webcam: in the browser vs on the server")
    parser.add_argument("--checkpoint", help="--browser: this checkpoint instead of a fixed mobilenet_v2 trained first")
    args = parser.parse_args(argv)
    if not (args.checkpoint or (DATA.is_dir() and WEIGHTS.is_file())):
        print(f"needs {DATA} and {WEIGHTS}")
        return 1
    out = Path(tempfile.mkdtemp(prefix="bench-live-"))
    config = dict(data_dir=str(DATA), arch="mobilenet_v2", backbone_weights=str(WEIGHTS), out_dir=str(out))
    if args.browser:
        checkpoint = args.checkpoint
        if not checkpoint:
            run = TrainingRun(TrainConfig(mode="fixed", epochs=1, **config))
            list(run)
            checkpoint = run.checkpoint_path
        results = browser_vs_server(str(checkpoint), args.seconds)
        print(f"idle page: server CPU {results.pop('idle page')['server_cpu_s_per_s']:.3f} s/s")
        for name, r in results.items():
            print(f"{name:>9}: {r['frames_s']:6.2f} frames/s, server CPU {r['server_cpu_s_per_s']:.3f} s/s"
                  + (f" ({r['backend']})" if "backend" in r else ""))
        print(f"browser / server rate: {results['browser']['frames_s'] / results['server']['frames_s']:.1f}x")
        return 0
    run = TrainingRun(TrainConfig(mode="fixed", epochs=1, **config))
    list(run)
    predictor = Predictor(run.checkpoint_path, device="cpu")
    usual = ThreadPoolExecutor(1)  # an ordinary thread: torch's usual thread count
    idle = BatchCounter()
    warm = {name: stream(pool, predictor, 3, idle) for name, pool in (("live", LIVE_THREAD), ("usual", usual))}
    idle_ms = {name: stream(pool, predictor, args.seconds / 2, idle)["ms"]
               for name, pool in (("live", LIVE_THREAD), ("usual", usual))}
    del warm

    counter, seen = BatchCounter(), {}
    training = TrainingRun(TrainConfig(mode="finetune", epochs=1000, batch_size=8, **config), on_progress=counter)

    def train():
        seen["threads"] = torch.get_num_threads()  # started after the live thread set its own to one
        list(training)

    trainer = threading.Thread(target=train)
    trainer.start()
    counter.started.wait()
    try:
        # Alternated, so a change in the machine's other load falls on each alike.
        rows = {"no frames": [], "live": [], "usual": []}
        for _ in range(2):
            for name, pool in (("no frames", None), ("live", LIVE_THREAD), ("usual", usual)):
                rows[name].append(stream(pool, predictor, args.seconds / 2, counter))
    finally:
        training.cancel.set()
        trainer.join()
    print(f"torch threads: {torch.get_num_threads()} usual, {LIVE_THREAD.submit(torch.get_num_threads).result()} "
          f"in the live thread, {seen['threads']} in the training thread")
    batches = {name: statistics.mean(r["batches_s"] for r in rs) for name, rs in rows.items()}
    for name in ("live", "usual"):
        ms = statistics.mean(r["ms"] for r in rows[name])
        print(f"{name:>5} thread: {idle_ms[name]:6.1f} ms per frame idle, {ms:6.1f} ms while training "
              f"({ms / idle_ms[name]:.2f}x); training at {batches[name] / batches['no frames']:.2f}x "
              f"its speed without frames")
    print(f"training without frames: {batches['no frames']:.2f} batches/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
