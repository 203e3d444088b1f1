"""Export a checkpoint to a self-contained `torch.export` program (.pt2).

Why torch.export rather than ONNX: it needs nothing beyond torch itself (ONNX export would add
onnx, onnxscript and onnxruntime to the dependencies), it runs the very same kernels (identical
predictions, not merely close ones), and it is the format PyTorch's deployment paths
(AOTInductor, ExecuTorch) start from. The exported program takes uint8 RGB crops and returns
class probabilities — normalisation is baked in — and the file carries the class names and the
resize/crop recipe, so a user needs only torch and an image library:

    import json, torch
    extra = {"bees_ants.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra)
    info = json.loads(extra["bees_ants.json"])
    probs = program.module()(crops_uint8_nchw)   # (N, 3, crop, crop) -> (N, classes)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint

META_FILE = "bees_ants.json"


class ProbabilitiesFromCrops(nn.Module):
    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = (crops.float() - self.mean) / self.std
        return self.model(x).softmax(1)


def export_program(checkpoint: str | os.PathLike | Checkpoint, output: str | os.PathLike | None = None) -> Path:
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    meta, prep = ckpt.meta, ckpt.meta["preprocessing"]
    output = Path(output) if output else Path(ckpt.path).with_suffix(".pt2")
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
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        torch.export.save(program, tmp, extra_files={META_FILE: json.dumps(info)})
        os.replace(tmp, output)
    except BaseException:  # a failed save must not leave a half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    return output
