"""Evaluate a model file (bundle, ONNX or safetensors weights) on a gaze dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from securegaze.bundle.loading import open_model
from securegaze.data.base import ArrayGazeDataset, require_labels
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

    Returns a dict with the error statistics, the engine used and the input size. Unlabelled data
    (a plain image folder) is refused in one line: the error needs the true gaze.
    """
    path = Path(path)
    predictor = open_model(path).predictor()
    data = load_data(predictor.input_size)
    require_labels(data, "securegaze evaluate")
    pred = predictor.predict(data.images)
    result = error_summary(pred, data.gaze)
    result.update(model=str(path), engine=predictor.engine, input_size=int(predictor.input_size))
    return result
