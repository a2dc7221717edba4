"""Model bundles: an ONNX file plus a JSON manifest that says how to feed it and read it.

A bundle is a directory holding ``model.onnx`` and ``manifest.json``. The manifest states the input
(size, layout, channel order, value range), the output decoding (direct regression or L2CS-Net-like
bins), the gaze convention, the sha256 of the ONNX file and where the model came from. Bundles are
what the edge application runs (ONNX Runtime) and what the scanner reads (converted back to PyTorch
with onnx2torch, split into F and H, so gradients flow).

Public API: :class:`BundleManifest`, :func:`export_bundle`, :func:`load_bundle`, :class:`Bundle`
(``predict``, ``to_torch``), :class:`ConvertedGazeModel`, :func:`verify_bundle`, :func:`sha256_file`.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from securegaze.errors import ConfigError, InputFileError, ModelFormatError
from securegaze.geometry import CONVENTION
from securegaze.io import atomic_write, atomic_write_bytes, sha256_file
from securegaze.models.base import BinSpec, GazeModel, decode_bins

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

#: Short names accepted for ONNX Runtime execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

__all__ = [
    "Bundle",
    "BundleManifest",
    "ConvertedGazeModel",
    "FeatureSplit",
    "InputSpec",
    "OutputSpec",
    "Provenance",
    "export_bundle",
    "load_bundle",
    "sha256_file",
    "verify_bundle",
]


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # Unknown keys are an error: a misspelt field must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What the ONNX graph takes: (N, 3, size, size) float32, channels and value range as stated.

    ``Bundle.predict`` and ``ConvertedGazeModel`` always take RGB in [0, 1] and convert to
    ``channel_order`` and ``value_range`` themselves, so third-party models that want BGR or
    [0, 255] can be described rather than rewritten.
    """

    name: str = INPUT_NAME
    size: int = Field(gt=0)
    layout: Literal["NCHW"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    dtype: Literal["float32"] = "float32"

    @field_validator("value_range")
    @classmethod
    def _increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[1] > value[0]:
            raise ValueError(f"value_range must be [low, high] with high > low, got {list(value)}")
        return value


class BinsSpec(_Strict):
    """Gaze bins per angle (see :class:`securegaze.models.base.BinSpec`), degrees."""

    count: int = Field(gt=1)
    start_deg: float
    width_deg: float = Field(gt=0)

    def to_binspec(self) -> BinSpec:
        return BinSpec(count=self.count, start_deg=self.start_deg, width_deg=self.width_deg)


class OutputSpec(_Strict):
    """What the graph returns and how it becomes (pitch, yaw) radians.

    ``direct``: one (N, 2) output, already (pitch, yaw) radians. ``binned``: two (N, count) logit
    outputs, pitch then yaw, decoded as the softmax expectation over bin centres.
    """

    decoding: Literal["direct", "binned"]
    order: tuple[Literal["pitch"], Literal["yaw"]] = ("pitch", "yaw")
    units: Literal["radians"] = "radians"
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


def _software_versions() -> dict[str, str]:
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


def _validation_line(exc: ValidationError) -> str:
    """First pydantic problem as ``field.path: message`` plus how many more (one line)."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    line = f"{where}: {first['msg']}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


class _ExportOutputs(nn.Module):
    """Wraps a gaze model so that ``forward`` is its ``export_outputs`` (gaze or two logit tensors)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.export_outputs(x)


def _as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def export_bundle(
    model: GazeModel,
    out_dir: str | os.PathLike,
    name: str,
    provenance: Provenance | dict | None = None,
    *,
    opset: int = EXPORT_OPSET,
) -> BundleManifest:
    """Write ``out_dir/model.onnx`` and ``out_dir/manifest.json`` for ``model``; return the manifest.

    The graph takes ``image`` (N, 3, S, S) float32 RGB in [0, 1] with a dynamic batch axis and returns
    ``gaze`` (N, 2) radians (direct) or ``pitch_logits``, ``yaw_logits`` (N, count) (binned). Before
    anything is replaced, ONNX Runtime's outputs on a random batch must match PyTorch's within
    ``MATCH_ATOL``; both files are written atomically, the ONNX first, so a reader sees either the old
    bundle, or the new ONNX with the old manifest (which then fails its sha256 check, loudly).

    Exporter: the TorchScript exporter (``dynamo=False``), chosen on purpose. torch >= 2.9 defaults
    to the dynamo exporter, which needs ``onnxscript``: not a dependency of this project and not
    installed, so the default fails with ModuleNotFoundError. The TorchScript path needs torch alone,
    takes ``dynamic_axes`` for the batch axis and writes ``Gemm`` for ``nn.Linear``, which the F/H
    split looks for. torch marks it deprecated; when it goes, switch to ``dynamo=True`` with
    ``dynamic_shapes`` and add onnxscript to the requirements.
    """
    if opset < EXPORT_OPSET:
        raise ConfigError(f"opset {opset} is too old; export needs opset >= {EXPORT_OPSET}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(f"{out_dir} exists and is not a directory; expected a bundle directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(provenance, dict):
        provenance = Provenance.model_validate(provenance)
    provenance = provenance or Provenance()
    provenance = provenance.model_copy(update={"software": {**_software_versions(), **provenance.software}})

    binned = model.decoding == "binned"
    output_names = list(BINNED_OUTPUT_NAMES if binned else DIRECT_OUTPUT_NAMES)
    size = int(model.input_size)
    output = {"decoding": model.decoding, "names": output_names}
    if binned:
        output["bins"] = model.bins.to_dict()
    # Validated before anything is written; only the sha256 is filled in after the export.
    manifest = BundleManifest(
        name=name,
        architecture=getattr(model, "architecture", type(model).__name__),
        config=model.config(),
        input={"name": INPUT_NAME, "size": size},
        output=output,
        onnx_file=ONNX_NAME,
        onnx_sha256="0" * 64,
        provenance=provenance,
    )
    was_training = model.training
    model.eval()
    try:
        first_parameter = next(iter(model.parameters()), None)
        device = first_parameter.device if first_parameter is not None else torch.device("cpu")
        wrapper = _ExportOutputs(model)
        # A batch of 2 to trace, a batch of 3 to check: the dynamic batch axis gets exercised.
        generator = torch.Generator().manual_seed(0)
        trace_batch = torch.rand(2, 3, size, size, generator=generator).to(device)
        check_batch = torch.rand(3, 3, size, size, generator=generator)
        with torch.no_grad():
            expected = [t.detach().cpu().numpy() for t in _as_tuple(wrapper(check_batch.to(device)))]
        onnx_path = out_dir / ONNX_NAME
        digest: dict[str, str] = {}

        def write_onnx(tmp: str) -> None:
            with warnings.catch_warnings():
                # The TorchScript exporter announces its own deprecation on every call.
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    wrapper,
                    (trace_batch,),
                    tmp,
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=output_names,
                    dynamic_axes={n: {0: "batch"} for n in [INPUT_NAME, *output_names]},
                    do_constant_folding=True,
                )
            got = _run_onnx_file(tmp, INPUT_NAME, output_names, check_batch.numpy())
            for out_name, want, have in zip(output_names, expected, got, strict=True):
                if want.shape != have.shape:
                    raise ModelFormatError(
                        f"exported {out_name} has shape {have.shape}, PyTorch gives {want.shape}; export aborted"
                    )
                err = float(np.max(np.abs(want - have))) if want.size else 0.0
                if not err <= MATCH_ATOL:
                    raise ModelFormatError(
                        f"exported {out_name} differs from PyTorch by {err:.2e} (> {MATCH_ATOL:g}) under "
                        "ONNX Runtime; export aborted, nothing written"
                    )
            digest["sha256"] = sha256_file(tmp)

        atomic_write(onnx_path, write_onnx)
    finally:
        model.train(was_training)

    manifest = manifest.model_copy(update={"onnx_sha256": digest["sha256"]})
    atomic_write_bytes(out_dir / MANIFEST_NAME, manifest.to_json().encode())
    return manifest


def _run_onnx_file(path: str, input_name: str, output_names: list[str], x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(output_names, {input_name: x.astype(np.float32)})


# ----------------------------------------------------------------------------------------------
# Loading and checking
# ----------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """An exception as one line: libraries (onnx checker, ONNX Runtime) raise multi-line messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str] | None:
    """Shape of a graph value: ints for fixed dims, names (or "?") for dynamic ones; None if unknown."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]


def _shape_text(dims: list[int | str] | None) -> str:
    return "unknown" if dims is None else "(" + ", ".join(str(d) for d in dims) + ")"


def _real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    # Old exporters list every initializer as a graph input too; those are weights, not inputs.
    initializers = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initializers]


def _load_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check an ONNX file; one clear error line for truncated, corrupt or invalid files."""
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, external-data errors, ...
        raise InputFileError(
            f"{path} is not a readable ONNX model (truncated or corrupt: {_first_line(exc)})"
        ) from None
    if len(proto.graph.node) == 0 or len(proto.graph.output) == 0:
        raise InputFileError(f"{path} holds no ONNX graph (empty file, or truncated or corrupt)")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = _first_line(exc)
        raise ModelFormatError(f"{path} fails the ONNX checker (truncated or corrupt?): {first}") from None
    return proto


def _inferred(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred shapes where possible (unchanged if shape inference fails)."""
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception:
        return proto


def _infer_manifest(path: Path, proto: onnx.ModelProto) -> BundleManifest:
    """A manifest for a bare .onnx: size from the input shape, direct decoding if one (N, 2) output."""
    graph = _inferred(proto).graph
    inputs = _real_inputs(graph)
    advice = f"write a {MANIFEST_NAME} next to it and load the directory"
    if len(inputs) != 1:
        raise ModelFormatError(f"{path} has {len(inputs)} inputs; expected one image input, or {advice}")
    dims = _dims(inputs[0])
    if dims is None or len(dims) != 4 or dims[1] != 3 or not isinstance(dims[2], int) or dims[2] != dims[3]:
        raise ModelFormatError(
            f"{path} input {inputs[0].name!r} has shape {_shape_text(dims)}; a bare .onnx needs a fixed "
            f"(N, 3, S, S) input to infer the size, otherwise {advice}"
        )
    shapes = [(o.name, _dims(o)) for o in graph.output]
    if len(shapes) != 1 or shapes[0][1] is None or len(shapes[0][1]) != 2 or shapes[0][1][1] != 2:
        listed = ", ".join(f"{n} {_shape_text(d)}" for n, d in shapes)
        raise ModelFormatError(
            f"{path} has outputs {listed}; a bare .onnx is read only with one (N, 2) (pitch, yaw) radians "
            f"output; for binned or other outputs {advice} declaring output.decoding"
        )
    return BundleManifest(
        name=path.stem,
        architecture="onnx",
        config={"architecture": "onnx", "input_size": dims[2], "decoding": "direct"},
        input={"name": inputs[0].name, "size": dims[2]},
        output={"decoding": "direct", "names": [shapes[0][0]]},
        onnx_file=path.name,
        onnx_sha256=sha256_file(path),
        provenance={
            "created": datetime.fromtimestamp(path.stat().st_mtime, UTC),
            "notes": "manifest inferred from a bare ONNX file: units, order and convention are assumed",
        },
    )


def _read_manifest(path: Path) -> BundleManifest:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} cannot be read as UTF-8 text ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "expected a bundle manifest"
        ) from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} holds a JSON {type(data).__name__}; expected a manifest object")
    try:
        return BundleManifest.model_validate(data)
    except ValidationError as exc:
        raise ModelFormatError(f"{path} is not a valid bundle manifest: {_validation_line(exc)}") from None


def _check_against_manifest(
    path: Path, manifest_path: Path | None, proto: onnx.ModelProto, manifest: BundleManifest
) -> int | None:
    """Input and output shapes must fit the manifest; returns the fixed batch size, if any."""
    graph = _inferred(proto).graph
    source = manifest_path or path
    inputs = _real_inputs(graph)
    by_name = {v.name: v for v in inputs}
    if manifest.input.name not in by_name or len(inputs) != 1:
        names = [v.name for v in inputs]
        raise ModelFormatError(
            f"{path} has inputs {names}; {source.name} declares one input {manifest.input.name!r}"
        )
    dims = _dims(by_name[manifest.input.name])
    size = manifest.input.size
    expected = f"(N, 3, {size}, {size})"
    # Dynamic (named) dims accept anything; the manifest's size is then what predict enforces.
    fits = dims is None or (
        len(dims) == 4
        and all(isinstance(d, str) or d == want for d, want in zip(dims[1:], (3, size, size), strict=True))
    )
    if not fits:
        raise ModelFormatError(
            f"{path} takes input {manifest.input.name!r} of shape {_shape_text(dims)} but {source.name} "
            f"declares {expected}"
        )
    fixed_batch = dims[0] if dims is not None and isinstance(dims[0], int) and dims[0] > 0 else None

    outputs = {o.name: _dims(o) for o in graph.output}
    out = manifest.output
    for out_name in out.names:
        if out_name not in outputs:
            raise ModelFormatError(
                f"{path} has outputs {list(outputs)}; {source.name} names output {out_name!r}"
            )
    width = 2 if out.decoding == "direct" else out.bins.count
    for out_name in out.names:
        shape = outputs[out_name]
        if shape is not None and (len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width)):
            what = "(N, 2) pitch/yaw" if out.decoding == "direct" else f"(N, {width}) bin logits"
            raise ModelFormatError(
                f"{path} output {out_name!r} has shape {_shape_text(shape)}; {out.decoding} decoding in "
                f"{source.name} expects {what}"
            )
    if manifest.feature_split is not None:
        tensor = manifest.feature_split.feature_tensor
        produced = {o for node in graph.node for o in node.output}
        if tensor not in produced:
            raise ModelFormatError(
                f"{source.name} declares feature_tensor {tensor!r} but {path} has no node output of that name"
            )
    return fixed_batch


def _resolve(path: Path) -> tuple[Path | None, Path]:
    """(manifest path or None, onnx path) for a bundle dir, a manifest.json or an .onnx file."""
    if not path.exists():
        raise InputFileError(
            f"{path} does not exist; expected a bundle directory, a {MANIFEST_NAME} or an .onnx file"
        )
    if path.is_dir():
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise InputFileError(
                f"{path} has no {MANIFEST_NAME}; expected a bundle directory ({ONNX_NAME} + {MANIFEST_NAME}) "
                "or pass the .onnx file itself"
            )
        return manifest_path, manifest_path  # onnx path is read from the manifest
    if path.suffix.lower() == ".json":
        return path, path
    if path.suffix.lower() == ".onnx":
        # model.onnx inside a bundle directory is read with its manifest (and its sha256 check).
        sibling = path.parent / MANIFEST_NAME
        if sibling.is_file():
            try:
                declared = json.loads(sibling.read_text(encoding="utf-8")).get("onnx_file")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                declared = None
            if declared == path.name:
                return sibling, sibling
        return None, path
    raise InputFileError(f"{path} is neither a directory, a .json manifest nor an .onnx file")


def load_bundle(path: str | os.PathLike, providers: Sequence[str] | None = None) -> Bundle:
    """Open and check a bundle; ``path`` is the bundle directory, its manifest.json, or an .onnx file.

    A bare .onnx (with no manifest beside it naming it) gets an inferred manifest: input size from
    the graph, direct decoding if it has one (N, 2) output, an error otherwise.

    Checks, each failing with one :class:`InputFileError` / :class:`ModelFormatError` line: missing
    files, invalid manifest JSON or fields, sha256 mismatch, truncated or corrupt ONNX, input shape
    vs the manifest's size, output count and shape vs the decoding, and that ONNX Runtime can open it.

    ``providers``: ONNX Runtime execution providers in order of preference (``"cuda"``,
    ``"tensorrt"``, ``"cpu"`` or full names); unavailable ones are skipped with the reason recorded
    in ``Bundle.provider_notes``, and the CPU provider is always the last resort.
    """
    path = Path(path)
    manifest_path, onnx_path = _resolve(path)
    if manifest_path is not None:
        manifest = _read_manifest(manifest_path)
        onnx_path = manifest_path.parent / manifest.onnx_file
        if not onnx_path.is_file():
            raise InputFileError(f"{onnx_path} not found; {manifest_path} names it as the bundle's model")
        actual = sha256_file(onnx_path)
        if actual != manifest.onnx_sha256:
            raise ModelFormatError(
                f"{onnx_path} sha256 {actual[:12]}… does not match manifest {manifest.onnx_sha256[:12]}…; "
                "the file was changed or corrupted"
            )
        proto = _load_onnx(onnx_path)
    else:
        proto = _load_onnx(onnx_path)
        manifest = _infer_manifest(onnx_path, proto)
    fixed_batch = _check_against_manifest(onnx_path, manifest_path, proto, manifest)
    return Bundle(manifest, onnx_path, manifest_path, proto, providers=providers, fixed_batch=fixed_batch)


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


# ----------------------------------------------------------------------------------------------
# The bundle
# ----------------------------------------------------------------------------------------------


def _choose_providers(requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(providers to ask ONNX Runtime for, notes on the ones skipped)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    known = set(ort.get_all_providers())
    chosen, notes = [], []
    for name in requested or ["CPUExecutionProvider"]:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in known:
            raise ConfigError(
                f"unknown ONNX Runtime provider {name!r}; expected one of {sorted(PROVIDER_ALIASES)} or a full "
                "provider name such as CUDAExecutionProvider"
            )
        if full not in available:
            notes.append(
                f"{full} is not available in this onnxruntime build (available: {', '.join(available)})"
            )
            continue
        if full not in chosen:
            chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen, notes


class Bundle:
    """A checked bundle: run it with ONNX Runtime (``predict``) or as PyTorch (``to_torch``).

    Attributes: ``manifest``, ``onnx_path``, ``manifest_path`` (None for a bare .onnx),
    ``providers`` (what the ONNX Runtime session really uses), ``provider_notes`` (why a requested
    provider is not among them).
    """

    def __init__(
        self,
        manifest: BundleManifest,
        onnx_path: Path,
        manifest_path: Path | None,
        proto: onnx.ModelProto,
        providers: Sequence[str] | None = None,
        fixed_batch: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.manifest = manifest
        self.onnx_path = Path(onnx_path)
        self.manifest_path = manifest_path
        self._proto = proto
        self._fixed_batch = fixed_batch
        wanted, self.provider_notes = _choose_providers(providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(proto.SerializeToString(), options, providers=wanted)
        except Exception as exc:
            first = _first_line(exc)
            raise ModelFormatError(f"ONNX Runtime cannot open {self.onnx_path}: {first}") from None
        self.providers = list(self._session.get_providers())
        for name in wanted:
            # ONNX Runtime drops a provider whose libraries fail to load (CUDA, TensorRT) with only a log line.
            if name not in self.providers:
                self.provider_notes.append(f"{name} failed to initialise; ONNX Runtime uses {self.providers}")

    # -- properties ----------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.manifest.input.size

    @property
    def decoding(self) -> str:
        return self.manifest.output.decoding

    @property
    def sha256(self) -> str:
        return self.manifest.onnx_sha256

    # -- inference -----------------------------------------------------------------------------
    def _prepare(self, images) -> np.ndarray:
        """Any accepted image batch -> (N, 3, S, S) float32 RGB in [0, 1]."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        size = self.input_size
        expected = f"(N, 3, {size}, {size}) float32 in [0, 1] or (N, {size}, {size}, 3) uint8 RGB"
        if images.ndim != 4:
            raise ModelFormatError(
                f"images have shape {images.shape}; {self.onnx_path.name} expects {expected}"
            )
        if images.shape[1:] == (3, size, size):
            nchw = images
        elif images.shape[1:] == (size, size, 3):
            nchw = images.transpose(0, 3, 1, 2)
        else:
            raise ModelFormatError(
                f"images have shape {images.shape}; {self.onnx_path.name} expects {expected}"
            )
        if nchw.dtype == np.uint8:
            return np.ascontiguousarray(nchw, dtype=np.float32) / np.float32(255.0)
        if not np.issubdtype(nchw.dtype, np.floating):
            raise ModelFormatError(f"images have dtype {nchw.dtype}; expected {expected}")
        nchw = np.ascontiguousarray(nchw, dtype=np.float32)
        if nchw.size:
            if not np.isfinite(nchw).all():
                raise ModelFormatError("images contain NaN or inf values; expected float32 in [0, 1]")
            low, high = float(nchw.min()), float(nchw.max())
            # A little slack for resampling overshoot; [0, 255] floats are the mistake this catches.
            if low < -1e-3 or high > 1.0 + 1e-3:
                raise ModelFormatError(
                    f"float images range over [{low:.3g}, {high:.3g}]; expected [0, 1] (or pass uint8)"
                )
        return nchw

    def _to_model_input(self, rgb01: np.ndarray) -> np.ndarray:
        spec = self.manifest.input
        x = rgb01[:, ::-1] if spec.channel_order == "BGR" else rgb01
        low, high = spec.value_range
        if (low, high) != (0.0, 1.0):
            x = x * np.float32(high - low) + np.float32(low)
        return np.ascontiguousarray(x, dtype=np.float32)

    def raw_outputs(self, images, batch_size: int = 256) -> list[np.ndarray]:
        """The graph's outputs named in the manifest, undecoded: [(N, 2)] or [(N, count), (N, count)]."""
        x = self._to_model_input(self._prepare(images))
        names = list(self.manifest.output.names)
        step = self._fixed_batch or batch_size
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(x), step):
            part = x[start : start + step]
            n = len(part)
            if self._fixed_batch and n < step:
                # A graph with a fixed batch size takes only full batches: pad with copies, drop after.
                part = np.concatenate([part, np.repeat(part[-1:], step - n, axis=0)])
            try:
                outs = self._session.run(names, {self.manifest.input.name: part})
            except Exception as exc:
                first = _first_line(exc)
                raise ModelFormatError(f"ONNX Runtime failed to run {self.onnx_path}: {first}") from None
            chunks.append([np.asarray(o)[:n] for o in outs])
        if not chunks:
            width = 2 if self.decoding == "direct" else self.manifest.output.bins.count
            return [np.zeros((0, width), np.float32) for _ in names]
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(names))]

    def predict(self, images, batch_size: int = 256) -> np.ndarray:
        """Gaze for a batch of face crops.

        ``images``: (N, 3, S, S) float in [0, 1] or (N, S, S, 3) / (N, 3, S, S) uint8, RGB, numpy or
        torch. Returns (N, 2) float32 (pitch, yaw) radians in the normalised camera frame. Raises
        :class:`ModelFormatError` for a wrong image size or NaN/inf model outputs.
        """
        outs = self.raw_outputs(images, batch_size)
        n = len(outs[0])
        if self.decoding == "direct":
            gaze = outs[0]
            if gaze.shape != (n, 2):
                raise ModelFormatError(
                    f"{self.onnx_path} output {self.manifest.output.names[0]!r} has shape {gaze.shape}; "
                    "direct decoding expects (N, 2)"
                )
        else:
            bins = self.manifest.output.bins
            centres = bins.start_deg + bins.width_deg * (np.arange(bins.count) + 0.5)
            angles = []
            for out_name, logits in zip(self.manifest.output.names, outs, strict=True):
                if logits.shape != (n, bins.count):
                    raise ModelFormatError(
                        f"{self.onnx_path} output {out_name!r} has shape {logits.shape}; binned decoding "
                        f"expects (N, {bins.count})"
                    )
                shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
                probs = np.exp(shifted)
                probs /= probs.sum(axis=1, keepdims=True)
                angles.append(np.deg2rad(probs @ centres))
            gaze = np.stack(angles, axis=1)
        gaze = np.asarray(gaze, dtype=np.float32)
        bad = ~np.isfinite(gaze).all(axis=1)
        if bad.any():
            raise ModelFormatError(
                f"{self.onnx_path} produced NaN or inf gaze for {int(bad.sum())} of {n} images; "
                "the model is broken or the input is far outside what it was trained on"
            )
        return gaze

    # -- PyTorch -------------------------------------------------------------------------------
    def to_torch(self, verify: bool = True) -> ConvertedGazeModel:
        """The bundle as a differentiable PyTorch module split into F and H (see :class:`ConvertedGazeModel`).

        The split is the manifest's ``feature_split.feature_tensor`` if declared, otherwise the tensor
        read by the last Gemm/MatMul layer(s) before the outputs. With ``verify`` the module's gaze must
        match ``predict`` within ``MATCH_ATOL`` radians on a random batch and input gradients must be
        non-zero.
        """
        declared = self.manifest.feature_split.feature_tensor if self.manifest.feature_split else None
        model = _convert(self._proto, self.manifest, self.onnx_path, declared)
        if verify:
            _verify_conversion(self, model)
        return model


