"""Head pose from face landmarks: solvePnP against a generic 3-D face, and the camera intrinsics.

Frames and units (the project's camera frame, :mod:`securegaze.geometry`): x right, y down, z
forward from the camera; lengths in **millimetres**; a head pose maps head-model points to the
camera as ``X_cam = R @ X_model + t``. The head model's axes are those of the camera for a face
looking straight into it (x to the image's right, y down, z into the head), so a frontal face
has ``R = I`` and its nose tip has a negative model z.

Intrinsics come from a calibration YAML (``calibration/camera_example.yaml`` shows the format)
or, without one, from the usual approximation for an uncalibrated webcam: focal length = frame
width in pixels (a horizontal field of view of about 53 degrees), principal point at the frame
centre, no lens distortion. The approximation only sets the scale of the distance estimate and
the direction of the face-centre ray; the normalisation (Zhang et al. 2018) tolerates it well
because a wrong focal length mostly rescales the estimated distance.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from securegaze.errors import ConfigError
from securegaze.io import read_yaml

#: MediaPipe Face Mesh indices of the points used for the pose, and their place on a generic
#: adult face in millimetres (head-model frame above; origin between the inner eye corners).
#: Rounded averages of adult facial anthropometry: intercanthal width ~30 mm, biocular (outer
#: corner) width ~90 mm, so the eye centres are ~61 mm apart (interpupillary distance 60-65 mm);
#: eye line to mouth ~70 mm, to the nose tip ~45 mm, to the chin ~115 mm; the nose tip stands
#: ~25 mm in front of the inner eye corners, the outer eye corners lie ~10 mm behind them.
#: "Right"/"left" are the subject's: the subject's right eye appears on the image's left.
GENERIC_FACE_MM: dict[int, tuple[float, float, float]] = {
    33: (-45.0, -1.0, 10.0),  # right eye, outer corner
    133: (-15.0, 0.0, 0.0),  # right eye, inner corner
    362: (15.0, 0.0, 0.0),  # left eye, inner corner
    263: (45.0, -1.0, 10.0),  # left eye, outer corner
    1: (0.0, 45.0, -25.0),  # nose tip
    61: (-25.0, 70.0, 2.0),  # mouth, right corner
    291: (25.0, 70.0, 2.0),  # mouth, left corner
    152: (0.0, 115.0, 5.0),  # chin (menton)
}
POSE_LANDMARKS = np.array(list(GENERIC_FACE_MM), dtype=np.int64)
POSE_MODEL_MM = np.array(list(GENERIC_FACE_MM.values()), dtype=np.float64)
#: The face centre of the normalisation (Zhang et al. 2018): the mean of the four eye corners and
#: the two mouth corners of the model, head-model millimetres.
FACE_CENTRE_LANDMARKS = (33, 133, 362, 263, 61, 291)
FACE_CENTRE_MM = POSE_MODEL_MM[[list(GENERIC_FACE_MM).index(i) for i in FACE_CENTRE_LANDMARKS]].mean(axis=0)


@dataclass(frozen=True)
class CameraIntrinsics:
    """A pinhole camera: focal lengths and principal point in pixels, for ``width`` x ``height`` frames.

    ``distortion``: OpenCV's (k1, k2, p1, p2[, k3]) coefficients, zeros when unknown.
    ``source``: where the numbers came from (a file path, or "approximation").
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    source: str = "approximation"

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) float64 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_coeffs(self) -> np.ndarray:
        return np.asarray(self.distortion, dtype=np.float64)

    @staticmethod
    def approximate(width: int, height: int) -> CameraIntrinsics:
        """The uncalibrated-webcam approximation: focal = frame width (px), centre = frame centre."""
        if width <= 0 or height <= 0:
            raise ConfigError(f"frame size must be positive, got {width}x{height}")
        return CameraIntrinsics(float(width), float(width), width / 2.0, height / 2.0, int(width), int(height))

    def for_frame(self, width: int, height: int) -> CameraIntrinsics:
        """These intrinsics for frames of another resolution (scaled; same aspect ratio expected)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        if abs(sx - sy) > 0.01 * max(sx, sy):
            raise ConfigError(
                f"camera calibration {self.source} is for {self.width}x{self.height} frames; the source gives "
                f"{width}x{height}, a different aspect ratio: calibrate at this resolution"
            )
        return CameraIntrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, int(width), int(height),
                                self.distortion, self.source)

    @staticmethod
    def from_yaml(path: str | os.PathLike) -> CameraIntrinsics:
        """Read ``image_width``, ``image_height``, ``camera_matrix`` (3x3 rows) and optional
        ``distortion_coefficients`` (4, 5 or 8 numbers) from a YAML file."""
        path = Path(path)
        data = read_yaml(path, "camera calibration")
        expected = ("image_width, image_height, camera_matrix (3 rows of 3 numbers) and optionally "
                    "distortion_coefficients")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with {expected}")
        unknown = sorted(set(data) - {"image_width", "image_height", "camera_matrix", "distortion_coefficients",
                                      "notes"})
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {expected}")
        try:
            width, height = int(data["image_width"]), int(data["image_height"])
            k = np.asarray(data["camera_matrix"], dtype=np.float64)
            dist = tuple(float(v) for v in data.get("distortion_coefficients") or (0.0,) * 5)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: bad or missing value ({exc}); expected {expected}") from None
        if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise ConfigError(f"{path}: camera_matrix must be 3x3 with positive focal lengths, got {k.tolist()}")
        if width <= 0 or height <= 0 or len(dist) not in (4, 5, 8):
            raise ConfigError(f"{path}: need positive image size and 4, 5 or 8 distortion coefficients")
        return CameraIntrinsics(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), width, height,
                                dist, str(path))


@dataclass(frozen=True)
class HeadPose:
    """Head pose in the camera frame: ``X_cam = rotation @ X_model + translation_mm``.

    ``face_centre_mm``: (3,) camera-frame position of the normalisation's face centre;
    ``reprojection_error_px``: RMS distance between the landmarks and the fitted model's projection.
    """

    rotation: np.ndarray  # (3, 3)
    translation_mm: np.ndarray  # (3,)
    face_centre_mm: np.ndarray  # (3,)
    reprojection_error_px: float

    def euler_deg(self) -> tuple[float, float, float]:
        """(pitch, yaw, roll) degrees in the gaze convention: the face's forward direction -z of the
        model, as a gaze (positive pitch: face turned up, positive yaw: to the image's left), and
        the roll of the head's x axis about the camera's view."""
        from securegaze.geometry import vector_to_pitchyaw

        forward = self.rotation @ np.array([0.0, 0.0, -1.0])
        pitch, yaw = np.degrees(vector_to_pitchyaw(forward))
        x_axis = self.rotation[:, 0]
        roll = math.degrees(math.atan2(x_axis[1], x_axis[0]))
        return float(pitch), float(yaw), roll


def estimate_head_pose(landmarks_px: np.ndarray, intrinsics: CameraIntrinsics) -> HeadPose:
    """Fit the generic face to 2-D landmarks.

    ``landmarks_px``: (478, 2) or (468, 2) MediaPipe Face Mesh points in pixels of the frame the
    intrinsics describe. Uses OpenCV's iterative PnP (Levenberg-Marquardt) started from EPnP;
    the model is non-planar, so the start is unique for faces in front of the camera.
    """
    pts = np.asarray(landmarks_px, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 468:
        raise ValueError(f"expected (>=468, 2) Face Mesh landmarks in pixels, got shape {pts.shape}")
    image_points = np.ascontiguousarray(pts[POSE_LANDMARKS])
    k, dist = intrinsics.matrix, intrinsics.dist_coeffs
    ok, rvec, tvec = cv2.solvePnP(POSE_MODEL_MM, image_points, k, dist, flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(POSE_MODEL_MM, image_points, k, dist, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:
        # EPnP can land behind the camera on degenerate landmark sets; a frontal start fixes that.
        rvec = np.zeros((3, 1))
        tvec = np.array([[0.0], [0.0], [intrinsics.fx * 150.0 / max(np.ptp(image_points[:, 0]), 1.0)]])
        ok, rvec, tvec = cv2.solvePnP(POSE_MODEL_MM, image_points, k, dist, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    rotation, _ = cv2.Rodrigues(rvec)
    translation = tvec.reshape(3)
    projected, _ = cv2.projectPoints(POSE_MODEL_MM, rvec, tvec, k, dist)
    rms = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points) ** 2, axis=1))))
    centre = rotation @ FACE_CENTRE_MM + translation
    return HeadPose(rotation, translation, centre, rms)
