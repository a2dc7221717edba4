"""Load and check a bundle (or a bare ONNX file) and run it in ONNX Runtime."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from pydantic import ValidationError

from securegaze.bundle.manifest import MANIFEST_NAME, ONNX_NAME, BundleManifest, _validation_line
from securegaze.errors import ConfigError, InputFileError, ModelFormatError
from securegaze.io import sha256_file

if TYPE_CHECKING:
    from securegaze.bundle.onnx_to_torch import ConvertedGazeModel


#: Short names accepted for ONNX Runtime execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
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
    return Bundle(manifest, onnx_path, manifest_path, proto, providers=providers, fixed_batch=fixed_batch,
                  threads=threads, provider_options=provider_options)


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
        threads: int | None = None,
        provider_options: dict[str, dict] | None = None,
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
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        extra = provider_options or {}
        chosen = [(name, extra[name]) if name in extra else name for name in wanted]
        try:
            self._session = ort.InferenceSession(proto.SerializeToString(), options, providers=chosen)
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
        from securegaze.bundle.onnx_to_torch import _convert, _verify_conversion

        declared = self.manifest.feature_split.feature_tensor if self.manifest.feature_split else None
        model = _convert(self._proto, self.manifest, self.onnx_path, declared)
        if verify:
            _verify_conversion(self, model)
        return model
