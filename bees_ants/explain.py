"""Grad-CAM: where in the image the model found the evidence for a class.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of the last convolutional feature map by the
mean gradient of the class score over that map, sums the channels and keeps the positive part:
a coarse (7x7 for a 224 crop) map of where that class's evidence is, upsampled to the crop.

"The last feature map" is found the way models.head_name finds the head, generically for every
backbone: the output of the last module to finish with a spatial (N, C, H, W) map, H or W > 1.
Modules finish inside out, so that is the outermost block just before the global pool (resnet:
`layer4`; mobilenet and efficientnet: `features`), including backbones that pool with a function
call instead of a module (mobilenet_v2).

Written out rather than taken from captum (its LayerGradCam is the same few lines, but needs the
layer named per architecture and brings a dependency to pin).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

COLORMAP = "jet"  # matplotlib's: blue (no evidence) to red (the most)


def is_spatial(output) -> bool:
    return isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1


@contextmanager
def forward_hooks(modules: dict[str, nn.Module], hook):
    """`hook(name, output)` after each of `modules` runs in this thread (the app may run the same
    model for a prediction in another thread meanwhile); what it returns replaces the output."""
    thread = threading.get_ident()

    def make(name):
        return lambda module, inputs, output: hook(name, output) if threading.get_ident() == thread else None
    handles = [m.register_forward_hook(make(name)) for name, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def feature_layer(model: nn.Module, crop_size: int = 224) -> str:
    """The name of the module whose output Grad-CAM explains (see the module docstring): one
    forward pass of a blank image, watching every module."""
    last = []
    with forward_hooks(dict(model.named_modules()), lambda name, out: last.append(name) if is_spatial(out) else None):
        with torch.no_grad():
            model(torch.zeros(1, 3, crop_size, crop_size, device=next(model.parameters()).device))
    return last[-1]


def gradcam(model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised inputs (N, 3, H, W) -> (heatmaps (N, H, W) in [0, 1], class probabilities
    (N, C)), both on the CPU. Each heatmap explains `target[i]`, by default the predicted class,
    over the output of the module named `layer` (feature_layer), scaled so its hottest point is 1
    (all zeros when nothing speaks for the class).

    The gradient is taken at that feature map, made a fresh leaf: with weights that need no
    gradient (a Predictor's) the layers before it record nothing for backward (for MobileNetV2,
    8 images: 635 MB less). No parameter gets a .grad; the model, in eval mode, stays as it was."""
    features = []

    def start_graph(name, output):
        features.append(output.detach().requires_grad_(True))
        return features[-1]
    with forward_hooks({layer: model.get_submodule(layer)}, start_graph), torch.enable_grad():
        logits = model(x).float()
        if target is None:
            target = logits.argmax(1)
        score = logits.gather(1, target.to(logits.device).view(-1, 1)).sum()
        (grads,) = torch.autograd.grad(score, features[-1])
    weights = grads.float().mean((2, 3), keepdim=True)
    cam = F.relu((weights * features[-1].detach().float()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), 0)
    return cam.clamp(0, 1).cpu(), logits.detach().softmax(1).cpu()


def heatmap_overlay(crop: torch.Tensor, heatmap: torch.Tensor):
    """A uint8 CHW crop and its (H, W) heatmap -> an RGB PIL image: the colormap blended onto the
    crop, strongly where the heat is, lightly elsewhere, so the picture stays recognisable."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    image = crop.permute(1, 2, 0).numpy().astype(np.float32) / 255
    heat = heatmap.numpy()[..., None]
    colour = colormaps[COLORMAP](heatmap.numpy())[..., :3]
    weight = 0.2 + 0.5 * heat
    blended = (1 - weight) * image + weight * colour
    return Image.fromarray((blended * 255).round().clip(0, 255).astype(np.uint8))
