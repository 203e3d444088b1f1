"""Live predictions on a CPU while a training run fine-tunes in the same process (as in the app):
the time to classify one webcam frame, and the training's batches per second, with frames
classified in the app's live thread (one torch thread) or in an ordinary thread (torch's usual
count), frames coming as a page streams them (every STREAM_EVERY seconds). All figures come from
this one run, so compare them as ratios; other load on the machine disturbs them all.

    python -m bench.live [--seconds 20]
"""
from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="per measurement")
    args = parser.parse_args(argv)
    if not (DATA.is_dir() and WEIGHTS.is_file()):
        print(f"needs {DATA} and {WEIGHTS}")
        return 1
    out = Path(tempfile.mkdtemp(prefix="bench-live-"))
    config = dict(data_dir=str(DATA), arch="mobilenet_v2", backbone_weights=str(WEIGHTS), out_dir=str(out))
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
