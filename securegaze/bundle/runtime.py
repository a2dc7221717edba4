"""A checked bundle run in ONNX Runtime (``Bundle.predict``) or as PyTorch (``Bundle.to_torch``), and the
choice of ONNX Runtime execution providers. Bundles are opened by :func:`securegaze.bundle.load_bundle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from securegaze.bundle.adapt import probe_faces
from securegaze.bundle.float32_copy import FP16_ATOL, float32_copy
from securegaze.bundle.manifest import MATCH_ATOL, BundleManifest
from securegaze.bundle.onnx_graph import first_line
from securegaze.bundle.onnx_to_torch import ConvertedGazeModel, convert_onnx
from securegaze.bundle.opset_down import batch_free
from securegaze.errors import ConfigError, ModelFormatError

#: Short names accepted for ONNX Runtime execution providers.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def full_provider_name(name: str) -> str:
    """The ONNX Runtime provider ``name`` means (an alias of :data:`PROVIDER_ALIASES` or a full name);
    ConfigError when ONNX Runtime knows no such provider (whether this build has it is another matter)."""
    import onnxruntime as ort

    full = PROVIDER_ALIASES.get(name.lower(), name)
    if full not in set(ort.get_all_providers()):
        raise ConfigError(
            f"unknown ONNX Runtime provider {name!r}; expected one of {sorted(PROVIDER_ALIASES)} or a full "
            "provider name such as CUDAExecutionProvider"
        )
    return full


def choose_providers(requested: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(providers to ask ONNX Runtime for, notes on the ones skipped)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen, notes = [], []
    for name in requested or ["CPUExecutionProvider"]:
        full = full_provider_name(name)
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
    provider is not among them), ``adaptations`` (how a third-party graph's form was adapted on
    reading: :mod:`securegaze.bundle.adapt`; empty for the project's own).
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
        adaptations: Sequence[str] = (),
    ) -> None:
        import onnxruntime as ort

        self.manifest = manifest
        self.adaptations = tuple(adaptations)
        self.onnx_path = Path(onnx_path)
        self.manifest_path = manifest_path
        self._proto = proto
        self._fixed_batch = fixed_batch
        # The input conversion, worked out once (None: the graph takes RGB in [0, 1] as it is).
        self._input_affine = None if manifest.input.is_identity() else manifest.input.affine()
        wanted, self.provider_notes = choose_providers(providers)
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
            first = first_line(exc)
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

    def onnx_bytes(self) -> bytes:
        """The whole model as one serialised ONNX file, external weights included (for a TensorRT parser)."""
        return self._proto.SerializeToString()

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
        if self._input_affine is None:
            return np.ascontiguousarray(rgb01, dtype=np.float32)
        flip, scale, offset = self._input_affine
        x = rgb01[:, ::-1] if flip else rgb01
        x = x * scale[None, :, None, None] + offset[None, :, None, None]
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
                first = first_line(exc)
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
        non-zero. A graph with float16 weights inside is converted from its float32 copy
        (:mod:`securegaze.bundle.float32_copy`), with a note in ``adaptations``.
        """
        wide, note = float32_copy(self.onnx_path, self._proto)
        if wide is not None:
            # Float16 inside: converted from the float32 copy, whose conversion is checked against ONNX
            # Runtime on that copy at MATCH_ATOL (both compute in float32, so any difference is the
            # converter's); the copy is held to the graph as given within FP16_ATOL (float16 rounding),
            # which is what the edge app runs.
            twin = Bundle(self.manifest, self.onnx_path, self.manifest_path, wide, fixed_batch=self._fixed_batch,
                          adaptations=(*self.adaptations, note))
            if verify:
                self._check_float32_copy(twin)
            return twin.to_torch(verify)
        declared = self.manifest.feature_split.feature_tensor if self.manifest.feature_split else None
        model = convert_onnx(self._proto, self.manifest, self.onnx_path, declared)
        if self._fixed_batch and not self._runs_other_batches(model):
            # A reshape to the export's batch size: let it infer the batch, if the gaze stays ONNX
            # Runtime's; else F runs on batches of that size only (slower: one call per batch).
            relaxed = batch_free(self._proto, self._fixed_batch)
            try:
                other = None if relaxed is None else convert_onnx(relaxed, self.manifest, self.onnx_path, declared)
            except ModelFormatError:
                other = None
            if other is not None and self._runs_other_batches(other):
                model = other
            else:
                model.fixed_batch = self._fixed_batch
        model.adaptations = self.adaptations
        if verify:
            self._verify_conversion(model)
        return model

    def _check_float32_copy(self, twin: Bundle) -> None:
        """The float32 copy of a float16 graph must give its gaze within FP16_ATOL on the probe's faces."""
        faces = probe_faces(self.input_size)
        err = float(np.max(np.abs(twin.predict(faces) - self.predict(faces))))
        if not err <= FP16_ATOL:
            raise ModelFormatError(
                f"{self.onnx_path}: its weights are float16, and its float32 copy (what the scan converts to "
                f"PyTorch) differs from it by {err:.2e} rad (> {FP16_ATOL:g}) on {len(faces)} synthetic faces; "
                "re-export the model in float32 (e.g. model.float() before torch.onnx.export)"
            )

    def _runs_other_batches(self, model: ConvertedGazeModel) -> bool:
        """Whether the converted module of a fixed-batch graph gives the same gaze at another batch size
        (a Flatten does; a reshape to a constant shape fails or mixes images)."""
        n = self._fixed_batch + 1
        x = torch.rand(n, 3, self.input_size, self.input_size, generator=torch.Generator().manual_seed(1))
        try:
            with torch.no_grad():
                got = model(x).numpy()
        except Exception:  # noqa: BLE001 - any failure at another batch size means: run it at its own
            return False
        return bool(got.shape == (n, 2) and np.max(np.abs(got - self.predict(x.numpy()))) <= MATCH_ATOL)

    def _verify_conversion(self, model: ConvertedGazeModel) -> None:
        """The converted module must reproduce ONNX Runtime and pass gradients back to the image."""
        size = self.input_size
        n = 3 if self._fixed_batch else 2  # a fixed-batch graph: more or fewer than its batch, filled up
        x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
        want = self.predict(x.numpy())
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
                f"{self.onnx_path}: the PyTorch conversion differs from ONNX Runtime by {err:.2e} rad "
                f"(> {MATCH_ATOL:g}); the model uses an operator onnx2torch converts differently"
            )
        grad = x.grad
        if grad is None or not torch.isfinite(grad).all() or not bool((grad != 0).any()):
            raise ModelFormatError(
                f"{self.onnx_path}: the PyTorch conversion gives no usable input gradient; the scanner needs one"
            )
