"""``edge-app calibrate camera``: the camera's intrinsics from views of the printed board.

Views are collected from any frame source (a camera, a video, a folder of photos): every frame in
which the board is found (:meth:`~edge_app.calibrate.board.BoardSpec.detect`) and whose corners
moved by more than ``MIN_VIEW_CHANGE`` of the frame diagonal (the corner that moved most: a
tilt moves the board's edges, not its middle) from every view kept so far (a board held still
gives one view, not a hundred). Before anything is written the views must
cover what a pinhole model with lens distortion needs, and each refusal names what is missing:

* at least ``MIN_VIEWS`` views (OpenCV's guidance is 10 or more);
* the board's corners reaching each corner region of the frame (the outer ``CORNER_REGION`` of
  the width and the height): lens distortion grows towards the corners, and a board only seen in
  the middle leaves it unmeasured;
* tilt: at least ``MIN_TILTED_VIEWS`` views turned left or right and as many turned up or down by
  ``MIN_TILT_DEG`` or more (Zhang 2000: the focal length is found from the perspective of
  planes seen at an angle; boards facing the camera leave it undetermined).

Then OpenCV's ``calibrateCamera`` (Zhang's method, Levenberg-Marquardt) fits fx, fy, cx, cy and
the distortion (k1, k2, p1, p2; k3 is held at 0 unless ``--k3``: webcams rarely need it and it
overfits a few views). Views whose RMS reprojection error is over ``OUTLIER_FACTOR`` times the
median (a blurred or mis-detected frame) are dropped and the fit repeated once; the final RMS
reprojection error must be under ``MAX_RMS_PX`` and the principal point inside the middle
``MAX_CENTRE_OFFSET`` of the frame. The result is written in the format of
``calibration/camera_example.yaml`` (:meth:`edge_app.head_pose.CameraIntrinsics.from_yaml`).

Units: pixels in the image, millimetres on the board, degrees for tilts and fields of view.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_app.calibrate.board import BoardDetection, BoardSpec
from edge_app.calibrate.yaml_out import utc_now, write_yaml
from securegaze.errors import CalibrationError, InputFileError
from securegaze.io import shown

MIN_VIEWS = 10
#: A view none of whose corners moved more than this share of the frame diagonal from a kept view is a duplicate.
MIN_VIEW_CHANGE = 0.02
#: The corner regions of the frame: the outer quarter of the width and of the height.
CORNER_REGION = 0.25
MIN_TILT_DEG = 15.0
MIN_TILTED_VIEWS = 2
MAX_RMS_PX = 1.0
#: A view is an outlier when its RMS reprojection error exceeds this times the median (and 0.5 px).
OUTLIER_FACTOR = 3.0
#: The principal point must lie within this share of the width / height from the frame centre.
MAX_CENTRE_OFFSET = 0.2
DEFAULT_MAX_VIEWS = 30
CORNER_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class CameraView:
    """One kept view: ``label`` (frame index or file name) and the board found in it."""

    label: str
    detection: BoardDetection


@dataclass
class ViewCollection:
    """What a source gave: kept ``views``, the ``frame_size`` (width, height) px, and counts of
    frames read, frames with the board, and near-duplicates left out."""

    views: list[CameraView] = field(default_factory=list)
    frame_size: tuple[int, int] | None = None
    frames_read: int = 0
    frames_with_board: int = 0
    duplicates: int = 0


def _is_duplicate(det: BoardDetection, kept: list[CameraView], diagonal: float) -> bool:
    """True when ``det`` shows the board where a kept view already has it (none of the shared corners
    moved more than MIN_VIEW_CHANGE of the diagonal)."""
    for view in kept:
        other = view.detection
        common, a, b = np.intersect1d(_keys(det.object_points), _keys(other.object_points), return_indices=True)
        if len(common) < 0.5 * min(len(det.object_points), len(other.object_points)):
            continue
        moved = np.linalg.norm(det.image_points[a] - other.image_points[b], axis=1).max()
        if moved < MIN_VIEW_CHANGE * diagonal:
            return True
    return False


def _keys(object_points: np.ndarray) -> np.ndarray:
    """One integer per board corner (its position in 0.1 mm), to match corners between views."""
    q = np.round(object_points[:, :2] * 10).astype(np.int64)
    return q[:, 0] * 1_000_000 + q[:, 1]


def collect_views(source, board: BoardSpec, max_views: int = DEFAULT_MAX_VIEWS, max_frames: int | None = None,
                  on_frame: Callable[[ViewCollection, CameraView | None], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> ViewCollection:
    """Read ``source`` (a :class:`~edge_app.sources.FrameSource`) until it ends, ``max_views`` views
    are kept, ``max_frames`` frames are read, or ``should_stop()``; ``on_frame(collection, view or
    None)`` after every frame (progress, prompts). Frames of another size than the first are refused."""
    got = ViewCollection()
    while len(got.views) < max_views and (max_frames is None or got.frames_read < max_frames):
        if should_stop is not None and should_stop():
            break
        frame = source.read()
        if frame is None:
            break
        h, w = frame.image.shape[:2]
        if got.frame_size is None:
            got.frame_size = (w, h)
        elif got.frame_size != (w, h):
            raise InputFileError(f"{source.description}: frame {frame.index} is {w}x{h}, the first was "
                                 f"{got.frame_size[0]}x{got.frame_size[1]}; one calibration is for one resolution")
        got.frames_read += 1
        det = board.detect(frame.image)
        view = None
        if det is not None:
            got.frames_with_board += 1
            if _is_duplicate(det, got.views, math.hypot(w, h)):
                got.duplicates += 1
            else:
                label = (shown(Path(source.files[frame.index]).name) if hasattr(source, "files")
                         else f"frame {frame.index}")
                view = CameraView(label, det)
                got.views.append(view)
        if on_frame is not None:
            on_frame(got, view)
    return got


def corners_reached(views: list[CameraView], size: tuple[int, int]) -> dict[str, bool]:
    """For each corner region of the frame (``CORNER_NAMES``): whether any view's corners reach it."""
    w, h = size
    reached = dict.fromkeys(CORNER_NAMES, False)
    for view in views:
        x, y = view.detection.image_points[:, 0], view.detection.image_points[:, 1]
        left, right = x < CORNER_REGION * w, x > (1 - CORNER_REGION) * w
        top, bottom = y < CORNER_REGION * h, y > (1 - CORNER_REGION) * h
        for name, hit in zip(CORNER_NAMES, (left & top, right & top, left & bottom, right & bottom), strict=True):
            reached[name] = reached[name] or bool(hit.any())
    return reached


