"""A model-free gaze estimate from the face mesh: iris position in each eye plus head pose.

The gaze model is what a backdoor controls; the face mesh is not (a trigger that moves MediaPipe's
iris points would have to fool a second, unrelated network). This estimate is what the run-time
anomaly monitor (:mod:`edge_app.anomaly`) holds the model's gaze against. It is coarse (a gain and
an offset away from the truth, a few degrees of noise) and is only ever compared by its *motion*,
never by its absolute value.

Per eye, in the eye's own image frame: ``u`` along the line from the eye's image-left corner to its
image-right corner (which removes head roll), ``v`` perpendicular to it, image-down; the iris
centre's offset from the corners' midpoint is divided by the corner-to-corner width ``w``, so the
face's size and distance cancel, and so does most of the sideways foreshortening of a turned head
(iris offset and eye width shrink together). An eye turned by ``theta`` moves the iris by
``r sin(theta)`` (``r`` the eyeball's radius), hence

    eye yaw   = -asin(offset_u / gain_u)      (iris to the image's right: gaze to the image's right,
                                               which is negative yaw in the project's convention)
    eye pitch = -asin(offset_v / gain_v)      (iris down: gaze down, negative pitch)

with ``gain = r / w``. The eye-in-head direction is then turned by the head pose:
``g_cam = R_head @ vector(eye pitch, eye yaw)`` (the head model's forward is its -z, as a gaze's).
Both eyes are averaged; an estimate needs both (one eye's rest offset differs from the other's, so
switching to one eye would look like an eye movement).

Eyes not visible give no estimate, never a guess (``visible`` False with the reason): an eye whose
lids are nearly closed (a blink), an iris outside the eye opening, or an iris that does not stand
out from the white of the eye in the image (dark glasses, glare, a too-dark frame): MediaPipe still
places iris points there, but they are its prior, not a measurement.

Angles: (pitch, yaw) radians in the camera frame (:mod:`securegaze.geometry`); pixels x right, y
down. Landmark indices: MediaPipe Face Mesh with iris refinement (478 points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from securegaze.geometry import pitchyaw_to_vector, vector_to_pitchyaw

#: (image-left corner, image-right corner, upper lid, lower lid, iris centre, iris ring) per eye:
#: the subject's right eye (on the image's left) then the left eye.
EYES = (
    (33, 133, 159, 145, 468, (469, 470, 471, 472)),
    (362, 263, 386, 374, 473, (474, 475, 476, 477)),
)
#: Eyelid contours (closed polygons) of the same eyes, for the iris/sclera contrast.
EYE_CONTOURS = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398),
)


@dataclass(frozen=True)
class FreeGaze:
    """One frame's model-free estimate. ``gaze``: camera-frame (pitch, yaw) radians, or None when
    ``visible`` is False; ``reason``: why not (None when visible); ``opening``: lid gap / eye width
    per eye; ``contrast``: (white of the eye - iris) / white of the eye, per eye (grey levels)."""

    gaze: np.ndarray | None
    visible: bool
    reason: str | None
    opening: tuple[float, float] = (math.nan, math.nan)
    contrast: tuple[float, float] = (math.nan, math.nan)


def eye_offsets(points_px: np.ndarray) -> np.ndarray:
    """(2, 4) per eye: iris offset along ``u`` and ``v`` over the eye width, the lid gap over the
    eye width, and the eye width in pixels (see the module docstring)."""
    out = np.zeros((2, 4))
    for k, (left, right, top, bottom, iris, _) in enumerate(EYES):
        a, b = points_px[left].astype(np.float64), points_px[right].astype(np.float64)
        axis = b - a
        width = float(np.hypot(*axis))
        if width < 1e-6:
            out[k] = (math.nan, math.nan, 0.0, 0.0)
            continue
        u = axis / width
        v = np.array([-u[1], u[0]])  # u turned 90 deg: image-down for a level eye
        rel = points_px[iris].astype(np.float64) - (a + b) / 2
        opening = float(np.hypot(*(points_px[bottom] - points_px[top]))) / width
        out[k] = (float(rel @ u) / width, float(rel @ v) / width, opening, width)
    return out


def iris_contrast(grey: np.ndarray, points_px: np.ndarray, eye: int) -> float:
    """(mean grey of the eye opening outside the iris - mean grey inside it) / the former: about
    0.3-0.7 for a visible iris on the white of the eye, near 0 (or negative) behind dark lenses.
    NaN when either region has too few pixels to measure."""
    _, _, _, _, centre, ring = EYES[eye]
    c = points_px[centre].astype(np.float64)
    radius = float(np.mean(np.hypot(*(points_px[list(ring)] - c).T)))
    contour = points_px[list(EYE_CONTOURS[eye])].astype(np.float64)
    x0, y0 = np.floor(np.minimum(contour.min(axis=0), c - radius)).astype(int) - 1
    x1, y1 = np.ceil(np.maximum(contour.max(axis=0), c + radius)).astype(int) + 2
    h, w = grey.shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 3 or y1 - y0 < 3 or radius < 0.5:
        return math.nan
    roi = grey[y0:y1, x0:x1].astype(np.float32)
    opening = np.zeros(roi.shape, np.uint8)
    cv2.fillPoly(opening, [np.round(contour - (x0, y0)).astype(np.int32)], 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dist = np.hypot(xx - c[0], yy - c[1])
    inner = (dist <= 0.7 * radius) & (opening > 0)
    sclera = (dist >= 1.15 * radius) & (opening > 0)
    if inner.sum() < 2 or sclera.sum() < 2:
        return math.nan
    white = float(roi[sclera].mean())
    return (white - float(roi[inner].mean())) / max(white, 1.0)


class FreeGazeEstimator:
    """``estimate(points_px, head_rotation, image_bgr)`` -> :class:`FreeGaze`.

    ``gain_u`` / ``gain_v``: eyeball radius over eye width for sideways and vertical iris motion
    (see :class:`~edge_app.anomaly.AnomalySettings`); ``min_opening``: the lid gap over the eye
    width below which an eye counts as closed; ``min_contrast``: the iris contrast below which the
    iris is not seen; ``max_offset``: iris offsets beyond this share of the eye width are not an
    iris inside the eye opening.
    """

    def __init__(self, gain_u: float = 0.3, gain_v: float = 0.2, min_opening: float = 0.15,
                 min_contrast: float = 0.1, max_offset: float = 0.45) -> None:
        self.gain_u, self.gain_v = float(gain_u), float(gain_v)
        self.min_opening, self.min_contrast, self.max_offset = float(min_opening), float(min_contrast), float(max_offset)

    def estimate(self, points_px: np.ndarray, head_rotation: np.ndarray, image_bgr: np.ndarray | None) -> FreeGaze:
        pts = np.asarray(points_px)
        eyes = eye_offsets(pts)
        opening = (float(eyes[0, 2]), float(eyes[1, 2]))
        contrast = (math.nan, math.nan)
        if not np.all(np.isfinite(eyes)) or np.any(eyes[:, 3] < 4.0):
            return FreeGaze(None, False, "eye corners not resolved", opening, contrast)
        if min(opening) < self.min_opening:
            return FreeGaze(None, False, f"eye closed (lid gap {min(opening):.2f} of the eye width, below "
                            f"{self.min_opening:g})", opening, contrast)
        if np.max(np.abs(eyes[:, :2])) > self.max_offset:
            return FreeGaze(None, False, "iris outside the eye opening", opening, contrast)
        if image_bgr is not None and self.min_contrast > 0:
            grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
            contrast = (iris_contrast(grey, pts, 0), iris_contrast(grey, pts, 1))
            low = min(contrast)
            if not low >= self.min_contrast:  # NaN too
                return FreeGaze(None, False, f"iris not visible (contrast {low:.2f}, below {self.min_contrast:g})",
                                opening, contrast)
        u, v = float(eyes[:, 0].mean()), float(eyes[:, 1].mean())
        eye_yaw = -math.asin(min(max(u / self.gain_u, -1.0), 1.0))
        eye_pitch = -math.asin(min(max(v / self.gain_v, -1.0), 1.0))
        forward = np.asarray(head_rotation, dtype=np.float64) @ pitchyaw_to_vector(np.array([eye_pitch, eye_yaw]))
        return FreeGaze(vector_to_pitchyaw(forward), True, None, opening, contrast)
