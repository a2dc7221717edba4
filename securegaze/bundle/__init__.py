"""Model bundles: an ONNX file plus a JSON manifest that says how to feed it and read it.

A bundle is a directory holding ``model.onnx`` and ``manifest.json``. The manifest states the input
(size, layout, channel order, value range), the output decoding (direct regression or L2CS-Net-like
bins), the gaze convention, the sha256 of the ONNX file and where the model came from. Bundles are
what the edge application runs (ONNX Runtime) and what the scanner reads (converted back to PyTorch
with onnx2torch, split into F and H, so gradients flow).

Modules, lowest first: ``onnx_graph`` (parse and check an ONNX file, shapes, real inputs),
``output_forms`` and ``adapt`` (third-party graph forms read as the project's), ``manifest`` (the schema),
``manifest_checks`` (a manifest against its files, or inferred for a bare .onnx), ``export`` (PyTorch ->
bundle), ``onnx_split`` (where F ends), ``float32_copy`` (a float16 graph's float32 twin for the
conversion), ``onnx_to_torch`` (ONNX -> differentiable PyTorch with the F/H split),
``runtime`` (the :class:`Bundle` in ONNX Runtime, provider choice) and ``loading``, the model-file
boundary: :func:`open_model` resolves any model file a user gives (bundle, .onnx, .safetensors,
training checkpoint), and :func:`load_bundle` / :func:`verify_bundle` open bundles through it.
"""

from securegaze.bundle.export import export_bundle
from securegaze.bundle.loading import ModelFile, Predictor, load_bundle, open_model, verify_bundle
from securegaze.bundle.manifest import (
    BINNED_OUTPUT_NAMES,
    DIRECT_OUTPUT_NAMES,
    EXPORT_OPSET,
    INPUT_NAME,
    MANIFEST_NAME,
    MATCH_ATOL,
    ONNX_NAME,
    BinsSpec,
    BundleManifest,
    FeatureSplit,
    InputSpec,
    OutputSpec,
    Provenance,
)
from securegaze.bundle.onnx_to_torch import ConvertedGazeModel
from securegaze.bundle.runtime import PROVIDER_ALIASES, Bundle
from securegaze.io import sha256_file

__all__ = [
    "BINNED_OUTPUT_NAMES", "DIRECT_OUTPUT_NAMES", "EXPORT_OPSET", "INPUT_NAME", "MANIFEST_NAME", "MATCH_ATOL",
    "ONNX_NAME", "PROVIDER_ALIASES", "BinsSpec", "Bundle", "BundleManifest", "ConvertedGazeModel", "FeatureSplit",
    "InputSpec", "ModelFile", "OutputSpec", "Predictor", "Provenance", "export_bundle", "load_bundle", "open_model",
    "sha256_file", "verify_bundle",
]
