"""The model-file boundary: every model file a user gives is opened here, and only here.

:func:`open_model` resolves a path, a bundle directory, its manifest .json, an .onnx file (read with
the manifest beside it when that manifest names it), .safetensors weights or a training checkpoint
.pt, into a :class:`ModelFile`, which gives each caller what it needs:

* ``bundle()``: the checked bundle in ONNX Runtime (what :func:`load_bundle` returns);
* ``gaze_model()``: a PyTorch gaze module with the F/H split, for the scan and mitigation;
* ``predictor()``: what ``securegaze evaluate`` runs (ONNX Runtime for bundles, PyTorch for weights);
* ``sha256()``: the hash the audit records key on.

Each of them raises its own one-line errors, worded for what it accepts. Checkpoints are read with
``torch.load(..., weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from torch import nn

from securegaze.bundle.adapt import adapt_graph, angles_from_vector, degrees_note, with_output_convention
from securegaze.bundle.manifest import MANIFEST_NAME, ONNX_NAME, BundleManifest
from securegaze.bundle.manifest_checks import (
    check_against_manifest,
    checked_onnx_path,
    infer_manifest,
    read_manifest,
)
from securegaze.bundle.onnx_graph import copy_model, load_onnx, onnx_sha256
from securegaze.bundle.runtime import PROVIDER_ALIASES, Bundle
from securegaze.errors import InputFileError, ModelFormatError
from securegaze.io import load_weights, read_json, sha256_file
from securegaze.models import model_from_config
from securegaze.training import load_checkpoint, predict

__all__ = [
    "ACCEPTED_MODEL_FILES", "CHECKPOINT_SUFFIXES", "PROVIDER_ALIASES", "Bundle", "ModelFile", "Predictor",
    "load_bundle", "open_model", "verify_bundle",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
ACCEPTED_MODEL_FILES = (
    "a bundle directory, a manifest .json, an .onnx file, .safetensors weights or a training checkpoint .pt"
)

#: ``bundle``: a bundle directory or its manifest .json; ``onnx``: an .onnx file (with or without a
#: manifest beside it); ``weights``: .safetensors; ``checkpoint``: .pt/.pth/.ckpt; ``unknown``: else.
ModelKind = Literal["bundle", "onnx", "weights", "checkpoint", "unknown"]


@dataclass(frozen=True)
class Predictor:
    """What ``securegaze evaluate`` runs: ``predict(images)`` -> (N, 2) radians, its input size, its engine."""

    predict: Callable[[np.ndarray], np.ndarray]
    input_size: int
    engine: str


def _manifest_names(manifest_path: Path, onnx_name: str) -> bool:
    """Whether the manifest at ``manifest_path`` exists and names ``onnx_name`` as its model."""
    if not manifest_path.is_file():
        return False
    try:
        declared = json.loads(manifest_path.read_text(encoding="utf-8")).get("onnx_file")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        declared = None
    return declared == onnx_name


def open_model(path: str | os.PathLike) -> ModelFile:
    """Resolve the model file at ``path`` (nothing is read yet but the name, and a manifest beside an .onnx).

    A missing or unreadable file is reported by the :class:`ModelFile` method that needs it, in the
    words of what that method accepts.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        return ModelFile(path, "bundle", path / MANIFEST_NAME)
    if suffix == ".json":
        return ModelFile(path, "bundle", path)
    if suffix == ".onnx":
        # model.onnx inside a bundle directory is read with its manifest (and its sha256 check).
        sibling = path.parent / MANIFEST_NAME
        return ModelFile(path, "onnx", sibling if _manifest_names(sibling, path.name) else None)
    if suffix == ".safetensors":
        return ModelFile(path, "weights")
    if suffix in CHECKPOINT_SUFFIXES:
        return ModelFile(path, "checkpoint")
    return ModelFile(path, "unknown")