# ----------------------------------------------------------------------------------------------
# ONNX -> PyTorch with the F/H split
# ----------------------------------------------------------------------------------------------


def _declare_hint(what: str) -> str:
    return (
        f"{what}; declare where F ends in {MANIFEST_NAME}: "
        '"feature_split": {"feature_tensor": "<ONNX tensor holding the (N, D) features>"}'
    )


def _fold_constants_into_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Turn Identity-of-initializer and Constant nodes into real initializers (in a copy).

    torch's exporter de-duplicates initializers with equal values (shared weights, but also e.g. the
    all-zero biases of an untrained model) and reads the duplicates through ``Identity`` nodes.
    onnx2torch's Conv/Gemm converters look weights up among initializers only and fail with a
    KeyError on such an alias, so each alias becomes an initializer of its own.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        out = node.output[0] if len(node.output) == 1 else None
        if out is None or out in graph_outputs:
            kept.append(node)
            continue
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.input[0] in initializers:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(initializers[node.input[0]])
        elif (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
        else:
            kept.append(node)
            continue
        tensor.name = out
        initializers[out] = tensor
        graph.initializer.append(tensor)
    del graph.node[:]
    graph.node.extend(kept)
    return model


class _GraphIndex:
    """Producers and constants of a graph, for walking it by tensor name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        self.constants = {t.name: t for t in self.graph.initializer}
        self.inputs = [v.name for v in _real_inputs(self.graph)]
        self.outputs = [o.name for o in self.graph.output]
        self.producer = {name: i for i, node in enumerate(self.nodes) for name in node.output if name}
        inferred = _inferred(model).graph
        self.value_info = {v.name: v for v in [*inferred.value_info, *inferred.input, *inferred.output]}

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def linear_input(self, node: onnx.NodeProto) -> str | None:
        """The data input of a linear layer (Gemm/MatMul with a constant 2-D weight), else None."""
        if (
            node.domain not in ("", "ai.onnx")
            or node.op_type not in ("Gemm", "MatMul")
            or len(node.input) < 2
        ):
            return None
        data, weight = node.input[0], node.input[1]
        if data in self.constants or weight not in self.constants or len(self.constants[weight].dims) != 2:
            return None
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0):
                return None
            if len(node.input) > 2 and node.input[2] and node.input[2] not in self.constants:
                return None
        return data

    def rank(self, name: str) -> int | None:
        info = self.value_info.get(name)
        dims = None if info is None else _dims(info)
        return None if dims is None else len(dims)


def _find_split(index: _GraphIndex, outputs: list[str], source: Path) -> str:
    """The tensor read by the last linear layer(s) on every path from the input to ``outputs``."""
    no_linear = _declare_hint(
        f"{source}: a path from the input to the outputs has no Gemm/MatMul layer, so the split into "
        "features and head cannot be found automatically"
    )
    features: list[str] = []
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen or name in index.constants:
            continue
        seen.add(name)
        if name not in index.producer:  # the image input (or a dangling name): no linear layer on this path
            raise ModelFormatError(no_linear)
        node = index.nodes[index.producer[name]]
        data = index.linear_input(node)
        if data is not None:
            if data not in features:
                features.append(data)
            continue
        stack.extend(n for n in node.input if n)
    if not features:
        raise ModelFormatError(no_linear)
    if len(features) != 1:
        raise ModelFormatError(
            _declare_hint(
                f"{source}: the last linear layers read different tensors {features}, so there is "
                "no single feature vector"
            )
        )
    return features[0]


def _region(index: _GraphIndex, inputs: list[str], outputs: list[str], source: Path, what: str) -> list[int]:
    """Indices (topological order) of the nodes computing ``outputs`` from ``inputs`` and constants."""
    needed: set[int] = set()
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen or name in inputs or name in index.constants:
            continue
        seen.add(name)
        if name not in index.producer:
            raise ModelFormatError(
                _declare_hint(f"{source}: {what} also depends on {name!r}, not only on {inputs}")
            )
        i = index.producer[name]
        if i not in needed:
            needed.add(i)
            stack.extend(n for n in index.nodes[i].input if n)
    return sorted(needed)


def _value_info(index: _GraphIndex, name: str) -> onnx.ValueInfoProto:
    info = index.value_info.get(name)
    if info is not None:
        return info
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def _submodel(
    index: _GraphIndex,
    nodes: list[onnx.NodeProto],
    inputs: list[str],
    outputs: list[str],
    extra_initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    """A stand-alone model of ``nodes``; each output gets its own Identity node.

    The extra Identity matters to onnx2torch: it builds the fx output from the *nodes* producing the
    outputs, so two outputs of one node (a Split) or an output that is also an input come out wrong.
    """
    tail, out_infos = [], []
    for name in outputs:
        alias = f"{name}__out"
        tail.append(helper.make_node("Identity", [name], [alias], name=f"{alias}_identity"))
        info = onnx.ValueInfoProto()
        info.CopyFrom(_value_info(index, name))
        info.name = alias
        out_infos.append(info)
    used = {n for node in nodes for n in node.input}
    initializers = [t for name, t in index.constants.items() if name in used]
    initializers.extend(extra_initializers)
    graph = helper.make_graph(
        [*nodes, *tail],
        "securegaze_part",
        [_value_info(index, n) for n in inputs],
        out_infos,
        initializer=initializers,
    )
    return helper.make_model(
        graph, opset_imports=list(index.model.opset_import), ir_version=index.model.ir_version
    )


def _canonical_head(
    index: _GraphIndex, nodes: list[onnx.NodeProto], feature: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[str]]:
    """Rewrite the linear layers reading ``feature`` as Gemm(feature, W (K, D), b (K,), transB=1).

    onnx2torch turns exactly that form into ``nn.Linear``, so H's weight rows are live parameters
    (fine-tuning moves them) whatever the source wrote: Gemm with transB=0, alpha/beta != 1 or a
    (1, K) bias, or a MatMul (its following Add stays a separate node). Returns (nodes, new
    initializers, output names of the rewritten layers in graph order).
    """
    new_nodes: list[onnx.NodeProto] = []
    new_initializers: list[onnx.TensorProto] = []
    linear_outputs: list[str] = []
    for node in nodes:
        if index.linear_input(node) != feature:
            new_nodes.append(node)
            continue
        weight = index.constant(node.input[1]).astype(np.float32)
        out = node.output[0]
        bias = None
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            rows = weight if attrs.get("transB", 0) else weight.T
            rows = rows * np.float32(attrs.get("alpha", 1.0))
            if len(node.input) > 2 and node.input[2]:
                bias = index.constant(node.input[2]).astype(np.float32) * np.float32(attrs.get("beta", 1.0))
                try:
                    bias = np.broadcast_to(
                        bias.reshape(-1) if bias.size == rows.shape[0] else bias, (rows.shape[0],)
                    ).copy()
                except ValueError:
                    # A bias that varies along the batch is not a plain linear layer; leave it as it is.
                    new_nodes.append(node)
                    continue
        else:
            rows = weight.T
        inputs = [feature, f"{out}__head_weight"]
        new_initializers.append(numpy_helper.from_array(np.ascontiguousarray(rows), inputs[1]))
        if bias is not None:
            inputs.append(f"{out}__head_bias")
            new_initializers.append(numpy_helper.from_array(bias, inputs[2]))
        new_nodes.append(helper.make_node("Gemm", inputs, [out], name=f"{out}__head_gemm", transB=1))
        linear_outputs.append(out)
    return new_nodes, new_initializers, linear_outputs


def _onnx2torch(model: onnx.ModelProto, source: Path, part: str) -> nn.Module:
    from onnx2torch import convert

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert(model, attach_onnx_mapping=True)
    except Exception as exc:
        first = _first_line(exc)
        raise ModelFormatError(
            f"{source}: onnx2torch cannot convert the {part} part ({type(exc).__name__}: {first})"
        ) from None


def _convert(
    proto: onnx.ModelProto, manifest: BundleManifest, source: Path, declared: str | None
) -> ConvertedGazeModel:
    index = _GraphIndex(_fold_constants_into_initializers(proto))
    if len(index.inputs) != 1:
        raise ModelFormatError(
            f"{source} has inputs {index.inputs}; conversion needs exactly one image input"
        )
    image = index.inputs[0]
    outputs = list(manifest.output.names)
    feature = declared if declared is not None else _find_split(index, outputs, source)
    if feature == image or feature in outputs:
        raise ModelFormatError(
            _declare_hint(f"{source}: feature tensor {feature!r} is the model's input or output")
        )
    rank = index.rank(feature)
    if rank is not None and rank != 2:
        raise ModelFormatError(
            _declare_hint(f"{source}: feature tensor {feature!r} has rank {rank}; F must give (N, D) vectors")
        )

    f_nodes = [index.nodes[i] for i in _region(index, [image], [feature], source, "F")]
    h_nodes = [index.nodes[i] for i in _region(index, [feature], outputs, source, "the head H")]
    h_nodes, head_initializers, linear_outputs = _canonical_head(index, h_nodes, feature)
    if not linear_outputs:
        raise ModelFormatError(
            _declare_hint(
                f"{source}: no Gemm/MatMul layer reads feature tensor {feature!r}, so H has no weight "
                "rows to read"
            )
        )
    f_model = _submodel(index, f_nodes, [image], [feature])
    h_model = _submodel(index, h_nodes, [feature], outputs, head_initializers)
    features_net = _onnx2torch(f_model, source, "feature (F)")
    head_net = _onnx2torch(h_model, source, "head (H)")

    by_output = {}
    for module in head_net.modules():
        mapping = getattr(module, "onnx_mapping", None)
        if mapping is not None:
            for name in mapping.outputs:
                by_output[name] = module
    linears = [by_output.get(name) for name in linear_outputs]
    if not all(isinstance(m, nn.Linear) for m in linears):
        raise ModelFormatError(f"{source}: onnx2torch did not turn the head's linear layers into nn.Linear")
    bins = manifest.output.bins.to_binspec() if manifest.output.bins else None
    return ConvertedGazeModel(features_net, head_net, linears, manifest, feature, bins)


class ConvertedGazeModel(nn.Module):
    """A bundle's ONNX graph as PyTorch, with the :class:`GazeModel` interface (G = H o F).

    ``features(x)``: (N, 3, S, S) float32 RGB in [0, 1] -> (N, D) features (F, including any
    channel-order or value-range conversion the manifest asks for). ``head(z)``: (N, D) -> (N, 2)
    (pitch, yaw) radians (H, including the bin decoding for binned models). ``head_weight()``: rows of
    H's linear layer(s), (2, D) or (2*count, D), live ``nn.Parameter`` data.
    """

    architecture = "onnx"

    def __init__(
        self,
        features_net: nn.Module,
        head_net: nn.Module,
        head_linears: list[nn.Linear],
        manifest: BundleManifest,
        feature_tensor: str,
        bins: BinSpec | None,
    ) -> None:
        super().__init__()
        self.features_net = features_net
        self.head_net = head_net
        # Kept outside the module tree: they are already registered inside head_net.
        self._head_linears = tuple(head_linears)
        self.input_size = manifest.input.size
        self.decoding = manifest.output.decoding
        self.bins = bins or BinSpec()
        self.feature_tensor = feature_tensor
        self.feature_dim = int(head_linears[0].in_features)
        self.source_name = manifest.name
        self._bgr = manifest.input.channel_order == "BGR"
        self._value_range = tuple(manifest.input.value_range)
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """F: (N, 3, S, S) RGB in [0, 1] -> (N, feature_dim)."""
        if self._bgr:
            x = x.flip(1)
        low, high = self._value_range
        if (low, high) != (0.0, 1.0):
            x = x * (high - low) + low
        return self.features_net(x)

    def _head_outputs(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _as_tuple(self.head_net(z))

    def head_logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Binned models only: (N, D) -> ((N, count) pitch logits, (N, count) yaw logits)."""
        if self.decoding != "binned":
            raise TypeError("head_logits is only defined for binned models")
        pitch, yaw = self._head_outputs(z)
        return pitch, yaw

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """H: (N, feature_dim) -> (N, 2) radians."""
        if self.decoding == "direct":
            return self._head_outputs(z)[0]
        pitch, yaw = self.head_logits(z)
        return torch.stack([decode_bins(pitch, self.bins), decode_bins(yaw, self.bins)], dim=-1)

    def head_weight(self) -> torch.Tensor:
        """Rows of H's weight matrix, (K, feature_dim): 2 rows (direct) or 2*count (binned)."""
        return torch.cat([linear.weight for linear in self._head_linears], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def export_outputs(self, x: torch.Tensor):
        """What an exported ONNX graph returns (so a fine-tuned conversion can be bundled again)."""
        z = self.features(x)
        return self.head(z) if self.decoding == "direct" else self.head_logits(z)

    def config(self) -> dict:
        cfg = {"architecture": self.architecture, "input_size": self.input_size, "decoding": self.decoding}
        if self.decoding == "binned":
            cfg["bins"] = self.bins.to_dict()
        return cfg


def _verify_conversion(bundle: Bundle, model: ConvertedGazeModel) -> None:
    """The converted module must reproduce ONNX Runtime and pass gradients back to the image."""
    size = bundle.input_size
    n = 1 if bundle._fixed_batch == 1 else 2
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    want = bundle.predict(x.numpy())
    x.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        got = model(x)
        got.sum().backward()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    err = float(np.max(np.abs(got.detach().numpy() - want)))
    if not err <= MATCH_ATOL:
        raise ModelFormatError(
            f"{bundle.onnx_path}: the PyTorch conversion differs from ONNX Runtime by {err:.2e} rad "
            f"(> {MATCH_ATOL:g}); the model uses an operator onnx2torch converts differently"
        )
    grad = x.grad
    if grad is None or not torch.isfinite(grad).all() or not bool((grad != 0).any()):
        raise ModelFormatError(
            f"{bundle.onnx_path}: the PyTorch conversion gives no usable input gradient; the scanner needs one"
        )
