"""Gaze engines behind one interface: ONNX Runtime (CPU, CUDA, TensorRT providers) and native TensorRT.

Every engine takes normalised face crops and returns the model's gaze::

    engine = create_engine("onnxruntime", "models/default")
    gaze = engine.infer(faces)  # (N, S, S, 3) uint8 RGB -> (N, 2) float32 (pitch, yaw) radians

in the **normalised camera frame** (de-normalise with :mod:`edge_app.normalisation`). The engine
also says which ONNX file it runs (``onnx_sha256``), so the integrity check's verdict on that ONNX
vouches for it (docs/architecture.md section 7): a TensorRT engine records the sha256 of the ONNX it was
built from next to itself, and the runner refuses an engine whose record does not match.

* :class:`OnnxRuntimeEngine`: a checked bundle (:func:`securegaze.bundle.load_bundle`); providers
  ``"auto"`` asks for TensorRT, then CUDA, then the CPU, and keeps what this onnxruntime build
  has (the skipped ones are in ``notes``). Intra-op threads are set from the config (1 on a
  shared 2-core machine keeps the face stage's threads free).
* :class:`TensorRTEngine`: a serialised TensorRT engine (FP16 by default) built by
  :func:`build_tensorrt_engine` (``deploy/jetson/build_engine.py``), run with TensorRT's tensor
  API and CUDA memory from PyTorch (torch is already a dependency and Jetson's builds carry CUDA).
  Engines are cached by ONNX sha256 + TensorRT version + precision, so the slow first build runs
  once per model and TensorRT version.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from securegaze.errors import ConfigError, InputFileError, ModelFormatError
from securegaze.io import atomic_write_json, sha256_file

ENGINE_KINDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp16", "fp32")


class NonFiniteGazeError(ModelFormatError):
    """The model returned NaN or inf gaze for a face (a broken model or an input far off its training)."""


class GazeEngine(ABC):
    """The engine interface. Attributes: ``name``, ``input_size`` (S, px), ``onnx_sha256`` (of the
    ONNX the engine runs or was built from), ``providers`` (what actually runs), ``notes``."""

    name: str = "engine"
    input_size: int
    onnx_sha256: str
    providers: list[str]
    notes: list[str]

    def _check(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        s = self.input_size
        if faces.ndim != 4 or faces.shape[1:] != (s, s, 3) or faces.dtype != np.uint8:
            raise ModelFormatError(f"{self.name}: faces must be (N, {s}, {s}, 3) uint8 RGB, got "
                                   f"{faces.shape} {faces.dtype}")
        return faces

    @abstractmethod
    def infer(self, faces: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB normalised crops -> (N, 2) float32 radians; raises
        :class:`NonFiniteGazeError` when any output is NaN or inf."""

    def close(self) -> None:  # noqa: B027 - optional hook: most engines hold nothing to release
        """Release the engine's resources (sessions, device memory)."""


# ---------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------


