"""Benchmark: the tutorial's loop (../shared/reference/tutorial_loop.py) against this project, on the
same data, weights, epochs and machine, in one run, with the bare compute bounds measured alongside.

    python -m bench.run                      # 25 epochs, fixed + finetune, mobilenet_v2 stand-in weights
    python -m bench.run --timing-epochs 3    # also ResNet-18 (random weights) timing runs of both loops
    python -m bench.run --skip-reference     # reuse the reference figures from the previous JSON
    python -m bench.run --modes finetune --skip-reference --last-blocks 5 12 --recipe-seeds 0 1 2
                                             # + the last-blocks mode and three seeds of the default fine-tune

Writes bench/results/<cpu|cuda>.json and bench/results/RESULTS.md (a table per JSON in that folder).
Both trainings are subprocesses, run one after the other, timed from spawn to exit; each stdout line
is timestamped on arrival, which gives time-to-accuracy. Bounds and prediction are measured in this
process afterwards, so nothing else competes for the cores while they are timed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from bees_ants.images import center_crop_batch, image_to_tensor, load_image
from bees_ants.models import build_model, preprocessing_for
from bees_ants.device import autocast, inference_batch_size, pick_device
from bees_ants.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REFERENCE = SHARED / "reference" / "tutorial_loop.py"
ACC_ARCH = "mobilenet_v2"  # the only architecture with real (stand-in) ImageNet weights here
REF_BATCH = 4
REF_VAL = re.compile(r"^epoch (\d+) val loss \S+ acc ([\d.]+)")      # reference epochs are 0-based
REF_TOOK = re.compile(r"^epoch (\d+) took ([\d.]+)s")
KEPT = "<!-- kept by bench.run: everything below is written by hand -->"
OUR_VAL = re.compile(r"^epoch\s+(\d+)/\d+\s.*val loss \S+ acc ([\d.]+)")


# -- the two training loops, as subprocesses ---------------------------------------------------------

def run_process(cmd: list[str], label: str, env: dict | None = None) -> tuple[float, list[tuple[float, str]]]:
    """Run to completion; wall time from spawn to exit, every output line with its arrival time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    lines = []
    for text in proc.stdout:
        lines.append((time.perf_counter() - start, text.rstrip("\n")))
        print(f"  [{label} {lines[-1][0]:7.1f}s] {lines[-1][1]}", flush=True)
    rc = proc.wait()
    wall = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"bench: {label} failed with exit code {rc}: {' '.join(cmd)}")
    return wall, lines


def last_json(lines) -> dict:
    return json.loads(next(text for _, text in reversed(lines) if text.startswith("{")))


def run_reference(args, arch: str, mode: str, epochs: int, weights: Path | None) -> dict:
    cmd = [sys.executable, str(REFERENCE), str(args.data_dir), mode, str(epochs), str(weights or "-"), arch]
    # The reference takes cuda:0 whenever it can: hide the GPU when the CPU is being benchmarked.
    env = {"CUDA_VISIBLE_DEVICES": ""} if args.device.type != "cuda" else None
    wall, lines = run_process(cmd, f"reference {arch} {mode}", env)
    final, per_epoch = last_json(lines), {}
    for t, text in lines:
        if m := REF_VAL.match(text):
            per_epoch[int(m[1]) + 1] = {"epoch": int(m[1]) + 1, "val_acc": float(m[2]), "t": round(t, 2)}
        elif m := REF_TOOK.match(text):
            per_epoch[int(m[1]) + 1]["seconds"] = float(m[2])
    if len(per_epoch) != epochs or any("seconds" not in e for e in per_epoch.values()):
        sys.exit("bench: could not parse the reference's epoch lines (has its output format changed?)")
    return {"wall_s": round(wall, 2), "self_reported_wall_s": final["wall_s"],
            "best_val_acc": final["best_val_acc"], "epochs": list(per_epoch.values())}