def check_views(got: ViewCollection) -> None:
    """Refuse (CalibrationError) too few views or frame corners the board never reached."""
    n = len(got.views)
    if n < MIN_VIEWS:
        dup = f", {got.duplicates} more were near-duplicates of those" if got.duplicates else ""
        raise CalibrationError(f"too few views: the board was found in {n} distinct views of {got.frames_read} "
                               f"frames{dup}; need at least {MIN_VIEWS}: show the board at more places, "
                               "distances and angles")
    missing = [name for name, hit in corners_reached(got.views, got.frame_size).items() if not hit]
    if missing:
        raise CalibrationError(f"the board never reached the frame's {_join(missing)} corner"
                               f"{'s' if len(missing) > 1 else ''} (the outer {CORNER_REGION:.0%} of the width "
                               f"and height) in {n} views: move it there, a ChArUco board may be partly out of view")


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class CameraCalibration:
    """The fit: ``matrix`` (3, 3) K px, ``distortion`` (5,) (k1, k2, p1, p2, k3), ``frame_size``
    (width, height) px, ``rms_px`` over every corner of the kept views, ``view_rms_px`` per kept
    view, ``tilts_deg`` (N, 2) per kept view (turned up/down, turned left/right), the kept and
    dropped view labels."""

    matrix: np.ndarray
    distortion: np.ndarray
    frame_size: tuple[int, int]
    rms_px: float
    view_rms_px: np.ndarray
    tilts_deg: np.ndarray
    used: tuple[str, ...]
    dropped: tuple[str, ...]

    @property
    def fov_deg(self) -> tuple[float, float]:
        """Horizontal and vertical field of view, degrees (pinhole, without the distortion)."""
        (w, h), k = self.frame_size, self.matrix
        return 2 * math.degrees(math.atan(w / 2 / k[0, 0])), 2 * math.degrees(math.atan(h / 2 / k[1, 1]))


