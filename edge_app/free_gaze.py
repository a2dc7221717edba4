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

Eyes not visible give no estimate, never a guess (``visible`` False with the reason and its
``kind``): an eye whose lids are nearly closed (a blink: kind ``closed``), and, kind ``unseen``, a
face too dark to see (``min_face_grey``), an iris outside the eye opening, or an iris that does not
stand out in the image in either eye (dark glasses, glare; one eye unseen is kind ``one_eye``):
MediaPipe still places iris points there, but they
are its prior, not a measurement. The eye-visibility monitor (:mod:`edge_app.eye_visibility`)
turns a run of ``unseen`` frames into "monitoring degraded: eyes not visible".

The iris test (:func:`iris_contrast`) is measured against the face's own brightness (the brightest
of a few skin patches, :func:`skin_grey`), not against the eye's: a lens darkens the iris and the
white of the eye alike, so their ratio survives dark glasses while their difference, next to the
skin the lens does not cover, does not. In a colour image the iris must be darker than the white
of the eye on its darker side (a lens reflection brightens one side or the iris itself, never
both sides evenly). A monochrome image is a near-infrared camera's: there the iris is light grey
and the white of the eye as bright as the skin (melanin does not absorb near infrared), the
visible cue is the pupil (bright or dark against the iris), and most sunglasses are clear; the
test then takes the largest of the pupil-iris and iris-white differences, with its own threshold
(``min_iris_contrast_mono``).

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


#: Skin patches for the face's brightness: forehead, between the brows, both cheeks, nose tip. The
#: brightest of their medians is used, so a brim's shadow, a mask or a lens over some is harmless.
SKIN_POINTS = (151, 9, 50, 280, 4)
#: Pixel radius of a skin patch, as a share of the mean eye width.
SKIN_PATCH = 0.15
#: The largest difference between colour channels (grey levels) over the face that still makes the
#: image monochrome (a near-infrared camera's; a colour camera's noise alone differs by more).
MONO_TOLERANCE = 2.0

VISIBLE, ONE_EYE, APART, CLOSED, UNSEEN = "visible", "one_eye", "apart", "closed", "unseen"


@dataclass(frozen=True)
class FreeGaze:
    """One frame's model-free estimate. ``gaze``: camera-frame (pitch, yaw) radians, or None when
    ``visible`` is False; ``reason``: why not (None when visible); ``kind``: ``visible``,
    ``one_eye`` (one iris seen: no estimate, which needs both, but the eyes are not hidden; a lens
    reflection over one eye), ``apart`` (both irises seen, but their points aim the eyes
    :func:`vergence_deg` apart, beyond ``max_vergence_deg``: at least one is not where the iris
    is; no estimate, the eyes not hidden), ``closed`` (a blink) or ``unseen`` (neither eye can be seen: too
    dark, dark lenses, glare);
    ``opening``: lid gap / eye width per eye; ``contrast``: the iris contrast per eye
    (:func:`iris_contrast`); ``mono``: the image was monochrome (a near-infrared camera);
    ``eyes_deg``: (2, 2) each eye's own eye-in-head (pitch, yaw) in degrees, image-left eye first,
    before averaging (None when not visible): their difference is the eyes' vergence, which the live
    trigger alarm watches for iris points that moved without the eyes."""

    gaze: np.ndarray | None
    visible: bool
    reason: str | None
    opening: tuple[float, float] = (math.nan, math.nan)
    contrast: tuple[float, float] = (math.nan, math.nan)
    kind: str = VISIBLE
    mono: bool = False
    eyes_deg: np.ndarray | None = None


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


def skin_level(image: np.ndarray, points_px: np.ndarray, radius_px: float) -> np.ndarray:
    """The face's brightness per channel of ``image`` ((H, W) or (H, W, C)): the median of each
    :data:`SKIN_POINTS` patch (squares of half-side ``radius_px``), from the patch whose mean over
    the channels is the largest; NaN when every patch lies outside the image."""
    img = image if image.ndim == 3 else image[:, :, None]
    h, w = img.shape[:2]
    r = max(int(round(radius_px)), 1)
    best, best_mean = np.full(img.shape[2], math.nan), -1.0
    for k in SKIN_POINTS:
        x, y = (int(round(float(v))) for v in points_px[k])
        patch = img[max(y - r, 0):max(min(y + r + 1, h), 0), max(x - r, 0):max(min(x + r + 1, w), 0)]
        if patch.size:
            m = np.median(patch.reshape(-1, img.shape[2]), axis=0).astype(np.float64)
            if float(m.mean()) > best_mean:
                best, best_mean = m, float(m.mean())
    return best