def run_project(args, arch: str, mode: str, epochs: int | None, weights: Path | None, ckpt_dir: str,
                extra: tuple[str, ...] = ()) -> dict:
    """Our CLI's run; `epochs` None: the default's, `extra`: more train options."""
    cmd = [sys.executable, "-m", "bees_ants", "train", "--data-dir", str(args.data_dir), "--arch", arch,
           "--mode", mode, "--backbone-weights", str(weights or "none"),
           "--device", args.device.type, "--out-dir", ckpt_dir, "--json", *extra]
    cmd += ["--epochs", str(epochs)] if epochs else []
    wall, lines = run_process(cmd, f"project {arch} {mode} {' '.join(extra)}".strip())
    final = last_json(lines)
    arrival = {int(m[1]): round(t, 2) for t, text in lines if (m := OUR_VAL.match(text))}
    if len(arrival) != len(final["history"]):  # time-to-accuracy needs every epoch line's arrival time
        sys.exit("bench: could not parse the project's epoch lines (has format_record changed?)")
    history = final["history"]
    return {"wall_s": round(wall, 2), "best_val_acc": final["best_val_acc"], "checkpoint": final["checkpoint"],
            "best_epoch": final["best_epoch"], "cache": history[-1].get("cache", ""),
            "stop_reason": history[-1].get("stop_reason", ""),
            "epochs": [{"epoch": r["epoch"], "val_acc": r["val_acc"], "t": arrival.get(r["epoch"]),
                        "seconds": round(r["seconds"], 2)} for r in history]}


def run_last_blocks(args, full: dict, ckpt_dir: str) -> list[dict]:
    """The last-blocks mode for each k of --last-blocks: fine-tune only the last k blocks on cached
    activations, against `full`, a whole-network fine-tune of the same epochs in this same run."""
    rows = []
    for k in args.last_blocks:
        ours = run_project(args, ACC_ARCH, "finetune", args.epochs, args.weights, ckpt_dir, ("--train-blocks", str(k)))
        rows.append({"train_blocks": k, "run": ours, "epoch_s": median_epoch_s(ours),
                     "per_epoch_vs_full": round(median_epoch_s(full) / median_epoch_s(ours), 2),
                     "wall_vs_full": round(full["wall_s"] / ours["wall_s"], 2)})
    return rows


def run_recipe(args, ckpt_dir: str) -> dict:
    """The default fine-tune (every setting at TrainConfig's default) for each seed of --recipe-seeds."""
    runs = {seed: run_project(args, ACC_ARCH, "finetune", None, args.weights, ckpt_dir, ("--seed", str(seed)))
            for seed in args.recipe_seeds}
    best = [r["best_val_acc"] for r in runs.values()]
    return {"config": {k: v for k, v in vars(TrainConfig(data_dir="")).items()
                       if k not in ("data_dir", "out_dir", "checkpoint_path", "device", "resume_from")},
            "runs": {str(s): r for s, r in runs.items()}, "min": min(best), "max": max(best),
            "spread": round(max(best) - min(best), 4)}


def time_to_acc(run: dict, threshold: float) -> float | None:
    """Seconds from spawn until the first epoch whose val accuracy reaches the threshold."""
    return next((e["t"] for e in run["epochs"] if e["val_acc"] >= threshold - 1e-9), None)


def median_epoch_s(run: dict) -> float | None:
    # Epoch 1 carries one-off work (kernel selection, feature caching, worker start-up): left out
    # whenever there is more than one epoch.
    secs = [e["seconds"] for e in run["epochs"] if "seconds" in e]
    return statistics.median(secs[1:] if len(secs) > 1 else secs) if secs else None


