"""Benchmark: datasets larger than memory, decode-once vs streaming from disk.

    python -m bench.memory                   # 20,000 generated JPEGs under /tmp (kept for re-runs)
    python -m bench.memory --images 2000     # a quick look

Generates a deterministic image set (seeded: varied sizes and aspect ratios, JPEG, two classes,
80/20 train/val) under /tmp, reused when it is already there, then measures each path in a fresh
subprocess, one after the other:
- decode-once (`load_dataset` with an unlimited budget): every image decoded at load and kept;
- streaming (`load_dataset` with a 1 MB budget): headers read at load, every pass decodes in
  DataLoader workers.
For each: load time, s/epoch, peak RSS (`ru_maxrss` of the process, and the process plus its
DataLoader workers' private memory, sampled). An epoch is what a training run's data path does per
epoch, without the model: every train image augmented (RandomResizedCrop + flip, batch 32,
shuffled) and every val image centre-cropped, each batch normalised to float as the loop does
before the model; the first --timed-images of it are timed and s/epoch extrapolated. The model's own rate is measured
apart (MobileNetV2 forward, random init, batch 16, on decoded crops), to compare per-image costs.
The crossover: the epochs after which streaming's per-epoch decoding has cost more than decoding
once, and the dataset size at which the decoded images exceed the default budget on this machine.

Writes bench/results/memory.json and rewrites bench/results/RESULTS.md (bench.run.write_results_md).
On a busy 2-core machine: ~15 min the first time (generating the set took 4.5 of them), ~9 min
with the set already there and --timed-images 3000; the decoded set needs ~6.5 GB of RAM.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
JSON_NAME = "memory.json"
ASPECTS = (4 / 3, 3 / 2, 1.0, 16 / 9, 3 / 4, 2 / 3)  # landscape photos, square, wide, portrait
LONG_SIDE = (320, 800)  # pixels, uniform
COLOURS = ((200, 60, 40), (40, 70, 210))
ARCH = "resnet18"  # its preprocessing: resize 256, crop 224 (the "~0.26 MB each at 256 px")


# -- the image set --------------------------------------------------------------------------------

def _write_image(job) -> int:
    path, index, seed, label = job
    rng = np.random.default_rng([seed, index])
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    long = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    w, h = (long, round(long / aspect)) if aspect >= 1 else (round(long * aspect), long)
    # A smooth random pattern around the class colour, with fine noise: photo-like JPEG sizes
    coarse = (rng.normal(0, 45, (6, 8, 3)) + COLOURS[label]).clip(0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
    img = (img + rng.integers(-12, 13, (h, w, 1), dtype=np.int16)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, "JPEG", quality=88)
    return path.stat().st_size


def generate(root: Path, images: int, seed: int) -> dict:
    """`images` JPEGs in root/{train,val}/{ants,bees}/, the same for the same seed; reused when complete."""
    done = root / "complete.json"
    if done.exists():
        return {**json.loads(done.read_text()), "reused": True}
    jobs = []
    for i in range(images):
        split = "val" if i % 5 == 4 else "train"
        label = i % 2
        jobs.append((root / split / ("ants", "bees")[label] / f"{i:06d}.jpg", i, seed, label))
    start = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        sizes = list(pool.map(_write_image, jobs, chunksize=64))
    info = {"images": images, "train": sum(j[0].parts[-3] == "train" for j in jobs), "seed": seed,
            "jpeg_mb": round(sum(sizes) / 2**20, 1), "generate_s": round(time.perf_counter() - start, 1)}
    info["val"] = images - info["train"]
    done.write_text(json.dumps(info))
    return {**info, "reused": False}


# -- one path, in a fresh process -----------------------------------------------------------------

def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kilobytes


def rss_with_workers_mb() -> float:
    """This process's resident memory plus its children's (the DataLoader workers') private pages:
    what a forked worker shares with this process is counted once."""
    me, total_kb = os.getpid(), 0
    for pid in os.listdir("/proc"):
        try:
            if not pid.isdigit():
                continue
            if int(pid) == me:
                keys = ("Rss:",)
            elif int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == me:
                keys = ("Private_Clean:", "Private_Dirty:")
            else:
                continue
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total_kb += sum(int(line.split()[1]) for line in f if line.startswith(keys))
        except (OSError, ValueError):  # a worker that just exited
            pass
    return total_kb / 1024


class PeakSampler(threading.Thread):
    """The largest `rss_with_workers_mb()` seen, sampled every `interval` seconds until `stop`."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.peak, self.done = interval, 0.0, threading.Event()

    def run(self):
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, rss_with_workers_mb())

    def stop(self) -> float:
        self.done.set()
        self.join()
        return round(max(self.peak, rss_with_workers_mb()), 1)


