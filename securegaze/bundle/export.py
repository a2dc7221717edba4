"""Export a trained :class:`GazeModel` to a bundle, checked in ONNX Runtime against PyTorch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from securegaze.bundle.manifest import (
    BINNED_OUTPUT_NAMES,
    DIRECT_OUTPUT_NAMES,
    EXPORT_OPSET,
    INPUT_NAME,
    MANIFEST_NAME,
    MATCH_ATOL,
    ONNX_NAME,
    BundleManifest,
    Provenance,
    software_versions,
)
from securegaze.errors import ConfigError, InputFileError, ModelFormatError
from securegaze.io import atomic_write, atomic_write_bytes, sha256_file
from securegaze.models.base import GazeModel

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


def as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    """A model's outputs as a tuple, whether it returns one tensor or several."""
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
    provenance = provenance.model_copy(update={"software": {**software_versions(), **provenance.software}})

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
            expected = [t.detach().cpu().numpy() for t in as_tuple(wrapper(check_batch.to(device)))]
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