# -- bare compute bounds, in this process ------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, reps: int) -> float:
    """Median seconds of fn() after warm-up (oneDNN/cuDNN choose kernels on the first calls)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_bounds(arch: str, device, reps: int) -> dict:
    """Images/s of a bare forward and a bare forward+backward+SGD step on prepared tensors. Both
    memory formats are timed and the faster one is the bound: the best this machine can do."""
    fwd_bs, train_bs = inference_batch_size(device), TrainConfig(data_dir="").batch_size
    out = {"forward": {"batch": fwd_bs, "img_s": {}}, "train_step": {"batch": train_bs, "img_s": {}}}
    crit = nn.CrossEntropyLoss()
    for name, fmt in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
        model = build_model(arch, 2).to(device, memory_format=fmt).eval()  # values do not change timing
        x = torch.randn(fwd_bs, 3, 224, 224, device=device).contiguous(memory_format=fmt)

        def forward():
            with torch.inference_mode(), autocast(device):
                model(x)
        out["forward"]["img_s"][name] = round(fwd_bs / timed(forward, device, 3, reps), 2)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
        xt = torch.randn(train_bs, 3, 224, 224, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 2, (train_bs,), device=device)

        def step():
            with autocast(device):
                loss = crit(model(xt).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out["train_step"]["img_s"][name] = round(train_bs / timed(step, device, 2, reps), 2)
    for v in out.values():
        v["best"] = max(v["img_s"].values())
    return out


def mean_bounds(measured: list[dict]) -> dict:
    """The bounds measured before and after a run, averaged (each rate, and each best)."""
    out = {}
    for kind in ("forward", "train_step"):
        rates = {fmt: round(statistics.mean(m[kind]["img_s"][fmt] for m in measured), 2)
                 for fmt in measured[0][kind]["img_s"]}
        out[kind] = {"batch": measured[0][kind]["batch"], "img_s": rates, "best": max(rates.values()),
                     "before_after": [m[kind]["best"] for m in measured]}
    return out


def epoch_bound_s(bounds: dict, mode: str, n_train: int, n_val: int) -> float:
    """One epoch of the tutorial's recipe at the bare rates: fine-tune trains on every train image;
    fixed runs the backbone forward on every image every epoch (the head step is negligible)."""
    fwd, step = bounds["forward"]["best"], bounds["train_step"]["best"]
    return (n_train / step if mode == "finetune" else n_train / fwd) + n_val / fwd


# -- prediction, end to end vs the bare forward -------------------------------------------------------

def measure_prediction(checkpoint: str, files: list[str], device, reps: int) -> dict:
    from bees_ants.predict import Predictor
    p = Predictor(checkpoint, device=device.type)
    prep = p.preprocessing

    def prepared(fs):  # what the bare forward gets for free: decoded, cropped, normalised, on device
        crops = center_crop_batch([image_to_tensor(load_image(f, prep.resize_size, prep.interpolation)) for f in fs], prep.crop_size)
        return prep.normalize(crops.to(device))

    def bare(x, chunk):
        def f():
            with torch.inference_mode(), autocast(device):
                for part in x.split(chunk):
                    p.model(part)
        return f

    x1, xn = prepared(files[:1]), prepared(files)
    preds = p.predict(files)
    one = timed(lambda: p.predict(files[:1]), device, 2, 2 * reps)
    many = timed(lambda: p.predict(files), device, 1, reps)
    bare1 = timed(bare(x1, 1), device, 3, 2 * reps)
    # The limit for a batch: one forward of all of it, or in the project's inference batches if faster.
    chunk = inference_batch_size(device)
    bare_n = min(timed(bare(xn, len(files)), device, 2, reps), timed(bare(xn, chunk), device, 2, reps))
    return {"checkpoint_arch": p.checkpoint.meta["arch"], "files": len(files),
            "errors": sum(r.error is not None for r in preds),
            "latency_1": {"end_to_end_ms": round(one * 1e3, 1), "bare_ms": round(bare1 * 1e3, 1),
                          "ratio": round(one / bare1, 2)},
            "batch": {"end_to_end_img_s": round(len(files) / many, 2), "bare_img_s": round(len(files) / bare_n, 2),
                      "ratio": round(many / bare_n, 2)}}


# -- the report ---------------------------------------------------------------------------------------

def machine(device) -> dict:
    def proc_field(path, key):
        try:
            return next(l.split(":", 1)[1].strip() for l in open(path) if l.startswith(key))
        except (OSError, StopIteration):
            return None
    mem_kb = proc_field("/proc/meminfo", "MemTotal")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": proc_field("/proc/cpuinfo", "model name") or platform.processor(), "cores": cores,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "ram_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "os": platform.platform(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "date": dt.datetime.now().isoformat(timespec="seconds")}


def recipe_notes(mode: str, arch: str, device) -> str:
    cfg, pre = TrainConfig(data_dir=""), preprocessing_for(arch)
    notes = [f"batch {cfg.batch_size} (ref {REF_BATCH})"]
    if mode == "fixed":
        notes.append(f"{cfg.feature_views} cached augmented views, backbone in eval mode "
                     "(ref: fresh augmentation every epoch, BatchNorm in train mode)")
    notes.append(f"images decoded once, shorter side {pre.resize_size} (ref: decoded every epoch, "
                 "train crops from the full-size file, val Resize 256)")
    if device.type == "cuda":
        notes.append("bf16 autocast (ref fp32)")
    return "; ".join(notes)


def targets(res: dict) -> list[dict]:
    out = []

    def add(what, goal, measured, met, run=None):
        note = f" ({run['epochs']} epochs; target stated for 25)" if run and run["epochs"] != 25 else ""
        out.append({"target": what + note, "goal": goal, "measured": measured, "met": met})
    for r in res["runs"]:
        ref, ours = r["reference"], r["project"]
        if r["kind"] == "accuracy" and r["mode"] == "fixed":
            add("fixed: wall time vs reference", ">= 20x less", f"{r['speedup']:.1f}x", r["speedup"] >= 20, r)
            floor = ref["best_val_acc"] - 0.01
            add("fixed: best val acc", f">= {floor:.4f} (ref - 0.01)", f"{ours['best_val_acc']:.4f}",
                ours["best_val_acc"] >= floor - 1e-9, r)
        if r["kind"] == "accuracy" and r["mode"] == "finetune":
            ratio = r["project_vs_bound"]
            add("finetune: per-epoch time vs compute bound", "<= 1.1x",
                f"{ratio:.2f}x" if ratio else "n/a", bool(ratio and ratio <= 1.1), r)
            add("finetune: best val acc", ">= 0.95", f"{ours['best_val_acc']:.4f}", ours["best_val_acc"] >= 0.95, r)
        if r["kind"] == "timing" and r["mode"] == "finetune" and r["arch"] == "resnet18" and res["device"] == "cuda":
            add("GPU resnet18 finetune vs reference", ">= 10x faster", f"{r['speedup']:.1f}x", r["speedup"] >= 10, r)
    for row in res.get("last_blocks", []):
        ratio, full = row["per_epoch_vs_full"], res["last_blocks_full"]["best_val_acc"]
        add(f"last {row['train_blocks']} blocks: per-epoch time vs full fine-tune", ">= 5x less", f"{ratio:.1f}x",
            ratio >= 5)
        add(f"last {row['train_blocks']} blocks: best val acc vs full fine-tune", f">= {full:.4f}",
            f"{row['run']['best_val_acc']:.4f}", row["run"]["best_val_acc"] >= full - 1e-9)
    if recipe := res.get("recipe"):
        add(f"default fine-tune, seeds {', '.join(recipe['runs'])}: every best val acc", ">= 0.95",
            f"min {recipe['min']:.4f}", recipe["min"] >= 0.95)
        add("default fine-tune: spread over the seeds", "<= 0.015", f"{recipe['spread']:.4f}", recipe["spread"] <= 0.015)
    if res.get("prediction"):
        b = res["prediction"]["batch"]
        add(f"prediction: {res['prediction']['files']} files end to end vs bare forward", "<= 1.3x",
            f"{b['ratio']:.2f}x", b["ratio"] <= 1.3)
    return out


def fmt(x, spec=".1f", none="not reached"):
    return none if x is None else format(x, spec)


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"## {res['device'].upper()}: {m['gpu'] or m['cpu']}", "",
             f"{m['cpu']}, {m['cores']} cores ({m['cpu_capability']}, torch threads {m['torch_threads']}), "
             f"{m['ram_gib']} GiB RAM" + (f", GPU {m['gpu']}" if m["gpu"] else "")
             + f"; torch {m['torch']}, torchvision {m['torchvision']}, Python {m['python']}; {m['date']}; "
             f"load average at start {m['load_avg_at_start']}. Data: {res['dataset']['train']} train / "
             f"{res['dataset']['val']} val images.", "",
             "### Training (wall = spawn to exit, both; time-to-acc = first epoch at ref best - 0.01)", "",
             "| run | epochs | recipe differences (ours vs ref) | wall ref s | wall ours s | speedup "
             "| best acc ref | best acc ours | time-to-acc ref s | time-to-acc ours s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        ref, ours = r["reference"], r["project"]
        reused = f" (reused from {ref['reused_from']})" if ref.get("reused_from") else ""
        tta = r.get("time_to_acc", {})
        lines.append(f"| {r['mode']} {r['arch']}, {r['weights']} | {r['epochs']} | {r['recipe']} "
                     f"| {ref['wall_s']:.1f}{reused} | {ours['wall_s']:.1f} | {r['speedup']:.1f}x "
                     f"| {ref['best_val_acc']:.4f} | {ours['best_val_acc']:.4f} "
                     f"| {fmt(tta.get('reference'), none='—') if r['kind'] == 'accuracy' else '—'} "
                     f"| {fmt(tta.get('project'), none='not reached') if r['kind'] == 'accuracy' else '—'} |")
    lines += ["", "### Per epoch vs the bare compute bound (tutorial recipe at bare rates; median of epochs "
              "2..N when N > 1)", "",
              "| run | bound s/epoch | ref s/epoch | ref ÷ bound (x) | ours s/epoch | ours ÷ bound (x) |", "|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['mode']} {r['arch']} ({r['kind']}) | {r['bound_epoch_s']:.1f} "
                     f"| {fmt(r['reference_epoch_s'], none='n/a')} | {fmt(r['reference_vs_bound'], '.2f', 'n/a')} "
                     f"| {fmt(r['project_epoch_s'], none='n/a')} | {fmt(r['project_vs_bound'], '.2f', 'n/a')} |")
    lines += ["", "### Bare compute bounds (prepared tensors, median after warm-up; measured just before and "
              "just after each project run, averaged)", "",
              "| around run | forward img/s (batch) | train step img/s (batch) | best before → after |",
              "|---|---|---|---|"]
    for arch, per_mode in res["bounds"].items():
        for mode, b in per_mode.items():
            cells = [f"{v['best']:.1f} ({v['batch']}; " + ", ".join(f"{k} {x:.1f}" for k, x in v["img_s"].items()) + ")"
                     for v in (b["forward"], b["train_step"])]
            drift = ", ".join(f"{k}: {v['before_after'][0]:.1f} → {v['before_after'][1]:.1f}"
                              for k, v in (("fwd", b["forward"]), ("step", b["train_step"])))
            lines.append(f"| {mode} {arch} | {cells[0]} | {cells[1]} | {drift} |")
    if prog := res.get("progressive"):
        lines += ["", "### The three modes at equal epochs (ours; mobilenet_v2, stand-in weights)", "",
                  "| mode | epochs | wall s | best val acc | time to 0.95 val acc s |", "|---|---|---|---|---|"]
        runs = [(r["mode"], r["project"]) for r in res["runs"] if r["kind"] == "accuracy"]
        for mode, run in runs + [("progressive (fixed 5 epochs, then fine-tune)", prog)]:
            lines.append(f"| {mode} | {len(run['epochs'])} | {run['wall_s']:.1f} | {run['best_val_acc']:.4f} "
                         f"| {fmt(time_to_acc(run, 0.95))} |")
    if rows := res.get("last_blocks"):
        full = res["last_blocks_full"]
        lines += ["", "### Training only the last blocks on cached activations (ours; mobilenet_v2, stand-in "
                  "weights; per epoch: median of epochs 2..N; epoch 1 also fills the cache)", "",
                  "| run | epochs | wall s | s/epoch | epoch 1 s | per epoch vs full (x less) | wall vs full (x less) "
                  "| best val acc | cache |", "|---|---|---|---|---|---|---|---|---|",
                  f"| full fine-tune | {len(full['epochs'])} | {full['wall_s']:.1f} | {median_epoch_s(full):.1f} "
                  f"| {full['epochs'][0]['seconds']:.1f} | 1.0 | 1.0 | {full['best_val_acc']:.4f} | — |"]
        for row in rows:
            run = row["run"]
            lines.append(f"| last {row['train_blocks']} blocks | {len(run['epochs'])} | {run['wall_s']:.1f} "
                         f"| {row['epoch_s']:.1f} | {run['epochs'][0]['seconds']:.1f} | {row['per_epoch_vs_full']:.1f} "
                         f"| {row['wall_vs_full']:.1f} | {run['best_val_acc']:.4f} | {run['cache']} |")
    if recipe := res.get("recipe"):
        cfg = recipe["config"]
        lines += ["", "### Recipe: the default fine-tune, every seed (ours; mobilenet_v2, stand-in weights)", "",
                  "Settings: " + ", ".join(f"{k} {v}" for k, v in cfg.items() if k not in ("arch", "mode", "seed")),
                  "", "| seed | epochs run | best val acc | best epoch | wall s | stopped |", "|---|---|---|---|---|---|"]
        for seed, run in recipe["runs"].items():
            lines.append(f"| {seed} | {len(run['epochs'])} | {run['best_val_acc']:.4f} | {run['best_epoch']} "
                         f"| {run['wall_s']:.1f} | {run['stop_reason'] or '—'} |")
        lines.append(f"| **all** | | min {recipe['min']:.4f}, max {recipe['max']:.4f}, spread {recipe['spread']:.4f} | | | |")
    if p := res.get("prediction"):
        lines += ["", f"### Prediction ({p['checkpoint_arch']}, decode → preprocess → forward → labels, "
                  f"{p['errors']} file errors)", "", "| what | end to end | bare forward | ratio |", "|---|---|---|---|",
                  f"| 1 file, latency | {p['latency_1']['end_to_end_ms']} ms | {p['latency_1']['bare_ms']} ms "
                  f"| {p['latency_1']['ratio']:.2f}x |",
                  f"| {p['files']} files, throughput | {p['batch']['end_to_end_img_s']} img/s "
                  f"| {p['batch']['bare_img_s']} img/s | {p['batch']['ratio']:.2f}x |"]
    lines += ["", "### Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['goal']} | {t['measured']} | {'yes' if t['met'] else '**NO**'} |"
              for t in res["targets"]]
    return "\n".join(lines) + "\n"


def write_results_md(out: Path) -> None:
    """RESULTS.md from every JSON in `out`: a section per device, then bench.memory's section."""
    from bench import memory

    runs = [markdown(json.loads(p.read_text())) for p in sorted(out.glob("*.json")) if p.name != memory.JSON_NAME]
    extra = [memory.markdown(json.loads((out / memory.JSON_NAME).read_text()))] if (out / memory.JSON_NAME).exists() else []
    results = out / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    kept = old[old.index(KEPT):] if KEPT in old else ""  # records of runs made by hand (the recipe sweep)
    results.write_text(
        "# Benchmark: tutorial loop vs bees_ants\n\nGenerated by `python -m bench.run` and `python -m bench.memory` "
        "(see bench/run.py and bench/memory.py for what each figure means). Ratios are within one run on one "
        "machine.\n\n" + "\n".join(runs + extra) + (f"\n{kept}" if kept else ""))


