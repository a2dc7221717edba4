"""Read any model file the scanner accepts as a G = H o F PyTorch module.

Thin wrappers over :func:`securegaze.bundle.open_model`, the one place a user's model file is
resolved: a bundle (directory, its ``manifest.json``) or an ``.onnx`` file converted to PyTorch and
checked against ONNX Runtime, ``.safetensors`` weights, or a training checkpoint ``.pt`` read with
``weights_only=True`` (never unpickled). Every failure is one
:class:`~securegaze.errors.SecureGazeError` line naming the file.
"""

from __future__ import annotations

import os

from torch import nn

from securegaze.bundle.loading import open_model


def load_model_any(path: str | os.PathLike) -> nn.Module:
    """The model at ``path`` in eval mode, with ``features``, ``head``, ``head_weight`` and ``input_size``."""
    return open_model(path).gaze_model()


def model_file_sha256(path: str | os.PathLike) -> str:
    """The sha256 the audit records key on: of the ONNX file for a bundle, else of the file itself."""
    return open_model(path).sha256()
