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

import torch
from torch import nn
from torch.nn import functional as F


class _LastFeatureMap:
    """Forward hooks on every module that remember the last spatial map produced, and by whom.
    Only this thread's forward pass counts: the app may run the same model for a prediction in
    another thread meanwhile."""

    def __init__(self, model: nn.Module):
        self.name, self.output, self.thread = None, None, threading.get_ident()
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if name]

    def _hook(self, name: str):
        def remember(module, inputs, output):
            if (isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1
                    and threading.get_ident() == self.thread):
                self.name, self.output = name, output
        return remember

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def feature_layer(model: nn.Module, crop_size: int = 224) -> str:
    """The name of the module whose output Grad-CAM explains (see the module docstring)."""
    probe = _LastFeatureMap(model)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop_size, crop_size, device=next(model.parameters()).device))
    finally:
        probe.remove()
    return probe.name


def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised inputs (N, 3, H, W) -> (heatmaps (N, H, W) in [0, 1] on the CPU, class
    probabilities (N, C) on the CPU). Each heatmap explains `target[i]`, by default the predicted
    class, and is scaled so its hottest point is 1 (all zeros when nothing speaks for the class).

    Gradients are taken with respect to the input and the feature map only (autograd.grad), so no
    parameter's .grad is touched and the model, in eval mode, is left exactly as it was."""
    probe = _LastFeatureMap(model)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # frozen weights: the graph must start somewhere
            logits = model(x).float()
            features = probe.output
            if target is None:
                target = logits.argmax(1)
            score = logits.gather(1, target.to(logits.device).view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, features)
    finally:
        probe.remove()
    weights = grads.float().mean((2, 3), keepdim=True)
    cam = F.relu((weights * features.detach().float()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), 0)
    return cam.clamp(0, 1).cpu(), logits.detach().softmax(1).cpu()


def overlay(crop, heatmap: torch.Tensor, colormap: str = "jet"):
    """A uint8 CHW crop and its (H, W) heatmap -> an RGB PIL image: the colormap blended onto the
    crop, strongly where the heat is, lightly elsewhere, so the picture stays recognisable."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    image = crop.permute(1, 2, 0).numpy().astype(np.float32) / 255
    heat = heatmap.numpy()[..., None]
    colour = colormaps[colormap](heatmap.numpy())[..., :3]
    weight = 0.2 + 0.5 * heat
    blended = (1 - weight) * image + weight * colour
    return Image.fromarray((blended * 255).round().clip(0, 255).astype(np.uint8))