def face_box_pixels(image: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """The part of ``image`` inside the landmarks' bounding box (clipped to the image; may be empty)."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(points_px.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points_px.max(axis=0)).astype(int) + 1
    return image[max(y0, 0):max(min(y1, h), 0), max(x0, 0):max(min(x1, w), 0)]


def face_bright_level(image: np.ndarray, points_px: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """Per channel, the ``percentile`` of the levels inside the landmarks' bounding box."""
    img = image if image.ndim == 3 else image[:, :, None]
    roi = face_box_pixels(img, points_px)
    if roi.size == 0:
        return np.full(img.shape[2], math.nan)
    return np.percentile(roi.reshape(-1, img.shape[2])[::3], percentile, axis=0)


def _eye_regions(image: np.ndarray, points_px: np.ndarray, eye: int) -> np.ndarray:
    """(5, C) median levels per channel of ``image`` inside eye ``eye``'s lid contour: pupil
    (within 0.35 iris radii of the iris centre), iris ring (0.5-0.9 radii), the white of the eye
    (beyond 1.15 radii) on the image-left side of the iris, on its image-right side, and both; NaN
    rows for regions of fewer than two pixels."""
    img = image if image.ndim == 3 else image[:, :, None]
    out = np.full((5, img.shape[2]), math.nan)
    left, right, _, _, centre, ring = EYES[eye]
    c = points_px[centre].astype(np.float64)
    radius = float(np.mean(np.hypot(*(points_px[list(ring)] - c).T)))
    contour = points_px[list(EYE_CONTOURS[eye])].astype(np.float64)
    axis = points_px[right].astype(np.float64) - points_px[left]
    norm = float(np.hypot(*axis))
    if radius < 0.5 or norm < 1e-6:
        return out
    axis /= norm
    x0, y0 = np.floor(np.minimum(contour.min(axis=0), c - radius)).astype(int) - 1
    x1, y1 = np.ceil(np.maximum(contour.max(axis=0), c + radius)).astype(int) + 2
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return out
    roi = img[y0:y1, x0:x1].astype(np.float32)
    opening = np.zeros(roi.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(contour - (x0, y0)).astype(np.int32)], 1)
    inside = opening > 0
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dist = np.hypot(xx - c[0], yy - c[1])
    along = (xx - c[0]) * axis[0] + (yy - c[1]) * axis[1]
    sclera = (dist >= 1.15 * radius) & inside
    masks = ((dist <= 0.35 * radius) & inside, (dist > 0.5 * radius) & (dist <= 0.9 * radius) & inside,
             sclera & (along < 0), sclera & (along > 0), sclera)
    for k, mask in enumerate(masks):
        if mask.sum() >= 2:
            out[k] = np.median(roi[mask], axis=0)
    return out


def iris_contrast(image: np.ndarray, points_px: np.ndarray, eye: int, skin: np.ndarray, mono: bool = False) -> float:
    """How well the iris of eye ``eye`` stands out, as a share of the face's brightness ``skin``
    (:func:`skin_level`, per channel of ``image``). Colour image, per channel: (the darker side's
    white of the eye - the darker of iris ring and pupil) / skin, and the largest over the channels
    (a blue iris is as bright as the white of the eye in grey, not in red): 0.15-0.7 for an eye in
    daylight, 0.1-0.3 behind light sunglasses, about 0.01 behind dark ones. Monochrome image (one
    channel used): max(|pupil - iris ring|, |white - iris ring|) / skin. NaN when a region cannot
    be measured."""
    pupil, ring, side_a, side_b, white = _eye_regions(image, points_px, eye)
    skin = np.asarray(skin, np.float64)
    if mono:
        return float(max(abs(pupil[0] - ring[0]), abs(white[0] - ring[0])) / skin[0]) if skin[0] > 0 else math.nan
    side = np.fmin(side_a, side_b)  # the darker side where both are measured, else the one that is
    values = (side - np.fmin(ring, pupil)) / np.where(skin > 0, skin, math.nan)
    return float(np.nanmax(values)) if np.any(np.isfinite(values)) else math.nan


def is_monochrome(image_bgr: np.ndarray, points_px: np.ndarray) -> bool:
    """Whether the face is grey in all three channels (a near-infrared camera): the 99th percentile
    of the largest channel difference over the landmarks' bounding box is within
    :data:`MONO_TOLERANCE` (the whole face, not the eyes alone: dark lenses shrink every difference
    behind them)."""
    if image_bgr.ndim == 2 or image_bgr.shape[2] == 1:
        return True
    roi = face_box_pixels(image_bgr, points_px)
    if roi.size == 0:
        return False
    px = roi.reshape(-1, roi.shape[2])[::3].astype(np.int16)
    spread = px.max(axis=1) - px.min(axis=1)
    return float(np.percentile(spread, 99)) <= MONO_TOLERANCE


def vergence_deg(eyes_deg: np.ndarray) -> float:
    """How far apart the two eyes' own directions (``FreeGaze.eyes_deg``, eye in head) point,
    degrees: the length of their (pitch, yaw) difference. Eyes fixing one point in a car differ by
    their vergence (a few degrees) plus how the face mesh places the irises against the corners in
    this face (under ~35 deg on 99 % of the synthetic drivers' daylight frames); tens of degrees
    more is an iris point that is not on the iris (the face mesh's prior on a near-infrared image,
    a lid over the iris)."""
    d = np.asarray(eyes_deg, dtype=np.float64)
    return float(np.hypot(*(d[0] - d[1])))


