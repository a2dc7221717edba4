"""Gaze geometry: the one place where the project's conventions are written down.

Convention (the MPIIGaze / ETH-XGaze one):

* A gaze is a pair ``(pitch, yaw)`` in **radians**, in that order, in the **normalised camera
  frame** (the frame of the virtual camera that looks straight at the face; see docs/architecture.md section 2).
* The camera frame has x to the right of the image, y down, z forward (away from the camera).
* The unit gaze vector, pointing from the eye into the scene, is::

      g = (-cos(pitch) * sin(yaw), -sin(pitch), -cos(pitch) * cos(yaw))

  so ``(0, 0)`` looks straight into the camera (g = (0, 0, -1)), positive pitch looks up and
  positive yaw looks towards the image's left (the subject's right).

All functions are vectorised over leading batch dimensions and exist in a NumPy form; the
``*_torch`` twins are differentiable and used inside losses.
"""

from __future__ import annotations

import numpy as np

try:  # torch is a hard dependency of the library, but geometry stays importable without it
    import torch
except ImportError:  # pragma: no cover - exercised only in stripped-down installs
    torch = None

CONVENTION = (
    "(pitch, yaw) in radians, normalised camera frame (x right, y down, z forward); "
    "vector = (-cos p sin y, -sin p, -cos p cos y)"
)

#: Gaze range of the synthetic data and of attack targets, radians (pitch, yaw).
PITCH_RANGE = (-np.deg2rad(30.0), np.deg2rad(30.0))
YAW_RANGE = (-np.deg2rad(40.0), np.deg2rad(40.0))


def pitchyaw_to_vector(pitchyaw: np.ndarray) -> np.ndarray:
    """(..., 2) radians -> (..., 3) unit vectors."""
    py = np.asarray(pitchyaw, dtype=np.float64)
    p, y = py[..., 0], py[..., 1]
    return np.stack([-np.cos(p) * np.sin(y), -np.sin(p), -np.cos(p) * np.cos(y)], axis=-1)


def vector_to_pitchyaw(vector: np.ndarray) -> np.ndarray:
    """(..., 3) vectors (any length > 0) -> (..., 2) radians. Inverse of :func:`pitchyaw_to_vector`."""
    v = np.asarray(vector, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    pitch = np.arcsin(np.clip(-v[..., 1], -1.0, 1.0))
    yaw = np.arctan2(-v[..., 0], -v[..., 2])
    return np.stack([pitch, yaw], axis=-1)


def angular_error_deg(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Angle in degrees between gaze directions given as (..., 2) pitch/yaw radians."""
    return angle_between_vectors_deg(pitchyaw_to_vector(pred), pitchyaw_to_vector(true))


def angle_between_vectors_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between (..., 3) vectors (need not be unit length)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    # atan2 of |a x b| and a.b is accurate near 0 and 180 degrees, unlike arccos of the dot product.
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def rotation_x(angle: np.ndarray) -> np.ndarray:
    """(...,) radians -> (..., 3, 3) rotation about the x axis (right-handed)."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rotation_y(angle: np.ndarray) -> np.ndarray:
    """(...,) radians -> (..., 3, 3) rotation about the y axis (right-handed)."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rotation_z(angle: np.ndarray) -> np.ndarray:
    """(...,) radians -> (..., 3, 3) rotation about the z axis (right-handed)."""
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def pitchyaw_to_rotation(pitchyaw: np.ndarray) -> np.ndarray:
    """Rotation that turns the straight-ahead direction (0, 0, -1) into the given gaze.

    (..., 2) radians -> (..., 3, 3). ``R @ (0, 0, -1) == pitchyaw_to_vector(pitchyaw)``. Used for
    head poses expressed as (pitch, yaw) in the same convention as gaze.
    """
    py = np.asarray(pitchyaw, dtype=np.float64)
    # Yaw about the camera's y axis after pitch about x: -y sign because y points down.
    return rotation_y(py[..., 1]) @ rotation_x(-py[..., 0])


def rotate_gaze(rotation: np.ndarray, pitchyaw: np.ndarray) -> np.ndarray:
    """Express a gaze in another frame: (..., 3, 3) rotation applied to (..., 2) radians."""
    v = pitchyaw_to_vector(pitchyaw)
    return vector_to_pitchyaw(np.einsum("...ij,...j->...i", rotation, v))


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


# --- differentiable twins -------------------------------------------------------------------


def pitchyaw_to_vector_torch(pitchyaw: "torch.Tensor") -> "torch.Tensor":
    """(..., 2) radians -> (..., 3) unit vectors, differentiable."""
    p, y = pitchyaw[..., 0], pitchyaw[..., 1]
    return torch.stack([-torch.cos(p) * torch.sin(y), -torch.sin(p), -torch.cos(p) * torch.cos(y)], dim=-1)


def angular_error_deg_torch(pred: "torch.Tensor", true: "torch.Tensor") -> "torch.Tensor":
    """Angle in degrees between (..., 2) pitch/yaw radian tensors, differentiable away from 0."""
    a = pitchyaw_to_vector_torch(pred)
    b = pitchyaw_to_vector_torch(true)
    cross = torch.linalg.norm(torch.cross(a, b, dim=-1), dim=-1)
    dot = (a * b).sum(-1)
    return torch.rad2deg(torch.atan2(cross, dot))
