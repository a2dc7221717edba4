"""Evaluate a model file (bundle, ONNX or safetensors weights) on a gaze dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from securegaze.data.base import ArrayGazeDataset
from securegaze.geometry import angular_error_deg


def error_summary(pred: np.ndarray, true: np.ndarray) -> dict:
    """Angular-error statistics in degrees for (N, 2) radian predictions and labels."""
    err = angular_error_deg(pred, true)
    return {
        "mean_deg": float(err.mean()),
        "median_deg": float(np.median(err)),
        "p95_deg": float(np.percentile(err, 95)),
        "count": int(len(err)),
    }


def evaluate_model_file(path: str | Path, load_data: Callable[[int], ArrayGazeDataset]) -> dict:
    """Run a model file on ``load_data(input_size)``; bundles and ONNX files run in ONNX Runtime.

    Returns a dict with the error statistics, the engine used and the input size.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from securegaze.io import load_weights
        from securegaze.training import predict

        model = load_weights(path)
        data = load_data(model.input_size)
        pred = predict(model, data.images)
        engine, size = "PyTorch", model.input_size
    else:
        from securegaze.bundle import load_bundle

        bundle = load_bundle(path)
        data = load_data(bundle.input_size)
        pred = bundle.predict(data.images)
        engine, size = f"ONNX Runtime ({bundle.providers[0]})", bundle.input_size
    result = error_summary(pred, data.gaze)
    result.update(model=str(path), engine=engine, input_size=int(size))
    return result