@dataclass(frozen=True)
class ModelFile:
    """A resolved model file (see :func:`open_model`).

    ``manifest_path``: the manifest that describes the model, a bundle's manifest.json (which may be
    missing) or the one beside an .onnx file that names it; None for a bare .onnx and for weights.
    """

    path: Path
    kind: ModelKind
    manifest_path: Path | None = None

    def bundle(
        self,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        provider_options: dict[str, dict] | None = None,
    ) -> Bundle:
        """The checked bundle (see :func:`load_bundle`); only bundles and .onnx files are accepted."""
        path = self.path
        if not path.exists():
            raise InputFileError(
                f"{path} does not exist; expected a bundle directory, a {MANIFEST_NAME} or an .onnx file"
            )
        if path.is_dir() and not self.manifest_path.is_file():
            raise InputFileError(
                f"{path} has no {MANIFEST_NAME}; expected a bundle directory ({ONNX_NAME} + {MANIFEST_NAME}) "
                "or pass the .onnx file itself"
            )
        if self.kind not in ("bundle", "onnx"):
            raise InputFileError(f"{path} is neither a directory, a .json manifest nor an .onnx file")
        manifest_path = self.manifest_path
        if manifest_path is not None:
            manifest = read_manifest(manifest_path)
            onnx_path = checked_onnx_path(manifest_path, manifest)
            proto, adapted = adapt_graph(onnx_path, load_onnx(onnx_path), manifest.output, manifest.input)
        else:
            onnx_path = path
            given = load_onnx(onnx_path)
            proto, adapted = adapt_graph(onnx_path, given)
            manifest = infer_manifest(onnx_path, proto, given)
        fixed_batch = check_against_manifest(onnx_path, manifest_path, proto, manifest)
        bundle = Bundle(manifest, onnx_path, manifest_path, proto, providers=providers, fixed_batch=fixed_batch,
                        threads=threads, provider_options=provider_options, adaptations=adapted)
        # A gaze turned from a 3-D vector is in radians by construction: no unit is looked for.
        bare = manifest_path is None and not angles_from_vector(proto)
        note = degrees_note(onnx_path, bundle.predict, bundle.input_size) if bare else None
        if note is None:
            return bundle
        # A bare file that answers in degrees: the same graph with the scaling appended.
        proto = with_output_convention(proto if adapted else copy_model(proto), manifest.output.names[0], True, False)
        return Bundle(manifest, onnx_path, manifest_path, proto, providers=providers, fixed_batch=fixed_batch,
                      threads=threads, provider_options=provider_options, adaptations=(*adapted, note))

    def gaze_model(self) -> nn.Module:
        """The model in eval mode, with ``features``, ``head``, ``head_weight`` and ``input_size``.

        Bundles and .onnx files are converted to PyTorch (:meth:`Bundle.to_torch`, checked against
        ONNX Runtime); weights and checkpoints rebuild the architecture they name.
        """
        path = self.path
        if not path.exists():
            raise InputFileError(f"{path} does not exist; expected {ACCEPTED_MODEL_FILES}")
        if self.kind in ("bundle", "onnx"):
            model = self.bundle().to_torch()
        elif self.kind == "weights":
            model = load_weights(path)
        elif self.kind == "checkpoint":
            model = _model_from_checkpoint(path)
        else:
            suffix = path.suffix.lower()
            raise InputFileError(
                f"{path} has an unknown model file type {suffix or '(none)'!r}; expected {ACCEPTED_MODEL_FILES}"
            )
        return model.eval()

    def predictor(self) -> Predictor:
        """``.safetensors`` weights run in PyTorch; everything else must be a bundle, run in ONNX Runtime."""
        if self.kind == "weights":  # any case of the suffix, as the scan reads it
            model = load_weights(self.path)
            return Predictor(lambda images: predict(model, images), model.input_size, "PyTorch")
        bundle = self.bundle()
        return Predictor(bundle.predict, bundle.input_size, f"ONNX Runtime ({bundle.providers[0]})")

    def reading(self) -> dict:
        """What the manifest beside the graph declares about reading it beyond the project's plain form
        (RGB in [0, 1]; one direct (pitch, yaw) radians output; the split found): the input conversion,
        the output's decoding, order and units, a declared feature tensor. Empty for a bare .onnx, for
        weights and for a bundle in the plain form. The graph's sha256 does not cover these, so a cached
        verdict must be keyed on them too (the edge app's start-up check does)."""
        if self.kind not in ("bundle", "onnx") or self.manifest_path is None or not self.manifest_path.is_file():
            return {}
        manifest = read_manifest(self.manifest_path)
        declared: dict = {}
        if not manifest.input.is_identity():
            declared["input"] = manifest.input.model_dump(mode="json", include={"channel_order", "value_range", "mean",
                                                                                "std"})
        out = manifest.output
        if out.decoding != "direct" or out.units != "radians" or tuple(out.order) != ("pitch", "yaw"):
            declared["output"] = out.model_dump(mode="json", include={"decoding", "names", "order", "units", "bins"})
        if manifest.feature_split is not None:
            declared["feature_tensor"] = manifest.feature_split.feature_tensor
        return declared

    def sha256(self) -> str:
        """The sha256 the audit records key on: of the ONNX model for a bundle or an .onnx (with any
        external weight files), else of the file itself."""
        target = self.path
        if self.kind == "bundle":
            manifest = read_json(self.manifest_path, "bundle manifest")
            onnx_name = manifest.get("onnx_file", ONNX_NAME) if isinstance(manifest, dict) else ONNX_NAME
            target = self.manifest_path.parent / onnx_name
        if not target.is_file():
            raise InputFileError(f"{target}: model file not found")
        # An ONNX graph's sha256 covers its external weight files too (onnx_graph.onnx_sha256).
        return onnx_sha256(target) if self.kind in ("bundle", "onnx") else sha256_file(target)


