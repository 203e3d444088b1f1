"""How honest the queue's estimate is: a fine-tune holds the runner while a second visitor's run
waits behind it; the waiting job's estimated start is read every second and set against when it
really started. Two rounds on one JobManager: the first before any run has been timed here (the
guesses, jobs.GUESSED_SECONDS_PER_IMAGE), the second with the rates the first round measured.

    python -m bench.queue [--epochs 5] [--arch mobilenet_v2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bees_ants.jobs import JobManager
from bees_ants.train import TrainConfig
from bees_ants.views.training import ANY_MOMENT_SECONDS

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DATA = SHARED / "data" / "hymenoptera_data"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet-dequant.pth"


def one_round(manager: JobManager, ahead: TrainConfig, waiting: TrainConfig, name: str) -> dict:
    """The `ahead` run starts, `waiting` queues behind it at once; its estimate, once a second,
    until it starts; both then run to their end."""
    manager.submit(f"{name}-ahead", ahead)
    queued = manager.submit(f"{name}-waiting", waiting)
    samples = []  # (seconds since the submit, estimated seconds to the start, where the run ahead stands)
    while (job := manager.latest(f"{name}-waiting")).status == "queued":
        samples.append((time.time() - queued.submitted, job.starts_in, job.ahead))
        time.sleep(1.0)  # the page's pace: it redraws the status once a second
    wait = job.started - queued.submitted
    for owner in (f"{name}-ahead", f"{name}-waiting"):
        *_, final = manager.follow(owner)
        assert final.status == "completed", (owner, final.status, final.error)

    def predicted_at(fraction: float) -> float:  # the start the page promised at that point of the wait
        t, starts_in, _ = min(samples, key=lambda s: abs(s[0] - fraction * wait))
        return t + starts_in

    return {"round": name, "wait": wait, "at submit": samples[0][1],
            **{f"at {int(f * 100)}%": predicted_at(f) for f in (0.25, 0.5, 0.75)},
            "any moment": sum(s[1] < ANY_MOMENT_SECONDS for s in samples),
            "ahead last": samples[-1][2]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="of the fine-tune ahead")
    parser.add_argument("--arch", default="mobilenet_v2")
    args = parser.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    manager = JobManager(max_running=1, state_dir=out / "jobs")
    common = dict(data_dir=str(DATA), arch=args.arch, backbone_weights=str(WEIGHTS), out_dir=str(out / "weights"))
    ahead = TrainConfig(**common, mode="finetune", epochs=args.epochs, lr=0.01, backbone_lr_scale=0.1)
    waiting = TrainConfig(**common, mode="fixed", epochs=3)
    print(f"load average at start {os.getloadavg()}")
    rows = [one_round(manager, ahead, waiting, "first (guesses)"),
            one_round(manager, ahead, waiting, "second (measured)")]
    print(f"load average at end {os.getloadavg()}")
    print(f"\n{args.arch} fine-tune of {args.epochs} epochs ahead, a fixed run of 3 epochs waiting; ants/bees "
          "(397 images). Estimated start (s after the submit) read at the submit and at 25/50/75% of the real wait.\n")
    print("| round | real wait s | estimate at submit s | at 25% | at 50% | at 75% "
          "| seconds shown \"any moment now\" | the run ahead, last shown |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['round']} | {r['wait']:.0f} | {r['at submit']:.0f} | {r['at 25%']:.0f} | {r['at 50%']:.0f} "
              f"| {r['at 75%']:.0f} | {r['any moment']} | {r['ahead last']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
