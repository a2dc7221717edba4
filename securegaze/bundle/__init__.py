"""Model bundles: an ONNX file plus a JSON manifest that says how to feed it and read it.

A bundle is a directory holding ``model.onnx`` and ``manifest.json``. The manifest states the input
(size, layout, channel order, value range), the output decoding (direct regression or L2CS-Net-like
bins), the gaze convention, the sha256 of the ONNX file and where the model came from. Bundles are
what the edge application runs (ONNX Runtime) and what the scanner reads (converted back to PyTorch
with onnx2torch, split into F and H, so gradients flow).

Modules: ``manifest`` (the schema), ``export`` (PyTorch -> bundle), ``loading`` (checks, ONNX Runtime),
``onnx_to_torch`` (ONNX -> differentiable PyTorch with the F/H split).
"""

from securegaze.bundle.export import export_bundle
from securegaze.bundle.loading import PROVIDER_ALIASES, Bundle, load_bundle, verify_bundle
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
from securegaze.io import sha256_file

__all__ = [
    "BINNED_OUTPUT_NAMES", "DIRECT_OUTPUT_NAMES", "EXPORT_OPSET", "INPUT_NAME", "MANIFEST_NAME", "MATCH_ATOL",
    "ONNX_NAME", "PROVIDER_ALIASES", "BinsSpec", "Bundle", "BundleManifest", "ConvertedGazeModel", "FeatureSplit",
    "InputSpec", "OutputSpec", "Provenance", "export_bundle", "load_bundle", "sha256_file", "verify_bundle",
]
