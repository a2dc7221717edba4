"""The bundle manifest: what a model file expects as input and how to read its output."""

from __future__ import annotations

import math
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from securegaze.geometry import CONVENTION
from securegaze.models.base import BinSpec

MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
INPUT_NAME = "image"
DIRECT_OUTPUT_NAMES = ("gaze",)
BINNED_OUTPUT_NAMES = ("pitch_logits", "yaw_logits")

#: Lowest opset we export with: 17 is the first with LayerNormalization and is what TensorRT 8.6
#: (JetPack 5/6) and onnx2torch 1.5 both read.
EXPORT_OPSET = 17
#: ONNX Runtime vs PyTorch agreement required at export and conversion, in output units
#: (radians for direct models, logits for binned). Float32 reassociation differences are ~1e-6.
MATCH_ATOL = 1e-4

# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # Unknown keys are an error: a misspelt field must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What the ONNX graph takes: (N, 3, size, size) float32, channels and value range as stated.

    ``Bundle.predict``, ``ConvertedGazeModel`` and the edge app's TensorRT runner always take RGB in
    [0, 1] and convert to what the graph wants themselves (:meth:`affine`): channels in
    ``channel_order``, values mapped onto ``value_range``, then each channel standardised,
    ``(x - mean) / std`` (``mean`` and ``std`` per channel in the graph's channel order and in
    ``value_range`` units: ImageNet statistics for [0, 1] RGB are mean ``[0.485, 0.456, 0.406]``, std
    ``[0.229, 0.224, 0.225]``). So third-party models that want BGR, [0, 255] or standardised input can
    be described rather than rewritten.
    """

    name: str = INPUT_NAME
    size: int = Field(gt=0)
    layout: Literal["NCHW"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dtype: Literal["float32"] = "float32"

    @field_validator("value_range")
    @classmethod
    def _increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[1] > value[0]:
            raise ValueError(f"value_range must be [low, high] with high > low, got {list(value)}")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, value: tuple[float, float, float], info) -> tuple[float, float, float]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"{info.field_name} must be three finite numbers, got {list(value)}")
        if info.field_name == "std" and not all(v > 0 for v in value):
            raise ValueError(f"std must be three positive numbers, got {list(value)}")
        return value

    def affine(self) -> tuple[bool, np.ndarray, np.ndarray]:
        """(flip, scale, offset): the graph's input is ``x[:, ::-1] if flip else x`` (RGB in [0, 1],
        NCHW), times ``scale`` plus ``offset``, both (3,) float32 per channel of the graph's order."""
        low, high = self.value_range
        std = np.asarray(self.std, np.float64)
        scale = (high - low) / std
        offset = (low - np.asarray(self.mean, np.float64)) / std
        return self.channel_order == "BGR", scale.astype(np.float32), offset.astype(np.float32)

    def is_identity(self) -> bool:
        """True when the graph takes RGB in [0, 1] as it is."""
        flip, scale, offset = self.affine()
        return not flip and bool(np.all(scale == 1.0)) and bool(np.all(offset == 0.0))


class BinsSpec(_Strict):
    """Gaze bins per angle (see :class:`securegaze.models.base.BinSpec`), degrees."""

    count: int = Field(gt=1)
    start_deg: float
    width_deg: float = Field(gt=0)

    def to_binspec(self) -> BinSpec:
        return BinSpec(count=self.count, start_deg=self.start_deg, width_deg=self.width_deg)


class OutputSpec(_Strict):
    """What the graph returns and how it becomes (pitch, yaw) radians.

    ``direct``: one (N, 2) output, (pitch, yaw) radians unless ``order`` is ``["yaw", "pitch"]`` or
    ``units`` is ``degrees`` (a third-party model's: then the graph is read with the swap and the
    scaling appended, :mod:`securegaze.bundle.adapt`, and every caller gets (pitch, yaw) radians).
    ``binned``: two (N, count) logit outputs, pitch then yaw (``names`` in that order), decoded as the
    softmax expectation over bin centres given in degrees.
    """

    decoding: Literal["direct", "binned"]
    order: tuple[Literal["pitch"], Literal["yaw"]] | tuple[Literal["yaw"], Literal["pitch"]] = ("pitch", "yaw")
    units: Literal["radians", "degrees"] = "radians"
    frame: Literal["normalised camera"] = "normalised camera"
    convention: str = CONVENTION
    bins: BinsSpec | None = None
    names: list[str]

    @field_validator("convention")
    @classmethod
    def _our_convention(cls, value: str) -> str:
        # A model in another convention would give silently wrong gaze vectors; refuse it.
        if value != CONVENTION:
            raise ValueError(f"convention must be exactly {CONVENTION!r}")
        return value

    @model_validator(mode="after")
    def _fits_decoding(self) -> OutputSpec:
        if self.decoding == "direct":
            if len(self.names) != 1:
                raise ValueError(f"direct decoding needs exactly one output name, got {self.names}")
            if self.bins is not None:
                raise ValueError("bins are only allowed with binned decoding")
        else:
            if self.order != ("pitch", "yaw") or self.units != "radians":
                raise ValueError("binned decoding reads its bins in degrees and its outputs in names' order: leave "
                                 "order and units out, and list names pitch first")
            if len(self.names) != 2:
                raise ValueError(f"binned decoding needs two output names (pitch, yaw), got {self.names}")
            if self.bins is None:
                raise ValueError("binned decoding needs bins {count, start_deg, width_deg}")
        return self


class FeatureSplit(_Strict):
    """Where F ends: the ONNX tensor holding the (N, D) penultimate features.

    Needed only for models whose split cannot be found automatically (no Gemm/MatMul layer right
    before the outputs).
    """

    feature_tensor: str


def software_versions() -> dict[str, str]:
    import onnxruntime

    import securegaze

    return {
        "python": platform.python_version(),
        "securegaze": securegaze.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


class Provenance(_Strict):
    """Where the model came from: data, seed, time (UTC), software and its measured metrics."""

    training_data: str = ""
    seed: int | None = None
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    software: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    notes: str = ""


class BundleManifest(_Strict):
    """The JSON half of a bundle (``manifest.json``), format version 1."""

    format_version: Literal[1] = 1
    name: str
    architecture: str
    config: dict[str, Any] = Field(default_factory=dict)
    input: InputSpec
    output: OutputSpec
    feature_split: FeatureSplit | None = None
    onnx_file: str = ONNX_NAME
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("onnx_file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        # The ONNX file lives next to the manifest; a path would let a manifest point anywhere.
        if not value or Path(value).name != value or value in (".", ".."):
            raise ValueError(f"onnx_file must be a file name inside the bundle directory, got {value!r}")
        return value

    @model_validator(mode="after")
    def _config_agrees(self) -> BundleManifest:
        size = self.config.get("input_size")
        if size is not None and size != self.input.size:
            raise ValueError(f"config.input_size {size} differs from input.size {self.input.size}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BundleManifest:
        return cls.model_validate_json(text)


def validation_line(exc: ValidationError) -> str:
    """First pydantic problem as ``field.path: message`` plus how many more (one line)."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    line = f"{where}: {first['msg']}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line
