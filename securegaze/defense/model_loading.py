"""Read any model file the scanner accepts as a G = H o F PyTorch module.

* a model bundle (directory, its ``manifest.json``) or a bare ``.onnx`` file: converted to PyTorch
  with onnx2torch by :meth:`securegaze.bundle.Bundle.to_torch`, which finds the F/H split (or reads it
  from the manifest's ``feature_split`` and says how to declare it when it cannot);
* ``.safetensors`` weights written by :func:`securegaze.io.save_weights`;
* a training checkpoint ``.pt`` written by :func:`securegaze.training.train`, read with
  ``weights_only=True`` (never unpickled).

Every failure is one :class:`~securegaze.errors.SecureGazeError` line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from securegaze.errors import InputFileError, ModelFormatError

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_ACCEPTED = "a bundle directory, a manifest .json, an .onnx file, .safetensors weights or a training checkpoint .pt"


def load_model_any(path: str | os.PathLike) -> nn.Module:
    """The model at ``path`` in eval mode, with ``features``, ``head``, ``head_weight`` and ``input_size``."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist; expected {_ACCEPTED}")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".json", ".onnx"):
        from securegaze.bundle import load_bundle

        model = load_bundle(path).to_torch()
    elif suffix == ".safetensors":
        from securegaze.io import load_weights

        model = load_weights(path)
    elif suffix in _CHECKPOINT_SUFFIXES:
        model = _from_checkpoint(path)
    else:
        raise InputFileError(f"{path} has an unknown model file type {suffix or '(none)'!r}; expected {_ACCEPTED}")
    return model.eval()


def _from_checkpoint(path: Path) -> nn.Module:
    from securegaze.models import model_from_config
    from securegaze.training import load_checkpoint

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


def model_file_sha256(path: str | os.PathLike) -> str:
    """The sha256 the audit records key on: of the ONNX file for a bundle, else of the file itself."""
    from securegaze.bundle import MANIFEST_NAME, ONNX_NAME
    from securegaze.io import read_json, sha256_file

    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if path.suffix.lower() == ".json":
        manifest = read_json(path, "bundle manifest")
        onnx_name = manifest.get("onnx_file", ONNX_NAME) if isinstance(manifest, dict) else ONNX_NAME
        path = path.parent / onnx_name
    if not path.is_file():
        raise InputFileError(f"{path}: model file not found")
    return sha256_file(path)
