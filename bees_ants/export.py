"""Export a checkpoint to files that run without this project: a `torch.export` program (.pt2)
and an ONNX model (.onnx), both made from the same traced program.

Which file where:
- .pt2 needs only torch and runs the very same kernels as the checkpoint (identical predictions);
  it is what PyTorch's deployment paths (AOTInductor, ExecuTorch) start from.
- .onnx needs only onnxruntime (no torch: a ~28 MB wheel instead of torch's hundreds of MB), for servers,
  browsers (onnxruntime-web), mobile and other languages; predictions agree to ~1e-6. ONNX export
  needs the optional packages onnx and onnxscript (requirements-extras.txt).

The app exports with `export_apart`, in a process of its own: torch.export changes state of the
whole process, which other threads training meanwhile would trip over.

Both take uint8 RGB crops, (N, 3, crop, crop) for any N, and return class probabilities —
normalisation is baked in — and carry the class names and the resize/crop recipe:

    import json, torch
    extra = {"bees_ants.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra)
    info = json.loads(extra["bees_ants.json"])
    probs = program.module()(crops_uint8_nchw)   # (N, 3, crop, crop) -> (N, classes)

    import json, onnxruntime as ort
    session = ort.InferenceSession("model.onnx")
    info = json.loads(session.get_modelmeta().custom_metadata_map["bees_ants.json"])
    probs = session.run(None, {"crops": crops_uint8_nchw})[0]
"""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .errors import MissingExtra, UserError

META_FILE = "bees_ants.json"  # the .pt2's extra file and the .onnx's metadata key
ONNX_INPUT, ONNX_OUTPUT = "crops", "probabilities"


class ProbabilitiesFromCrops(nn.Module):
    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = (crops.float() - self.mean) / self.std
        return self.model(x).softmax(1)


def traced(ckpt: Checkpoint) -> tuple[torch.export.ExportedProgram, dict]:
    """The checkpoint as an exported program (uint8 crops -> probabilities, any batch size) and
    the description both export files carry."""
    meta, prep = ckpt.meta, ckpt.meta["preprocessing"]
    module = ProbabilitiesFromCrops(ckpt.build_model(), prep["mean"], prep["std"]).eval()
    crop = prep["crop_size"]
    example = torch.zeros(2, 3, crop, crop, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    interpolation = prep.get("interpolation", "bilinear")  # older checkpoints: always bilinear
    info = {"class_names": meta["class_names"], "arch": meta["arch"], "mode": meta["mode"],
            "best": meta.get("best"), "preprocessing": {**prep, "interpolation": interpolation},
            "input": f"uint8 RGB, NCHW; resize the shorter side to {prep['resize_size']} ({interpolation}), "
                     f"then center-crop to {crop}x{crop}",
            "output": "class probabilities, (N, len(class_names))"}
    return program, info


def _save_atomically(output: Path, save) -> Path:
    tmp = output.with_name(f".{output.stem}.tmp{output.suffix}")  # torch.export.save warns unless it ends .pt2
    try:
        save(tmp)
        os.replace(tmp, output)
    except BaseException:  # a failed save must not leave a half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    return output


def _checkpoint(checkpoint: str | os.PathLike | Checkpoint) -> Checkpoint:
    return checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)


def export_program(checkpoint: str | os.PathLike | Checkpoint, output: str | os.PathLike | None = None) -> Path:
    """The checkpoint as a torch.export program; default path: the checkpoint's, with .pt2."""
    ckpt = _checkpoint(checkpoint)
    program, info = traced(ckpt)
    output = Path(output) if output else Path(ckpt.path).with_suffix(".pt2")
    return _save_atomically(output, lambda tmp: torch.export.save(program, tmp, extra_files={META_FILE: json.dumps(info)}))


def export_onnx(checkpoint: str | os.PathLike | Checkpoint, output: str | os.PathLike | None = None) -> Path:
    """The checkpoint as an ONNX model (one file, weights inside); default path: the checkpoint's,
    with .onnx. Input "crops" (uint8, N x 3 x crop x crop), output "probabilities"."""
    for package in ("onnx", "onnxscript"):  # torch's exporter imports them only when it runs
        try:
            __import__(package)
        except ImportError:
            raise MissingExtra("ONNX export", package) from None
    ckpt = _checkpoint(checkpoint)
    program, info = traced(ckpt)
    onnx_program = torch.onnx.export(program, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                     dynamo=True, verbose=False)
    onnx_program.model.metadata_props[META_FILE] = json.dumps(info)
    output = Path(output) if output else Path(ckpt.path).with_suffix(".onnx")
    return _save_atomically(output, lambda tmp: onnx_program.save(tmp, external_data=False))


def export_apart(fmt: str, checkpoint: str | os.PathLike, output: str | os.PathLike) -> Path:
    """`export_program` (fmt "pt2") or `export_onnx` ("onnx") in a process of its own, for a process
    in which other threads train, as the app's do. torch.export sets process-wide state: while it
    runs, every @torch._disable_dynamo function (torch.manual_seed, the optimizer's zero_grad and
    step, ...) edits trace metadata that all threads share, and in the app a run failed with
    "KeyError: 'custom'" while a visitor exported a model (bench.soak).

    Each export is a fork of multiprocessing's fork server, a clean single-threaded process that
    imported torch and this module once: the first export pays that start-up (seconds on a small
    CPU), the next ones start at once, and each still ends with its process."""
    receive, send = _FORK_SERVER.Pipe(duplex=False)
    worker = _FORK_SERVER.Process(target=_export_and_report, args=(fmt, str(checkpoint), str(output), send),
                                  name="bees_ants-export")
    worker.start()
    send.close()  # the worker holds the only sending end now: its exit ends `recv` whatever happens
    try:
        error = receive.recv()
    except EOFError:  # it died without a word (killed, out of memory)
        error = None
    finally:
        receive.close()
        worker.join()
    if error is not None:
        raise UserError(error)
    if worker.exitcode:
        raise RuntimeError(f"the export process ended with exit code {worker.exitcode} and no model")
    return Path(output)


_FORK_SERVER = multiprocessing.get_context("forkserver")
# What the fork server imports before it forks anything (it starts with the first export): the
# entry script (`python app.py`; without it each fork would import the app anew to rebuild
# `__main__`), this module, and the ONNX exporter's packages when installed (an ImportError is skipped).
_FORK_SERVER.set_forkserver_preload(["__main__", __name__, "onnx", "onnxscript"])


def _export_and_report(fmt: str, checkpoint: str, output: str, report) -> None:
    """In the export process: export, then send None, or the message of a UserError (what the
    command line would print as its advice)."""
    try:
        (export_onnx if fmt == "onnx" else export_program)(checkpoint, output)
    except UserError as e:
        report.send(str(e))
        return
    report.send(None)
