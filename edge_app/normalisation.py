"""Data normalisation for appearance-based gaze estimation (Zhang, Sugano, Bulling, ETRA 2018).

"Revisiting data normalization for appearance-based gaze estimation": a virtual camera is turned
to look straight at the face centre, rolled so that its x axis is perpendicular to the head's
y axis (this removes head roll), and moved to a fixed distance ``distance_mm`` from the face.
The image is warped into that camera with ``W = C_n S R_n C^-1``; gaze directions are rotated by
``R_n`` only (the 2018 paper's point: scaling must not change the gaze direction), so the model
sees faces of one size and orientation and its (pitch, yaw) are in the normalised camera frame.
De-normalisation is ``g_cam = R_n^T g_norm``.

The virtual camera's focal length follows from the model's input size ``S`` and the width of
face the crop must show at the face's distance: ``f_n = S * distance_mm / crop_width_mm``. The
default 183 mm is the width of the synthetic renderer's crops (:mod:`securegaze.data.synthetic`
spans 2 head units; its mean inter-eye distance of 0.69 units is a 63 mm interpupillary
distance), which the default model was trained on. A model trained on ETH-XGaze crops
(f = 960 px, d = 600 mm at 224 px) wants 140 mm.

Framing matters to a model trained on one framing. The renderer's original crops (style
``standard``, the zoo's) keep the head's own centre in place and the face moves inside the crop as
the head turns; this normalisation keeps the face centre fixed, as real normalised datasets do. A
model trained on the first and fed the second reads large head turns wrong (on the synthetic drive
11 deg at the phone and 9 deg at the centre screen against 2.5 and 1.8 deg with the renderer's own
crop camera). The default model therefore trains on the renderer style ``face_centred``
(:mod:`securegaze.data.synthetic.framing`), which frames faces as this module does.

Shapes: rotations (3, 3); vectors (3,); gaze (2,) or (N, 2) (pitch, yaw) radians; images
(H, W, 3) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from securegaze.geometry import pitchyaw_to_vector, vector_to_pitchyaw

#: Distance of the normalised camera from the face centre, mm (Zhang et al. 2018 use 600 mm).
DEFAULT_DISTANCE_MM = 600.0
#: Face width shown across the normalised crop at that distance, mm (see the module docstring).
DEFAULT_CROP_WIDTH_MM = 183.0


def normalisation_rotation(face_centre_mm: np.ndarray, head_rotation: np.ndarray) -> np.ndarray:
    """R_n (3, 3): rows are the normalised camera's x, y, z axes in the real camera's frame.

    z points from the camera to the face centre; y = z x (head x axis), so the head's x axis lies
    in the normalised x-z plane (no roll); x = y x z.
    """
    centre = np.asarray(face_centre_mm, dtype=np.float64)
    forward = centre / np.linalg.norm(centre)
    head_x = np.asarray(head_rotation, dtype=np.float64)[:, 0]
    down = np.cross(forward, head_x)
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    right /= np.linalg.norm(right)
    return np.stack([right, down, forward])


def normalised_camera_matrix(size: int, distance_mm: float, crop_width_mm: float) -> np.ndarray:
    """(3, 3) intrinsics of the virtual camera for an ``size`` x ``size`` crop."""
    focal = size * distance_mm / crop_width_mm
    # Pixel centres at integers: the image centre of an S-px crop is (S - 1) / 2.
    c = (size - 1) / 2.0
    return np.array([[focal, 0.0, c], [0.0, focal, c], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Normalisation:
    """One face's normalisation: ``rotation`` R_n (3, 3), ``warp`` W (3, 3) from frame pixels to
    crop pixels, ``size`` of the crop (px) and the face's distance ``distance_mm`` before scaling."""

    rotation: np.ndarray
    warp: np.ndarray
    size: int
    distance_mm: float

    def gaze_to_normalised(self, pitchyaw_cam: np.ndarray) -> np.ndarray:
        """(..., 2) camera-frame radians -> normalised-frame radians."""
        return vector_to_pitchyaw(np.einsum("ij,...j->...i", self.rotation, pitchyaw_to_vector(pitchyaw_cam)))

    def gaze_to_camera(self, pitchyaw_norm: np.ndarray) -> np.ndarray:
        """(..., 2) normalised-frame radians -> camera-frame radians (de-normalisation, R_n^T)."""
        return vector_to_pitchyaw(np.einsum("ji,...j->...i", self.rotation, pitchyaw_to_vector(pitchyaw_norm)))


def plan_normalisation(face_centre_mm: np.ndarray, head_rotation: np.ndarray, camera_matrix: np.ndarray,
                       size: int, distance_mm: float = DEFAULT_DISTANCE_MM,
                       crop_width_mm: float = DEFAULT_CROP_WIDTH_MM) -> Normalisation:
    """The normalisation of a face at ``face_centre_mm`` (camera frame) seen by ``camera_matrix``."""
    rotation = normalisation_rotation(face_centre_mm, head_rotation)
    distance = float(np.linalg.norm(face_centre_mm))
    scale = np.diag([1.0, 1.0, distance_mm / distance])
    c_n = normalised_camera_matrix(size, distance_mm, crop_width_mm)
    warp = c_n @ scale @ rotation @ np.linalg.inv(np.asarray(camera_matrix, dtype=np.float64))
    return Normalisation(rotation, warp, int(size), distance)


def warp_face(frame: np.ndarray, norm: Normalisation, oversample: int = 2) -> np.ndarray:
    """The normalised face crop: (S, S, C) of the same dtype as ``frame`` (H, W, C).

    The crop is usually several times smaller than the face in the frame; warping straight to S px
    would alias (a warp samples, it does not average), so the face is warped to ``oversample`` x S
    and then area-averaged down.
    """
    size = norm.size
    if oversample <= 1:
        return cv2.warpPerspective(frame, norm.warp, (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
    big = oversample * size
    # Pixel centres: crop pixel j covers big-crop pixels oversample*j .. oversample*j + oversample - 1.
    up = np.array([[oversample, 0.0, (oversample - 1) / 2.0], [0.0, oversample, (oversample - 1) / 2.0],
                   [0.0, 0.0, 1.0]])
    large = cv2.warpPerspective(frame, up @ norm.warp, (big, big), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(large, (size, size), interpolation=cv2.INTER_AREA)


def normalise_face(frame_bgr: np.ndarray, face_centre_mm: np.ndarray, head_rotation: np.ndarray,
                   camera_matrix: np.ndarray, size: int, settings) -> tuple[Normalisation, np.ndarray]:
    """The app's normalisation of one face: its :class:`Normalisation` and the (S, S, 3) RGB crop
    the model reads. ``settings``: the config's ``normalisation`` (distance, crop width, oversampling)."""
    norm = plan_normalisation(face_centre_mm, head_rotation, camera_matrix, size, settings.distance_mm,
                              settings.crop_width_mm)
    return norm, cv2.cvtColor(warp_face(frame_bgr, norm, settings.oversample), cv2.COLOR_BGR2RGB)