# -- main ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=SHARED / "data" / "hymenoptera_data")
    ap.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenet_v2-imagenet-dequant.pth")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--modes", nargs="+", choices=("fixed", "finetune"), default=["fixed", "finetune"])
    ap.add_argument("--progressive", action="store_true",
                    help="also run the progressive mode (ours only) to compare the three modes at equal epochs")
    ap.add_argument("--last-blocks", type=int, nargs="*", default=[], metavar="K",
                    help="also train only the last K blocks (for each K; ours only, --epochs epochs), against a full "
                    "fine-tune of the same epochs (the finetune run's, or one run for this)")
    ap.add_argument("--recipe-seeds", type=int, nargs="*", default=[], metavar="SEED",
                    help="also run the default fine-tune (TrainConfig's settings) with each seed")
    ap.add_argument("--timing-arch", default="resnet18")
    ap.add_argument("--timing-epochs", type=int, default=0, help="random-weight timing runs (0: skip)")
    ap.add_argument("--skip-reference", action="store_true", help="reuse reference results from the last JSON")
    ap.add_argument("--device", help="cpu or cuda (default: the best available)")
    ap.add_argument("--reps", type=int, default=5, help="timed repeats for bounds and prediction")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args(argv)
    missing = [p for p in (REFERENCE, args.data_dir / "train", args.data_dir / "val", args.weights) if not p.exists()]
    if missing:
        print(f"bench: missing {', '.join(map(str, missing))}; the benchmark needs ../shared "
              "(reference loop, hymenoptera data, stand-in weights) beside the repo", file=sys.stderr)
        return 2
    args.device = pick_device(args.device)
    json_path = args.out / f"{args.device.type}.json"
    previous = json.loads(json_path.read_text()) if args.skip_reference and json_path.exists() else {}
    res = {"device": args.device.type, "machine": machine(args.device),
           "dataset": {s: len(torchvision.datasets.ImageFolder(args.data_dir / s)) for s in ("train", "val")},
           "config": {"data_dir": str(args.data_dir), "weights": str(args.weights), "epochs": args.epochs,
                      "modes": args.modes, "timing_arch": args.timing_arch, "timing_epochs": args.timing_epochs},
           "runs": [], "bounds": {}}
    plan = [("accuracy", ACC_ARCH, m, args.epochs, args.weights) for m in args.modes]
    if args.timing_epochs:
        plan += [("timing", args.timing_arch, m, args.timing_epochs, None) for m in args.modes]
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as ckpt_dir:
        for kind, arch, mode, epochs, weights in plan:
            key = dict(kind=kind, arch=arch, mode=mode, epochs=epochs)
            old = next((r for r in previous.get("runs", []) if all(r[k] == v for k, v in key.items())), None)
            if old:
                ref = {**old["reference"], "reused_from": old["reference"].get("reused_from") or previous["machine"]["date"]}
                print(f"reference {arch} {mode}: reusing the result from {ref['reused_from']}", flush=True)
            else:
                ref = run_reference(args, arch, mode, epochs, weights)
            # Bounds right before and after the project's run: this machine's speed drifts by tens of
            # percent over minutes (shared host), so a bound taken at another time is no bound.
            around = [measure_bounds(arch, args.device, args.reps)]
            ours = run_project(args, arch, mode, epochs, weights, ckpt_dir)
            around.append(measure_bounds(arch, args.device, args.reps))
            res["bounds"].setdefault(arch, {})[mode] = mean_bounds(around)
            res["runs"].append({**key, "weights": weights.name if weights else "random weights",
                                "recipe": recipe_notes(mode, arch, args.device), "reference": ref, "project": ours,
                                "speedup": round(ref["wall_s"] / ours["wall_s"], 2)})
            if kind == "accuracy":
                threshold = ref["best_val_acc"] - 0.01
                res["runs"][-1]["time_to_acc"] = {"threshold": round(threshold, 4),
                                                  "reference": time_to_acc(ref, threshold),
                                                  "project": time_to_acc(ours, threshold)}
        for r in res["runs"]:
            bound = epoch_bound_s(res["bounds"][r["arch"]][r["mode"]], r["mode"], res["dataset"]["train"], res["dataset"]["val"])
            r["bound_epoch_s"] = round(bound, 2)
            for who in ("reference", "project"):
                secs = median_epoch_s(r[who])
                r[f"{who}_epoch_s"] = round(secs, 2) if secs is not None else None
                r[f"{who}_vs_bound"] = round(secs / bound, 2) if secs is not None else None
        acc_runs = [r for r in res["runs"] if r["kind"] == "accuracy"]
        if acc_runs:  # prefer the fine-tuned model: it is the one users deploy
            ckpt = next((r for r in acc_runs if r["mode"] == "finetune"), acc_runs[0])["project"]["checkpoint"]
            val = [p for p, _ in torchvision.datasets.ImageFolder(args.data_dir / "val").samples]
            files = [val[i * len(val) // 32] for i in range(32)]  # spread over both classes
            print("measuring prediction latency and throughput …", flush=True)
            res["prediction"] = measure_prediction(ckpt, files, args.device, args.reps)
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as ckpt_dir:
        if args.last_blocks:
            full = next((r["project"] for r in res["runs"] if r["kind"] == "accuracy" and r["mode"] == "finetune"), None)
            res["last_blocks_full"] = full or run_project(args, ACC_ARCH, "finetune", args.epochs, args.weights, ckpt_dir)
            res["last_blocks"] = run_last_blocks(args, res["last_blocks_full"], ckpt_dir)
        if args.recipe_seeds:
            res["recipe"] = run_recipe(args, ckpt_dir)
    if args.progressive:  # the third mode has no tutorial counterpart: ours only, same epochs
        with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as ckpt_dir:
            res["progressive"] = run_project(args, ACC_ARCH, "progressive", args.epochs, args.weights, ckpt_dir)
    res["targets"] = targets(res)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=1) + "\n")
    write_results_md(args.out)
    print("\n" + markdown(res))
    print(f"wrote {json_path} and {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