def auto_providers() -> list[str]:
    """The ONNX Runtime providers to ask for with ``"auto"``: TensorRT, CUDA, CPU, where present."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


class OnnxRuntimeEngine(GazeEngine):
    """A model bundle (or bare .onnx) in ONNX Runtime; ``providers``: "auto" or a list such as
    ``["cuda", "cpu"]``; ``threads``: intra-op threads (0: ONNX Runtime's default);
    ``trt_cache_dir``: where ONNX Runtime's TensorRT provider caches its FP16 engines (it builds
    one per model on first use, which takes minutes on a Jetson)."""

    name = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike, providers: str | list[str] = "auto", threads: int = 1,
                 trt_cache_dir: str | os.PathLike | None = None) -> None:

        from securegaze.bundle import load_bundle

        wanted = auto_providers() if providers == "auto" else list(providers)
        # Threads: ONNX Runtime's default (one per core) would fight MediaPipe's threads for 2 cores.
        # TensorRT: FP16 with an engine cache, so the slow first build happens once per model.
        cache = Path(trt_cache_dir or default_engine_cache())
        options = {"TensorrtExecutionProvider": {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                                 "trt_engine_cache_path": str(cache)}}
        if any("tensorrt" in str(name).lower() for name in wanted):
            cache.mkdir(parents=True, exist_ok=True)
        self.bundle = load_bundle(model_path, providers=wanted, threads=threads or None, provider_options=options)
        self.input_size = self.bundle.input_size
        self.onnx_sha256 = self.bundle.sha256
        self.notes = list(self.bundle.adaptations) + list(self.bundle.provider_notes)
        self.providers = list(self.bundle.providers)

    def infer(self, faces: np.ndarray) -> np.ndarray:
        faces = self._check(faces)
        try:
            return self.bundle.predict(faces)
        except ModelFormatError as exc:
            if "NaN or inf" in str(exc):
                raise NonFiniteGazeError(str(exc)) from None
            raise


# ---------------------------------------------------------------------------------------------
# TensorRT
# ---------------------------------------------------------------------------------------------


def tensorrt_unavailable_reason() -> str | None:
    """None when the native TensorRT engine can run here, else why not (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed (Jetson: JetPack ships it; pip: tensorrt)"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (the TensorRT runner uses its CUDA memory and streams)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to PyTorch"
    return None


def default_engine_cache() -> Path:
    """``$SECUREGAZE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/securegaze-edge/engines``."""
    if os.environ.get("SECUREGAZE_ENGINE_CACHE"):
        return Path(os.environ["SECUREGAZE_ENGINE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "securegaze-edge" / "engines"


def engine_cache_key(onnx_sha256: str, trt_version: str, precision: str, reading: dict | None = None) -> str:
    """File stem of a cached engine: ONNX sha256 prefix, TensorRT version and precision, and for a graph
    read other than plainly (:func:`engine_reading`: a manifest's input conversion, a third-party form's
    adaptation) a hash of that reading: the same ONNX read another way is another engine."""
    key = f"gaze-{onnx_sha256[:16]}-trt{trt_version}-{precision}"
    if reading and (reading.get("adaptations") or reading.get("input_affine") != PLAIN_INPUT):
        from edge_app.integrity import canonical_json

        key += "-r" + hashlib.sha256(canonical_json(reading).encode()).hexdigest()[:8]
    return key


#: The input conversion of a graph that takes RGB in [0, 1] as it is.
PLAIN_INPUT = {"flip_channels": False, "scale": [1.0] * 3, "offset": [0.0] * 3}


def engine_reading(bundle) -> dict:
    """How the runner reads ``bundle``'s graph: its input conversion, outputs and decoding, and the notes of
    the adaptations appended to the graph on loading (:mod:`securegaze.bundle.adapt`). An engine's record
    keeps it; an engine built for another reading of the same ONNX is refused (:func:`check_engine_reading`)."""
    return {"input_affine": input_affine_record(bundle.manifest.input), "output_names": list(bundle.manifest.output.names),
            "decoding": bundle.manifest.output.decoding, "adaptations": list(bundle.adaptations)}


def check_engine_reading(engine_path: Path, record: dict, expected: dict) -> None:
    """ModelFormatError unless the engine's record reads the model as ``expected`` (:func:`engine_reading`);
    a record written before readings were kept is taken as its input conversion and outputs, unadapted."""
    recorded = record.get("reading") or {"input_affine": record.get("input_affine") or PLAIN_INPUT,
                                         "output_names": record.get("output_names"), "decoding": record.get("decoding"),
                                         "adaptations": []}
    if recorded != expected:
        changed = ", ".join(k for k in sorted(set(recorded) | set(expected)) if recorded.get(k) != expected.get(k))
        raise ModelFormatError(f"{engine_path} was built for another reading of the model ({changed} differ: its "
                               "manifest or this version's adaptation changed since); rebuild the engine")


def engine_record_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def build_tensorrt_engine(model_path: str | os.PathLike, cache_dir: str | os.PathLike, precision: str = "fp16",
                          max_batch: int = 8, workspace_mb: int = 1024, rebuild: bool = False,
                          progress: Callable[[str], None] | None = None) -> Path:
    """Build (or find in ``cache_dir``) a serialised TensorRT engine for a bundle's ONNX.

    The engine file is ``<cache_dir>/<engine_cache_key>.engine`` and beside it
    ``<same>.engine.json`` records the source ONNX sha256, the TensorRT version, the precision,
    the input size and the build time; both are written atomically. ``progress`` receives one-line
    messages (the build takes minutes on a Jetson; TensorRT >= 10 reports its phases). Returns the
    engine path.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise ConfigError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    from securegaze.bundle import load_bundle

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    say = progress or (lambda _msg: None)
    bundle = load_bundle(model_path)  # the same checks as every other load: sha256, shapes
    onnx_sha = bundle.sha256  # the checked manifest's: the .onnx and any external weight files
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    reading = engine_reading(bundle)
    engine_path = cache_dir / (engine_cache_key(onnx_sha, trt.__version__, precision, reading) + ".engine")
    record_path = engine_record_path(engine_path)
    if engine_path.is_file() and record_path.is_file() and not rebuild:
        say(f"cached engine {engine_path} (ONNX sha256 {onnx_sha[:12]}, TensorRT {trt.__version__}, {precision})")
        return engine_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    say(f"parsing {bundle.onnx_path}")
    if not parser.parse(bundle.onnx_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFormatError(f"TensorRT cannot parse {bundle.onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in TensorRT 10
            say("this GPU has no fast FP16; building FP16 anyway (TensorRT falls back per layer)")
        config.set_flag(trt.BuilderFlag.FP16)
    size = bundle.input_size
    name = bundle.manifest.input.name
    profile = builder.create_optimization_profile()
    # Batch 1 is the camera loop; up to max_batch for offline evaluation.
    profile.set_shape(name, (1, 3, size, size), (1, 3, size, size), (max_batch, 3, size, size))
    config.add_optimization_profile(profile)
    monitor = _progress_monitor(trt, say)
    if monitor is not None:
        config.progress_monitor = monitor
    say(f"building the {precision} engine (minutes on a Jetson; cached afterwards)")
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFormatError(f"TensorRT failed to build an engine from {bundle.onnx_path} (see its log above)")
    from securegaze.io import atomic_write_bytes

    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    atomic_write_json(record_path, {
        "onnx_sha256": onnx_sha, "onnx_path": str(bundle.onnx_path), "tensorrt_version": trt.__version__,
        "precision": precision, "input_name": name, "input_size": size,
        "output_names": list(bundle.manifest.output.names), "decoding": bundle.manifest.output.decoding,
        "input_affine": input_affine_record(bundle.manifest.input), "reading": reading,
        "max_batch": max_batch, "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1), "engine_sha256": sha256_file(engine_path)})
    say(f"engine written: {engine_path} ({time.monotonic() - started:.0f} s)")
    return engine_path


def input_affine_record(spec) -> dict:
    """The manifest's input conversion (channel order, value range, per-channel standardisation) for
    the engine record: the runner feeds the engine what the graph wants, as ONNX Runtime does."""
    flip, scale, offset = spec.affine()
    return {"flip_channels": bool(flip), "scale": [float(v) for v in scale], "offset": [float(v) for v in offset]}


def _progress_monitor(trt, say):
    """A TensorRT >= 10 IProgressMonitor that reports phase starts; None on older TensorRT."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            say(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # keep building

        def phase_finish(self, phase_name):
            pass

    return _Monitor()


class TensorRTEngine(GazeEngine):
    """Run a serialised engine from :func:`build_tensorrt_engine`.

    ``expected_onnx_sha256``: the sha256 of the ONNX the integrity check scanned; the engine's record
    must name the same ONNX, else :class:`ModelFormatError` (the scan would not vouch for it).
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, expected_onnx_sha256: str | None = None,
                 expected_reading: dict | None = None) -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise ConfigError(f"the tensorrt engine cannot run here: {reason}; use engine onnxruntime")
        import tensorrt as trt
        import torch

        self.engine_path = Path(engine_path)
        record_path = engine_record_path(self.engine_path)
        if not self.engine_path.is_file() or not record_path.is_file():
            raise InputFileError(f"{self.engine_path}: TensorRT engine or its record {record_path.name} not found; "
                                 "build it with deploy/jetson/build_engine.py")
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("engine_sha256") != sha256_file(self.engine_path):
            raise ModelFormatError(f"{self.engine_path}: sha256 does not match its record; the engine was changed")
        if expected_onnx_sha256 is not None and record.get("onnx_sha256") != expected_onnx_sha256:
            raise ModelFormatError(
                f"{self.engine_path} was built from ONNX {str(record.get('onnx_sha256'))[:12]}, not the scanned model "
                f"{expected_onnx_sha256[:12]}; rebuild the engine from the scanned model")
        if expected_reading is not None:
            check_engine_reading(self.engine_path, record, expected_reading)
        if record.get("tensorrt_version") != trt.__version__:
            raise ModelFormatError(f"{self.engine_path} was built with TensorRT {record.get('tensorrt_version')}, "
                                   f"this is {trt.__version__}; rebuild it")
        self.record = record
        # Records written before the input conversion was kept describe our own bundles: RGB in [0, 1].
        affine = record.get("input_affine") or {"flip_channels": False, "scale": [1.0] * 3, "offset": [0.0] * 3}
        self._flip = bool(affine["flip_channels"])
        self._identity_input = not self._flip and affine["scale"] == [1.0] * 3 and affine["offset"] == [0.0] * 3
        self._scale = torch.tensor(affine["scale"], dtype=torch.float32).view(1, 3, 1, 1)
        self._offset = torch.tensor(affine["offset"], dtype=torch.float32).view(1, 3, 1, 1)
        self.onnx_sha256 = record["onnx_sha256"]
        self.input_size = int(record["input_size"])
        self.input_name = record["input_name"]
        self.output_names = list(record["output_names"])
        if record.get("decoding") != "direct":
            raise ModelFormatError(f"{self.engine_path}: the TensorRT runner reads direct (N, 2) gaze outputs, "
                                   f"this engine's model has {record.get('decoding')} decoding")
        self.max_batch = int(record.get("max_batch", 1))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise ModelFormatError(f"TensorRT cannot deserialise {self.engine_path}")
        self._context = self._engine.create_execution_context()
        self._device = torch.device("cuda")
        self._stream = torch.cuda.Stream()
        self.providers = [f"TensorRT {trt.__version__} ({record['precision']})"]
        self.notes = []

    def infer(self, faces: np.ndarray) -> np.ndarray:
        import torch

        faces = self._check(faces)
        out = []
        for start in range(0, len(faces), self.max_batch):
            part = faces[start:start + self.max_batch]
            n, s = len(part), self.input_size
            with torch.cuda.stream(self._stream):
                x = torch.from_numpy(np.ascontiguousarray(part)).to(self._device, non_blocking=True)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                if not self._identity_input:
                    if self._flip:
                        x = x.flip(1)
                    x = x * self._scale.to(self._device) + self._offset.to(self._device)
                x = x.contiguous()
                self._context.set_input_shape(self.input_name, (n, 3, s, s))
                self._context.set_tensor_address(self.input_name, x.data_ptr())
                y = torch.empty((n, 2), dtype=torch.float32, device=self._device)
                self._context.set_tensor_address(self.output_names[0], y.data_ptr())
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise ModelFormatError(f"TensorRT failed to run {self.engine_path}")
            self._stream.synchronize()
            out.append(y.cpu().numpy())
        gaze = np.concatenate(out) if out else np.zeros((0, 2), np.float32)
        bad = ~np.isfinite(gaze).all(axis=1)
        if bad.any():
            raise NonFiniteGazeError(f"{self.engine_path} produced NaN or inf gaze for {int(bad.sum())} of {len(gaze)} faces")
        return gaze.astype(np.float32)


def create_engine(kind: str, model_path: str | os.PathLike, providers: str | list[str] = "auto", threads: int = 1,
                  engine_path: str | os.PathLike | None = None, expected_onnx_sha256: str | None = None,
                  trt_cache_dir: str | os.PathLike | None = None) -> GazeEngine:
    """The engine ``kind`` ("onnxruntime" or "tensorrt") for the model at ``model_path``."""
    if kind == "onnxruntime":
        return OnnxRuntimeEngine(model_path, providers, threads, trt_cache_dir)
    if kind == "tensorrt":
        if engine_path is None:
            raise ConfigError("engine tensorrt needs engine.tensorrt_engine (a file from deploy/jetson/build_engine.py)")
        from securegaze.bundle import load_bundle

        return TensorRTEngine(engine_path, expected_onnx_sha256, engine_reading(load_bundle(model_path)))
    raise ConfigError(f"unknown engine {kind!r}; expected one of {', '.join(ENGINE_KINDS)}")