def seconds_per_image(batches, prep, limit: int) -> tuple[float, int]:
    """Time the first `limit` images of `batches` (at least one batch), normalised as the loop does."""
    n, start = 0, time.perf_counter()
    with contextlib.closing(batches):  # stops a streaming pass's workers when we stop early
        for x, y in batches:
            prep.normalize(x)
            n += len(y)
            if n >= limit:
                break
    return (time.perf_counter() - start) / n, n


def measure_path(data: Path, budget_mb: int, timed_images: int) -> dict:
    import torch
    from bees_ants.data import eval_batches, load_dataset, train_batches
    from bees_ants.models import preprocessing_for

    prep = preprocessing_for(ARCH)
    imports = peak_rss_mb()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    ds = load_dataset(data, prep, memory_budget_mb=budget_mb)
    load_s = time.perf_counter() - start
    after_load = peak_rss_mb()
    torch.manual_seed(0)
    train, val = ds.splits["train"], ds.splits["val"]
    # The first images of an epoch, train and val in proportion, timed; the epoch is extrapolated.
    train_s, train_n = seconds_per_image(train_batches(train, prep, 32), prep, timed_images * len(train) // (len(train) + len(val)))
    val_s, val_n = seconds_per_image(eval_batches(val, prep.crop_size, 32), prep, timed_images * len(val) // (len(train) + len(val)))
    kept = [im for s in ds.splits.values() for im in (s.images or [])]
    return {"storage": ds.storage, "load_s": round(load_s, 1), "epoch_s": round(train_s * len(train) + val_s * len(val), 1),
            "timed_images": {"train": train_n, "val": val_n},
            "images": len(train) + len(val), "skipped": len(ds.skipped),
            "decoded_mb": round(sum(im.nbytes for im in kept) / 2**20, 1) if kept else None,
            "rss_mb": {"imports": imports, "after_load": after_load, "peak": peak_rss_mb()},
            "rss_with_workers_peak_mb": sampler.stop()}


def measure_forward(reps: int = 8, batch: int = 16) -> dict:
    import torch
    from bees_ants.models import build_model

    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, None).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
    return {"arch": "mobilenet_v2", "batch": batch, "img_s": round(reps * batch / (time.perf_counter() - start), 1)}


def in_subprocess(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.memory", *argv], cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench.memory {' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the report -----------------------------------------------------------------------------------

def crossover(res: dict) -> dict:
    once, stream = res["paths"]["decode_once"], res["paths"]["streaming"]
    extra = stream["epoch_s"] - once["epoch_s"]  # what streaming adds to every epoch
    per_image = once["decoded_mb"] / once["images"]
    return {"epochs": round(once["load_s"] / extra, 2) if extra > 0 else None,
            "decoded_mb_per_image": round(per_image, 3),
            "images_at_default_budget": int(res["default_budget_mb"] / per_image)}


def markdown(res: dict) -> str:
    d, m, c = res["dataset"], res["machine"], res["crossover"]
    once, stream = res["paths"]["decode_once"], res["paths"]["streaming"]
    rows = []
    for name, p in (("decode once (budget 1 TB)", once), ("streaming (budget 1 MB)", stream)):
        r = p["rss_mb"]
        rows.append(f"| {name} | {p['load_s']} | {p['epoch_s']} | {round(p['images'] / p['epoch_s'])} "
                    f"| {r['peak']:,.0f} | {r['imports']:,.0f} | {p['rss_with_workers_peak_mb']:,.0f} |")
    fwd = res["forward"]
    return "\n".join([
        "## Datasets larger than memory", "",
        f"Generated by `python -m bench.memory` on {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; "
        f"{m['date']}; load average {m['load_avg_at_start']} at start, {m['load_avg_at_end']} at end"
        + (" (**measured under load**: other jobs shared the cores)" if m["load_avg_at_start"][0] > 0.5 * m["cores"] else "")
        + f". Data: {d['images']:,} generated JPEGs (seed {d['seed']}, long side {LONG_SIDE[0]}–{LONG_SIDE[1]} px, "
        f"aspect 2:3 to 16:9; {d['train']:,} train / {d['val']:,} val; {d['jpeg_mb']:,} MB on disk, in the page "
        f"cache), {res['arch']} preprocessing (resize {res['resize']}, crop {res['crop']}), "
        f"{res['workers']} decode threads / DataLoader workers. Each path ran in a fresh process.", "",
        "An epoch here is the data path of one training epoch without the model: every train image "
        "augmented (batch 32, shuffled), every val image centre-cropped, each batch normalised to float. "
        f"The first {once['timed_images']['train']:,} train and {once['timed_images']['val']:,} val images of an "
        "epoch were timed (worker start-up included) and s/epoch extrapolated to the whole set; load is timed "
        "whole (decode-once: every image decoded; streaming: listing and image headers).", "",
        "| path | load s | s/epoch | img/s per epoch | peak RSS MB | of which torch imports MB "
        "| peak RSS + workers' private MB |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"- decoded once, the images take {once['decoded_mb']:,} MB ({c['decoded_mb_per_image']} MB each); "
        f"streaming keeps none (`{stream['storage']}`).",
        (f"- crossover in epochs: streaming's extra decoding per epoch ({stream['epoch_s'] - once['epoch_s']:.1f} s) "
         f"adds up to the one-time decode ({once['load_s']} s) after **{c['epochs']} epochs**; every later epoch "
         "costs streaming that much more on this CPU." if c["epochs"] is not None else
         f"- crossover in epochs: none here: a streaming epoch ({stream['epoch_s']} s) took no longer than a "
         f"decode-once epoch ({once['epoch_s']} s), so streaming never cost more than decoding once, which "
         f"also pays its load ({once['load_s']} s)."),
        f"- crossover in size: the default budget here (half the available memory, {res['default_budget_mb']:,} MB) "
        f"holds **{c['images_at_default_budget']:,} images** decoded; larger sets stream.",
        f"- the model's side, for scale: {fwd['arch']} forward {fwd['img_s']} img/s (batch {fwd['batch']}; a "
        "training step costs several times a forward) against streaming's "
        f"{round(stream['images'] / stream['epoch_s'])} img/s of data. With a GPU running the model the "
        "workers decode alongside it (not measured here); on this CPU they share the same cores.",
        "- peak RSS is the measuring process's `ru_maxrss`; the last column adds its DataLoader workers' "
        "private memory (/proc smaps_rollup, sampled every 0.5 s), so pages a forked worker shares with "
        "its parent count once.", ""])


def machine() -> dict:
    import torch
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown CPU")
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "ram_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
            "torch": torch.__version__, "python": sys.version.split()[0],
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, help="where the set is generated (default /tmp/bees_ants-memory-<images>-<seed>)")
    ap.add_argument("--timed-images", type=int, default=5000,
                    help="images of an epoch timed per path (train and val in proportion); s/epoch is extrapolated")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--measure", choices=("path", "forward"), help=argparse.SUPPRESS)  # the subprocesses
    ap.add_argument("--budget-mb", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_path(args.data, args.budget_mb, args.timed_images) if args.measure == "path"
                         else measure_forward()))
        return 0

    from bees_ants.data import memory_budget_bytes
    from bees_ants.images import DECODE_THREADS
    from bees_ants.models import preprocessing_for
    from bench.run import write_results_md

    data = args.data or Path(f"/tmp/bees_ants-memory-{args.images}-{args.seed}")
    res = {"machine": machine()}
    print(f"generating {args.images:,} images in {data} …", file=sys.stderr, flush=True)
    res["dataset"] = generate(data, args.images, args.seed)
    prep = preprocessing_for(ARCH)
    res.update(arch=ARCH, resize=prep.resize_size, crop=prep.crop_size, workers=DECODE_THREADS,
               default_budget_mb=memory_budget_bytes() // 2**20, paths={})
    for name, budget_mb in (("decode_once", 10**6), ("streaming", 1)):
        print(f"measuring {name} …", file=sys.stderr, flush=True)
        res["paths"][name] = in_subprocess("--measure", "path", "--data", str(data), "--budget-mb", str(budget_mb),
                                           "--timed-images", str(args.timed_images))
        print(f"  {res['paths'][name]}", file=sys.stderr, flush=True)
    res["forward"] = in_subprocess("--measure", "forward")
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res["crossover"] = crossover(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / JSON_NAME).write_text(json.dumps(res, indent=1) + "\n")
    write_results_md(args.out)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