def _model_from_checkpoint(path: Path) -> nn.Module:
    state = load_checkpoint(path)
    config = state.get("model_config")
    if not isinstance(config, dict) or "architecture" not in config:
        raise InputFileError(f"{path}: checkpoint has no model_config; expected one written by securegaze train")
    try:
        model = model_from_config(config)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: checkpoint's model_config cannot build a model ({exc})") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFormatError(f"{path}: checkpoint weights do not fit its {model.architecture} model ({first})") from None
    return model


def load_bundle(path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None,
                provider_options: dict[str, dict] | None = None) -> Bundle:
    """Open and check a bundle; ``path`` is the bundle directory, its manifest.json, or an .onnx file.

    A bare .onnx (with no manifest beside it naming it) gets an inferred manifest: input size from
    the graph, direct decoding if it has one (N, 2) output, an error otherwise.

    Checks, each failing with one :class:`InputFileError` / :class:`ModelFormatError` line: missing
    files, invalid manifest JSON or fields, sha256 mismatch, truncated or corrupt ONNX, input shape
    vs the manifest's size, output count and shape vs the decoding, and that ONNX Runtime can open it.

    ``providers``: ONNX Runtime execution providers in order of preference (``"cuda"``,
    ``"tensorrt"``, ``"cpu"`` or full names); unavailable ones are skipped with the reason recorded
    in ``Bundle.provider_notes``, and the CPU provider is always the last resort. ``threads``:
    ONNX Runtime's intra-op threads (None: its default, one per core); ``provider_options``: options
    per full provider name (e.g. ``{"TensorrtExecutionProvider": {"trt_fp16_enable": True}}``).
    """
    return open_model(path).bundle(providers, threads, provider_options)


def verify_bundle(path: str | os.PathLike, check_torch: bool = False) -> BundleManifest:
    """All load-time checks plus one inference on random images (finite outputs); returns the manifest.

    With ``check_torch`` the bundle is also converted to PyTorch and compared with ONNX Runtime.
    """
    bundle = load_bundle(path)
    size = bundle.manifest.input.size
    images = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    bundle.predict(images)
    if check_torch:
        bundle.to_torch(verify=True)
    return bundle.manifest