class FreeGazeEstimator:
    """``estimate(points_px, head_rotation, image_bgr)`` -> :class:`FreeGaze`.

    ``gain_u`` / ``gain_v``: eyeball radius over eye width for sideways and vertical iris motion
    (see :class:`~edge_app.anomaly.AnomalySettings`); ``min_opening``: the lid gap over the eye
    width below which an eye counts as closed; ``min_contrast`` / ``min_contrast_mono``: the iris
    contrast (:func:`iris_contrast`) below which the iris is not seen, colour and monochrome
    images; ``min_face_grey``: the face's brightness (grey levels, 0-255) below which the frame is
    too dark to see the eyes; ``max_offset``: iris offsets beyond this share of the eye width are
    not an iris inside the eye opening; ``max_vergence_deg``: the two eyes' own directions
    (:func:`vergence_deg`) further apart than this are no estimate (kind ``apart``).
    """

    def __init__(self, gain_u: float = 0.3, gain_v: float = 0.2, min_opening: float = 0.15,
                 min_contrast: float = 0.12, max_offset: float = 0.45, min_contrast_mono: float = 0.015,
                 min_face_grey: float = 25.0, max_vergence_deg: float = 45.0) -> None:
        self.gain_u, self.gain_v = float(gain_u), float(gain_v)
        self.max_vergence_deg = float(max_vergence_deg)
        self.min_opening, self.min_contrast, self.max_offset = float(min_opening), float(min_contrast), float(max_offset)
        self.min_contrast_mono, self.min_face_grey = float(min_contrast_mono), float(min_face_grey)

    def estimate(self, points_px: np.ndarray, head_rotation: np.ndarray, image_bgr: np.ndarray | None) -> FreeGaze:
        pts = np.asarray(points_px)
        eyes = eye_offsets(pts)
        opening = (float(eyes[0, 2]), float(eyes[1, 2]))
        contrast = (math.nan, math.nan)
        if not np.all(np.isfinite(eyes)) or np.any(eyes[:, 3] < 4.0):
            return FreeGaze(None, False, "eye corners not resolved", opening, contrast, UNSEEN)
        mono = False
        if image_bgr is not None:
            mono = is_monochrome(image_bgr, pts)
            image = (image_bgr if image_bgr.ndim == 2 else image_bgr[:, :, 1]) if mono else image_bgr
            skin = skin_level(image, pts, SKIN_PATCH * float(eyes[:, 3].mean()))
            bright = face_bright_level(image, pts)
            level = np.fmax(skin, bright)
            face_grey = float(np.mean(skin))
            if self.min_face_grey > 0 and not face_grey >= self.min_face_grey:
                return FreeGaze(None, False, f"too dark (face level {face_grey:.0f}, below {self.min_face_grey:g})",
                                opening, contrast, UNSEEN, mono)
        if min(opening) < self.min_opening:
            return FreeGaze(None, False, f"eye closed (lid gap {min(opening):.2f} of the eye width, below "
                            f"{self.min_opening:g})", opening, contrast, CLOSED, mono)
        if np.max(np.abs(eyes[:, :2])) > self.max_offset:
            return FreeGaze(None, False, "iris outside the eye opening", opening, contrast, UNSEEN, mono)
        threshold = self.min_contrast_mono if mono else self.min_contrast
        if image_bgr is not None and threshold > 0:
            contrast = (iris_contrast(image, pts, 0, level, mono), iris_contrast(image, pts, 1, level, mono))
            seen = [c >= threshold for c in contrast]  # NaN: not seen
            if not all(seen):
                low = float(np.nanmax(contrast)) if not any(seen) and np.any(np.isfinite(contrast)) else min(contrast)
                which = "either eye" if not any(seen) else ("the image-left eye" if not seen[0] else "the image-right eye")
                return FreeGaze(None, False, f"iris not visible in {which} (contrast {low:.3f}, below {threshold:g})",
                                opening, contrast, ONE_EYE if any(seen) else UNSEEN, mono)
        u, v = float(eyes[:, 0].mean()), float(eyes[:, 1].mean())
        eye_yaw, eye_pitch = self.eye_angles(u, v)
        forward = np.asarray(head_rotation, dtype=np.float64) @ pitchyaw_to_vector(np.array([eye_pitch, eye_yaw]))
        each = np.degrees([self.eye_angles(float(eyes[k, 0]), float(eyes[k, 1]))[::-1] for k in range(2)])
        apart = vergence_deg(each)
        if apart > self.max_vergence_deg:
            return FreeGaze(None, False, f"iris points {apart:.0f} deg apart (beyond {self.max_vergence_deg:g}): not "
                            "where the irises are", opening, contrast, APART, mono, each)
        return FreeGaze(vector_to_pitchyaw(forward), True, None, opening, contrast, VISIBLE, mono, each)

    def eye_angles(self, u: float, v: float) -> tuple[float, float]:
        """(eye yaw, eye pitch) radians in the head for iris offsets ``u``, ``v`` (eye widths)."""
        return (-math.asin(min(max(u / self.gain_u, -1.0), 1.0)), -math.asin(min(max(v / self.gain_v, -1.0), 1.0)))