def _fit(views: list[CameraView], size: tuple[int, int], flags: int):
    obj = [v.detection.object_points.reshape(-1, 1, 3) for v in views]
    img = [v.detection.image_points.reshape(-1, 1, 2) for v in views]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)
    rms, k, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, size, None, None, flags=flags, criteria=criteria)
    view_rms = []
    for o, i, r, t in zip(obj, img, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(o, r, t, k, dist)
        view_rms.append(float(np.sqrt(np.mean(np.sum((proj - i).reshape(-1, 2) ** 2, axis=1)))))
    return float(rms), k, dist.reshape(-1), rvecs, np.asarray(view_rms)


def view_tilts_deg(rvecs) -> np.ndarray:
    """(N, 2) degrees per view: the board turned up/down (about the camera's horizontal axis) and
    left/right (about its vertical axis), from facing the camera."""
    out = []
    for r in rvecs:
        n = cv2.Rodrigues(np.asarray(r, np.float64))[0][:, 2]
        n = n if n[2] >= 0 else -n
        out.append((math.degrees(math.atan2(n[1], n[2])), math.degrees(math.atan2(n[0], n[2]))))
    return np.asarray(out).reshape(-1, 2)


def calibrate_views(got: ViewCollection, fit_k3: bool = False) -> CameraCalibration:
    """Check the views, fit the intrinsics, drop outlier views once, and check the result (see the
    module docstring); CalibrationError names what is missing or wrong."""
    check_views(got)
    size = got.frame_size
    flags = 0 if fit_k3 else cv2.CALIB_FIX_K3
    views = list(got.views)
    rms, k, dist, rvecs, view_rms = _fit(views, size, flags)
    limit = max(OUTLIER_FACTOR * float(np.median(view_rms)), 0.5)
    keep = view_rms <= limit
    dropped: tuple[str, ...] = ()
    if not keep.all() and keep.sum() >= MIN_VIEWS:
        dropped = tuple(v.label for v, ok in zip(views, keep, strict=True) if not ok)
        views = [v for v, ok in zip(views, keep, strict=True) if ok]
        rms, k, dist, rvecs, view_rms = _fit(views, size, flags)
    tilts = view_tilts_deg(rvecs)
    turned = {"up or down": int((np.abs(tilts[:, 0]) >= MIN_TILT_DEG).sum()),
              "left or right": int((np.abs(tilts[:, 1]) >= MIN_TILT_DEG).sum())}
    short = [f"{count} of {len(views)} views turned {way}" for way, count in turned.items() if count < MIN_TILTED_VIEWS]
    if short:
        raise CalibrationError(f"too little tilt: {'; '.join(short)} by {MIN_TILT_DEG:g} deg or more (need "
                               f"{MIN_TILTED_VIEWS} each way; largest tilts {np.abs(tilts[:, 0]).max():.1f} deg up/down, "
                               f"{np.abs(tilts[:, 1]).max():.1f} deg left/right): hold the board at an angle to the camera")
    if rms > MAX_RMS_PX:
        raise CalibrationError(f"RMS reprojection error {rms:.2f} px over {len(views)} views is above {MAX_RMS_PX:g} px "
                               "(blurred or moving frames, a board that is not flat, or --square-mm / --board wrong)")
    w, h = size
    if abs(k[0, 2] - w / 2) > MAX_CENTRE_OFFSET * w or abs(k[1, 2] - h / 2) > MAX_CENTRE_OFFSET * h:
        raise CalibrationError(f"the fitted principal point ({k[0, 2]:.0f}, {k[1, 2]:.0f}) px is far from the centre "
                               f"of the {w}x{h} frame: the views do not constrain it; add views across the frame")
    dist5 = np.zeros(5)
    dist5[:min(5, len(dist))] = dist[:5]
    return CameraCalibration(k, dist5, size, rms, view_rms, tilts, tuple(v.label for v in views), dropped)


def write_camera_yaml(cal: CameraCalibration, out: str | os.PathLike, board: BoardSpec, source: str) -> Path:
    """Write ``cal`` to ``out`` atomically in the app's camera format, read back with
    :meth:`~edge_app.head_pose.CameraIntrinsics.from_yaml` before it replaces anything."""
    from edge_app.head_pose import CameraIntrinsics

    (w, h), k = cal.frame_size, cal.matrix
    fov_h, fov_v = cal.fov_deg
    when = utc_now()
    header = (f"Camera intrinsics for edge-app (camera.calibration in the config), written {when} by\n"
              f"  edge-app calibrate camera --source {source} --board {board.text}\n"
              f"{len(cal.used)} views ({len(cal.dropped)} outlier views dropped), RMS reprojection error "
              f"{cal.rms_px:.3f} px; field of view {fov_h:.1f} x {fov_v:.1f} deg.\n"
              f"Pixels for {w}x{h} frames (the app scales them for another resolution of the same aspect ratio);\n"
              "distortion: OpenCV's k1, k2, p1, p2, k3.")
    data = {
        "notes": f"edge-app calibrate camera {when}: {board.text}, {len(cal.used)} views of {source}, "
                 f"RMS {cal.rms_px:.3f} px",
        "image_width": int(w),
        "image_height": int(h),
        "camera_matrix": [[float(v) for v in row] for row in k],
        "distortion_coefficients": [float(v) for v in cal.distortion],
    }
    return write_yaml(out, data, header, check=CameraIntrinsics.from_yaml)
