"""Gaze models, created by name: ``create_model("small_cnn", input_size=64)``."""

from __future__ import annotations

from securegaze.models.base import BinSpec, GazeModel, decode_bins
from securegaze.registry import Registry

MODELS: Registry[GazeModel] = Registry("model")


def _with_bins(factory):
    def build(bins: dict | BinSpec | None = None, **kwargs):
        if isinstance(bins, dict):
            bins = BinSpec(**bins)
        return factory(bins=bins, **kwargs)

    return build


@MODELS.register("small_cnn")
def _small_cnn(**kwargs):
    from securegaze.models.small_cnn import SmallGazeCNN

    return _with_bins(SmallGazeCNN)(**kwargs)


@MODELS.register("plain_cnn")
def _plain_cnn(**kwargs):
    from securegaze.models.plain_cnn import PlainGazeCNN

    return _with_bins(PlainGazeCNN)(**kwargs)


@MODELS.register("resnet18")
def _resnet18(**kwargs):
    from securegaze.models.torchvision_models import ResNet18Gaze

    return _with_bins(ResNet18Gaze)(**kwargs)


@MODELS.register("mobilenet_v3")
def _mobilenet_v3(**kwargs):
    from securegaze.models.torchvision_models import MobileNetV3Gaze

    return _with_bins(MobileNetV3Gaze)(**kwargs)


def create_model(architecture: str, **kwargs) -> GazeModel:
    """Build a model from its registered name and constructor arguments (see ``GazeModel.config``)."""
    return MODELS.create(architecture, **kwargs)


#: CPU-sized arguments of each architecture for 64-px zoos (``securegaze zoo build --cpu-sized``):
#: the two small CNNs as they are; ResNet-18 at base width 16 with the compact stem, MobileNetV3-small
#: at half width with a stride-1 stem (what was changed and why: securegaze/models/torchvision_models.py).
CPU_SIZED: dict[str, dict] = {
    "small_cnn": {},
    "plain_cnn": {},
    "resnet18": {"width": 16, "stem": "compact"},
    "mobilenet_v3": {"width_mult": 0.5, "stem_stride": 1},
}

# Architectures whose ``width`` is the one `securegaze train --width` (and a zoo's width) sets.
WIDTH_FROM_TRAINING = ("small_cnn", "plain_cnn")


def model_kwargs_for(architecture: str, decoding: str = "direct", width: int | None = None) -> dict:
    """Constructor arguments of ``architecture`` from the training settings a user gives.

    Every architecture takes the output ``decoding`` ("direct" or "binned"); ``small_cnn`` and
    ``plain_cnn`` take a ``width`` (channels of their first conv layer), which the others ignore here:
    resnet18's ``width`` means its base channels, with a default of 64 that a small-CNN width must not
    override (give it in the architecture's own keyword arguments). The name is not checked here:
    :func:`create_model` (or ``MODELS.get``) does that.
    """
    kwargs: dict = {"decoding": decoding}
    if architecture in WIDTH_FROM_TRAINING and width is not None:
        kwargs["width"] = width
    return kwargs


def model_from_config(config: dict) -> GazeModel:
    cfg = dict(config)
    return create_model(cfg.pop("architecture"), **cfg)


__all__ = ["CPU_SIZED", "MODELS", "WIDTH_FROM_TRAINING", "BinSpec", "GazeModel", "create_model", "decode_bins", "model_from_config",
           "model_kwargs_for"]
