"""The statistics SecureGaze's two constraints compare: output dispersion and feature-angle variance."""

from __future__ import annotations

import math

import numpy as np
import torch

from securegaze.errors import ModelFormatError
from securegaze.geometry import angular_error_deg, pitchyaw_to_vector_torch, vector_to_pitchyaw
from securegaze.models.feature_geometry import feature_angle_variance, feature_angles

__all__ = ["check_finite_gaze", "collapse_spread", "feature_angle_variance", "feature_angles",
           "gaze_dispersion_deg", "gaze_trace_covariance", "mean_gaze", "shift_spread", "clean_axis_offset"]

#: Rounds of re-centring of :func:`collapse_spread` (mean of all, then the mean of the kept share).
_RECENTRE_ROUNDS = 2


def gaze_trace_covariance(gaze: torch.Tensor) -> torch.Tensor:
    """Trace of the covariance of the unit gaze vectors, 1 - |mean vector|^2; (N, 2) radians -> scalar.

    About the mean squared angle (rad^2) to the mean gaze for small spreads; smooth everywhere,
    unlike an arccos, so it is what the optimiser sees.
    """
    vectors = pitchyaw_to_vector_torch(gaze)
    return (vectors - vectors.mean(0, keepdim=True)).pow(2).sum(-1).mean()


def collapse_spread(gaze: torch.Tensor, share: float,
                    centre: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Trimmed spread of (N, 2) radian gazes: (scalar, indices of the kept images).

    The ``ceil(share * N)`` unit gaze vectors closest to a centre are kept, and the spread is their
    mean squared distance to it (about the mean squared angle, rad^2, for small spreads). Unlike the
    trace of the whole covariance (:func:`gaze_trace_covariance`), the images left out cannot
    dominate it: a backdoor that sends 70% of its inputs to the target and leaves the rest where they
    were has a near-zero spread at ``share`` 0.5, where its RMS dispersion is still a third of the
    clean one. ``centre`` None: the centre is the mean of all vectors, then (twice) the mean of the
    kept ones, so it settles on the densest cluster; a given (2,) radian centre is used as is (the
    reference collapse onto a prescribed gaze). Differentiable in the kept gazes (the selection itself
    is not, as with any trimmed statistic).
    """
    vectors = pitchyaw_to_vector_torch(gaze)

    def closest(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _trimmed_mean((vectors - point).pow(2).sum(-1), share)

    if centre is not None:
        fixed = pitchyaw_to_vector_torch(torch.as_tensor(centre, dtype=gaze.dtype, device=gaze.device).view(1, 2))
        return closest(fixed[0])
    point = vectors.mean(0)
    for _ in range(_RECENTRE_ROUNDS):
        _, kept = closest(point.detach())
        point = vectors[kept].mean(0)
    return closest(point)


def shift_spread(gaze: torch.Tensor, wanted: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Trimmed distance of (N, 2) radian gazes to per-image wanted gazes: (scalar, kept indices).

    The mean squared unit-vector distance between each output and its own wanted gaze, over the
    ``ceil(share * N)`` images closest to theirs (the same trimming and units as
    :func:`collapse_spread`, so the two compare with the same clean spread). A uniform shift asks for
    ``wanted`` = clean output + one offset: the outputs stay as spread as the clean ones, so no
    collapse, however cheap, can meet it.
    """
    return _trimmed_mean((pitchyaw_to_vector_torch(gaze) - pitchyaw_to_vector_torch(wanted)).pow(2).sum(-1), share)


def _trimmed_mean(distance: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the ``ceil(share * N)`` smallest of (N,) squared distances (at least 2), and their
    indices: the trimming both spreads share. The selection is not differentiated."""
    keep = min(len(distance), max(2, math.ceil(share * len(distance))))
    kept = torch.topk(distance.detach(), keep, largest=False).indices
    return distance[kept].mean(), kept


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


def clean_axis_offset(clean_gaze: np.ndarray, distance: float) -> tuple[float, float]:
    """The shift reference's offset (pitch, yaw) radians, ``distance`` long, from the clean gazes alone.

    It points along the main axis of the (N, 2) clean gazes (the first principal direction of their
    pitch-yaw covariance), towards the side where they reach further from their median (the 98th
    against the 2nd percentile of the projections): a redirection the model already gives ordinary
    faces. A tie (a symmetric spread) points to the positive side of the axis, whose sign is fixed
    by its largest component being positive, so the offset does not hang on an eigen-solver's sign.
    """
    gaze = np.asarray(clean_gaze, np.float64)
    _, vectors = np.linalg.eigh(np.cov(gaze, rowvar=False))
    axis = vectors[:, -1]
    axis = axis if axis[np.argmax(np.abs(axis))] > 0 else -axis
    along = gaze @ axis
    low, middle, high = np.percentile(along, [2.0, 50.0, 98.0])
    sign = -1.0 if middle - low > high - middle else 1.0
    return float(sign * distance * axis[0]), float(sign * distance * axis[1])
