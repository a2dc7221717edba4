"""The statistics SecureGaze's two constraints compare: output dispersion and feature-angle variance."""

from __future__ import annotations

import numpy as np
import torch

from securegaze.errors import ModelFormatError
from securegaze.geometry import angular_error_deg, pitchyaw_to_vector_torch, vector_to_pitchyaw
from securegaze.models.feature_geometry import feature_angle_variance, feature_angles

__all__ = ["check_finite_gaze", "feature_angle_variance", "feature_angles", "gaze_dispersion_deg",
           "gaze_trace_covariance", "mean_gaze"]


def gaze_trace_covariance(gaze: torch.Tensor) -> torch.Tensor:
    """Trace of the covariance of the unit gaze vectors, 1 - |mean vector|^2; (N, 2) radians -> scalar.

    About the mean squared angle (rad^2) to the mean gaze for small spreads; smooth everywhere,
    unlike an arccos, so it is what the optimiser sees.
    """
    vectors = pitchyaw_to_vector_torch(gaze)
    return (vectors - vectors.mean(0, keepdim=True)).pow(2).sum(-1).mean()


def mean_gaze(gaze: np.ndarray) -> np.ndarray:
    """(N, 2) radians -> (2,) radians: the direction of the mean unit gaze vector."""
    vectors = pitchyaw_to_vector_torch(torch.as_tensor(gaze, dtype=torch.float64)).numpy()
    return vector_to_pitchyaw(vectors.mean(0))


def gaze_dispersion_deg(gaze: np.ndarray) -> float:
    """Mean angle, degrees, between each (N, 2) radian prediction and the batch's mean gaze."""
    return float(angular_error_deg(gaze, np.broadcast_to(mean_gaze(gaze), np.shape(gaze))).mean())




def check_finite_gaze(gaze: torch.Tensor, what: str) -> None:
    if not torch.isfinite(gaze).all():
        bad = int((~torch.isfinite(gaze)).any(dim=1).sum())
        raise ModelFormatError(
            f"securegaze: the model produced NaN or inf gaze for {bad} of {len(gaze)} {what}; the model is broken "
            "or its input convention (RGB in [0, 1]) does not match the images"
        )
