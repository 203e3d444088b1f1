"""Backbones by name from torchvision's registry, with one generic head swap for N classes, and
the preprocessing each expects (`Preprocessing`, from its weights entry).

Every supported architecture ends in a single `nn.Linear` classifier (resnet: `fc`, mobilenet and
efficientnet: the last `classifier[i]`), so "the head" is simply the last Linear module: find it,
replace it. Features for the fixed-extractor mode are the head's input, obtained by temporarily
swapping the head for an Identity.

For training only the last blocks, a backbone is also an ordered list of blocks (`blocks`): resnet's
stem and layer1..layer4, the children of `features` for mobilenet and efficientnet. Every supported
model is `blocks`, then global average pooling, then its classifier, so for any cut
`model(x) == after_cut(model, cut)(before_cut(model, cut)(x))`, sharing the model's own modules.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from .config import ARCHS
from .errors import UserError


class ModelError(UserError):
    """A model that cannot be built or loaded as asked; the message says why."""


def default_weights(arch: str):
    """The torchvision weights entry for `arch` (metadata only: nothing is downloaded)."""
    check_arch(arch)
    return tvm.get_model_weights(arch).DEFAULT


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its images: eval-time preprocessing, taken whole from its torchvision
    weights entry (`preprocessing_for`). Datasets, the predictor and the exports are handed one.

    Plain types only (`interpolation` is an InterpolationMode's value, "bilinear" or "bicubic"),
    because checkpoints store it; checkpoints from before it was recorded were all bilinear."""
    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> float NCHW, normalised, channels-last (faster convolutions on CPU)."""
        x = batch_uint8.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)


def preprocessing_for(arch: str, image_size: int | None = None) -> Preprocessing:
    """`arch`'s eval transforms as its torchvision weights entry gives them (sizes, statistics);
    with `image_size` (TrainConfig's), that crop, and the resize scaled in the entry's proportion."""
    t = default_weights(arch).transforms()
    resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else t.resize_size
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    if image_size is not None:
        resize, crop = round(image_size * resize / crop), image_size
    return Preprocessing(int(resize), int(crop), tuple(t.mean), tuple(t.std), t.interpolation.value)


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ModelError(f"unknown architecture '{arch}'; choose one of: {', '.join(ARCHS)}")


def head_name(model: nn.Module) -> str:
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return name


def get_head(model: nn.Module) -> nn.Module:
    return model.get_submodule(head_name(model))


def set_head(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


class WeightsDownloadError(ModelError):
    """ImageNet weights that are neither cached nor downloadable. The message gives the CLI's way
    out (--backbone-weights); the app catches this class and names its own."""

    def __init__(self, arch: str, reason: str):
        self.arch, self.reason = arch, reason
        super().__init__(f"could not download ImageNet weights for {arch} ({reason}). Offline? Pass "
                         "--backbone-weights PATH to a local state-dict file, or --backbone-weights none "
                         "for random initialisation")


def fetch_imagenet_weights(arch: str) -> dict:
    """`arch`'s ImageNet state dict, from torchvision's cache or downloaded into it."""
    try:
        return default_weights(arch).get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # urllib/SSL/timeout errors: all mean "could not fetch"
        raise WeightsDownloadError(arch, f"{type(e).__name__}: {e}") from None


def imagenet_weights_cached(arch: str) -> bool:
    """Whether torchvision's cache already holds `arch`'s ImageNet weights (no download needed)."""
    url = default_weights(arch).url
    return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).is_file()


def build_model(arch: str, num_classes: int, backbone_weights: str | os.PathLike | None = None) -> nn.Module:
    """`backbone_weights`: "imagenet" (torchvision download/cache), a state-dict file, or None."""
    check_arch(arch)
    if backbone_weights == "imagenet":
        fetch_imagenet_weights(arch)  # a download failure says so; then torchvision reads its cache
        model = tvm.get_model(arch, weights=default_weights(arch))
    else:
        model = tvm.get_model(arch, weights=None)
        if backbone_weights is not None:
            load_state_dict_file(model, Path(backbone_weights))
    name = head_name(model)
    set_head(model, name, nn.Linear(model.get_submodule(name).in_features, num_classes))
    return model


def uninitialised_model(arch: str, num_classes: int) -> nn.Module:
    """`arch` with a `num_classes` head, its tensors allocated on the CPU but not initialised (a
    tenth of a second for resnet18, more for bigger ones): for a state dict that fills them all."""
    with torch.device("meta"):
        model = build_model(arch, num_classes)
    return model.to_empty(device="cpu")


def load_state_dict_file(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"backbone weights file '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"cannot read backbone weights '{path}': {e}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"'{path}' does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        arch = type(model).__name__
        detail = "; ".join(x for x in (
            f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else "",
            f"shape mismatch: {wrong[0]}" if wrong else "") if x)
        raise ModelError(f"'{path}' does not match {arch}: {detail}. Is it a state dict for this --arch?")
    model.load_state_dict(state)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in the order the input goes through them."""
    if isinstance(model, tvm.ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    return list(model.features)


def classifier(model: nn.Module) -> nn.Module:
    """Everything after the pooling: resnet's `fc`, the others' `classifier` (dropout, Linear...)."""
    return model.fc if isinstance(model, tvm.ResNet) else model.classifier


def before_cut(model: nn.Module, cut: int) -> nn.Sequential:
    return nn.Sequential(*blocks(model)[:cut])


def after_cut(model: nn.Module, cut: int) -> nn.Sequential:
    return nn.Sequential(*blocks(model)[cut:], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), classifier(model))


def freeze_before(model: nn.Module, cut: int) -> None:
    """Gradients for the blocks from `cut` on and the classifier only."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in after_cut(model, cut).parameters():
        p.requires_grad_(True)


def freeze_backbone(model: nn.Module) -> None:
    head = get_head(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)


@contextmanager
def headless(model: nn.Module):
    """Within the block, `model(x)` returns the head's input features."""
    name = head_name(model)
    head = model.get_submodule(name)
    set_head(model, name, nn.Identity())
    try:
        yield head
    finally:
        set_head(model, name, head)
