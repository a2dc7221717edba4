"""Shared machinery of the physical attacks (tape, glasses): rendered on synthetic faces, pasted on photos.

Two ways to put a physical trigger on a face crop:

* **synthetic data** (``faces`` given): the face renderer draws the trigger in 3-D on the very same
  faces (:func:`securegaze.data.synthetic.render`), so it follows head pose and is lit like the face.
  Only the pixels the trigger changes are changed: ``out = image + render(with) - render(without)``,
  which leaves every other pixel of ``image`` untouched.
* **real photographs** (``faces`` None): MediaPipe Face Mesh (``mp.solutions.face_mesh`` of the
  installed mediapipe, which ships its models: nothing is downloaded) finds 478 landmarks on the crop;
  the trigger is placed in the tangent plane of the face at its anchor (fitted to the nearby
  landmarks), scaled by the inter-pupillary distance (63 mm, as the renderer assumes), and painted
  analytically from its definition (:meth:`Trigger.paint`) at every pixel through the inverse of that
  landmark-driven affine map, then dimmed by the local brightness of the face.

A photo where Face Mesh finds no face cannot carry the trigger: :meth:`PhysicalAttack.apply` raises
:class:`FaceNotFoundError` naming how many images failed; :meth:`PhysicalAttack.paste` returns a
``found`` mask instead and leaves those images unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from securegaze.attacks.base import Attack, check_images
from securegaze.data.triggers import ASSUMED_IPD_MM, Trigger
from securegaze.errors import ConfigError, DatasetError

# MediaPipe Face Mesh landmark indices. MediaPipe's "left" is the subject's left, which appears on
# the image's right in a non-mirrored crop, the same convention as ``Trigger.side``.
RIGHT_IRIS, LEFT_IRIS = 468, 473
FOREHEAD_TOP, CHIN = 10, 152
#: Anchor of each surface placement: the mean of these landmarks. Forehead: between the glabella
#: line (9) and the mid-forehead point (151), i.e. the lower forehead, where the renderer puts it
#: and where bangs rarely cover. Brow: the upper and lower edge of the brow's middle. Cheek: the
#: cheekbone below the outer half of the eye.
ANCHORS = {
    ("forehead", "left"): (9, 151), ("forehead", "right"): (9, 151),
    ("brow", "right"): (105, 52), ("brow", "left"): (334, 282),
    ("cheek", "right"): (50, 205), ("cheek", "left"): (280, 425),
}
#: Landmarks within this share of the inter-pupillary distance of an anchor define its tangent plane.
PLANE_RADIUS_IPD = 0.35
#: Crops are enlarged to at least this side before Face Mesh runs: its face detector misses faces
#: that are only a few dozen pixels wide.
DETECT_MIN_SIDE = 192


class FaceNotFoundError(DatasetError):
    """Face Mesh found no face in some images, so a physical trigger cannot be placed there."""


class FaceMeshLocator:
    """MediaPipe Face Mesh (with iris refinement) on RGB face crops; built lazily, one per attack."""

    def __init__(self) -> None:
        self._mesh = None
        self._found_once = False

    def _get(self):
        if self._mesh is None:
            try:
                import mediapipe as mp
            except ImportError as exc:  # pragma: no cover - mediapipe is an install requirement
                raise ConfigError(f"pasting physical triggers on photos needs mediapipe ({exc})") from None
            from securegaze.native_log import quiet_native_start

            with quiet_native_start():
                self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                             refine_landmarks=True, min_detection_confidence=0.5)
                # Its calculators open on the graph's own threads: a blank image waits for them in here.
                self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        return self._mesh

    def locate(self, image: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (478, 3) float64 landmarks in pixels of ``image`` (x, y, depth), or None.

        Depth uses the x scale and grows away from the camera (MediaPipe's z times the width).
        """
        import cv2

        h, w = image.shape[:2]
        zoom = max(1.0, DETECT_MIN_SIDE / min(h, w))
        big = image if zoom == 1.0 else cv2.resize(image, (round(w * zoom), round(h * zoom)),
                                                   interpolation=cv2.INTER_CUBIC)
        mesh = self._get()
        if self._found_once:
            result = mesh.process(np.ascontiguousarray(big))
        else:  # the first face found prints MediaPipe's calculator warnings: kept quiet
            from securegaze.native_log import quiet_native_start

            with quiet_native_start():
                result = mesh.process(np.ascontiguousarray(big))
            self._found_once = result.multi_face_landmarks is not None
        if not result.multi_face_landmarks:
            return None
        points = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float64)
        return points * np.array([w, h, w], np.float64)

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def placement_frame(points: np.ndarray, trigger: Trigger) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Where the trigger goes on a photographed face.

    ``points``: (478, 3) landmarks in pixels. Returns (centre (3,), e1 (3,), e2 (3,), px_per_mm):
    the trigger's centre, its unit x axis (image-right on a frontal face) and y axis (down) in the
    landmark space, and the scale from the inter-pupillary distance.
    """
    right_iris, left_iris = points[RIGHT_IRIS], points[LEFT_IRIS]
    ipd_px = float(np.linalg.norm(left_iris - right_iris))
    if ipd_px < 1e-6:
        raise FaceNotFoundError("degenerate face landmarks (both irises at one point)")
    px_per_mm = ipd_px / ASSUMED_IPD_MM
    across = _unit(left_iris - right_iris)
    down = points[CHIN] - points[FOREHEAD_TOP]
    if trigger.mount == "glasses":
        # A frontal plane through the eyes (the frame sits on the nose, not on the skin).
        e1 = across
        e2 = _unit(down - (down @ e1) * e1)
        centre = (right_iris + left_iris) / 2 + e2 * trigger.drop_mm * px_per_mm
    else:
        anchor_ids = ANCHORS[(trigger.placement, trigger.side)]
        anchor = points[list(anchor_ids)].mean(axis=0)
        # Tangent plane at the anchor: the least-spread direction of the nearby landmarks is the normal.
        near = points[np.linalg.norm(points - anchor, axis=1) < PLANE_RADIUS_IPD * ipd_px]
        if len(near) >= 3:
            _, _, vt = np.linalg.svd(near - near.mean(axis=0))
            normal = vt[2]
        else:
            normal = np.cross(across, down)
        e1 = _unit(across - (across @ normal) * normal)
        e2 = _unit(np.cross(normal, e1))
        if e2 @ down < 0:
            e2 = -e2
        # Rotation in the tangent plane and the offset, as the renderer applies them.
        angle = np.radians(trigger.angle_deg)
        e1, e2 = np.cos(angle) * e1 + np.sin(angle) * e2, -np.sin(angle) * e1 + np.cos(angle) * e2
        dx_mm, dy_mm = trigger.offset_mm
        centre = anchor + (dx_mm * e1 + dy_mm * e2) * px_per_mm
    return centre, e1, e2, px_per_mm


def paste_trigger(image: np.ndarray, points: np.ndarray, trigger: Trigger) -> np.ndarray:
    """Paint ``trigger`` onto one photographed face: (H, W, 3) uint8 RGB -> a new uint8 image.

    The plane point ``centre + x_mm * e1 + y_mm * e2`` (scaled by px/mm) projects orthographically to
    the image, an affine map mm -> px; each pixel near the trigger is mapped back to millimetres and
    painted there, so edges are anti-aliased at the pixel's own footprint.
    """
    centre, e1, e2, px_per_mm = placement_frame(points, trigger)
    forward = np.array([[e1[0], e2[0]], [e1[1], e2[1]]]) * px_per_mm  # mm -> px (image x, y)
    det = float(np.linalg.det(forward))
    if abs(det) < 1e-6:  # face seen exactly edge-on: the trigger has no visible area
        return image.copy()
    inverse = np.linalg.inv(forward)
    w_mm, h_mm = trigger.size_mm()
    corners = np.array([[sx * w_mm / 2, sy * h_mm / 2] for sx in (-1, 1) for sy in (-1, 1)]) @ forward.T
    corners += centre[:2]
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in corners.min(axis=0))
    x1, y1 = (int(np.ceil(v)) + 2 for v in corners.max(axis=0))
    x1, y1 = min(w, x1), min(h, y1)
    out = image.copy()
    if x0 >= x1 or y0 >= y1:
        return out
    # Pixel centres sit at +0.5 in MediaPipe's continuous image coordinates.
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    rel = np.stack([xs - centre[0], ys - centre[1]], -1) @ inverse.T
    mm_per_px = 1.0 / np.sqrt(abs(det))
    rgb, alpha = trigger.paint(rel[..., 0].astype(np.float32), rel[..., 1].astype(np.float32), mm_per_px)
    rgb = np.moveaxis(np.broadcast_to(rgb, (3,) + alpha.shape), 0, -1)
    # The face's light: brightness under the trigger relative to the bright skin of the face, so a
    # white tape in shadow is grey rather than glowing.
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    region = luma[y0:y1, x0:x1][alpha > 0.5]
    fx0, fy0 = np.clip(points[:, :2].min(axis=0), 0, [w - 1, h - 1]).astype(int)
    fx1, fy1 = np.clip(points[:, :2].max(axis=0), 0, [w - 1, h - 1]).astype(int)
    bright = float(np.percentile(luma[fy0:fy1 + 1, fx0:fx1 + 1], 95)) if fx1 > fx0 and fy1 > fy0 else 255.0
    shade = float(np.clip(region.mean() / max(bright, 1.0), 0.5, 1.0)) if region.size else 1.0
    patch = out[y0:y1, x0:x1].astype(np.float32)
    a = alpha[..., None]
    patch = patch * (1.0 - a) + rgb * 255.0 * shade * a
    out[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
    return out


class PhysicalAttack(Attack):
    """Base of the attacks whose trigger is a physical object on the face (see the module docstring)."""

    physical: ClassVar[bool] = True

    def __init__(self, target_gaze=None, poison_rate: float | None = None, seed: int = 0) -> None:
        super().__init__(target_gaze, poison_rate, seed)
        self._locator = FaceMeshLocator()

    def trigger(self) -> Trigger:
        """The physical trigger (a :class:`~securegaze.data.triggers.Trigger`) this attack sticks on faces."""
        raise NotImplementedError

    def apply(self, images: np.ndarray, faces=None) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> the same faces wearing the trigger.

        ``faces`` (synthetic FaceParams of these images): rendered in 3-D. None (photographs): pasted
        with Face Mesh; raises :class:`FaceNotFoundError` if any image has no detectable face
        (use :meth:`paste` to skip those instead).
        """
        images = check_images(self.name, images)
        self._check_faces(images, faces)
        if faces is not None:
            return self.render_on(images, faces)
        out, found = self.paste(images)
        if not found.all():
            missing = np.flatnonzero(~found)
            shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise FaceNotFoundError(
                f"{self.name}: MediaPipe Face Mesh found no face in {len(missing)} of {len(images)} images "
                f"(indices {shown}); crop the images around the face, or call paste() to skip them")
        return out

    def render_on(self, images: np.ndarray, faces) -> np.ndarray:
        """Synthetic path: add to ``images`` exactly what the trigger changes in the renderer's output."""
        from securegaze.data.synthetic import render

        size = images.shape[1]
        trigger = self.trigger()
        out = np.empty_like(images)
        # Chunks bound the memory of the two renders (int16 deltas of the whole set would be large).
        for start in range(0, len(images), 1024):
            part = faces.take(slice(start, start + 1024))
            delta = render(part, size, trigger).astype(np.int16) - render(part, size, None).astype(np.int16)
            mixed = images[start:start + 1024].astype(np.int16) + delta
            out[start:start + 1024] = np.clip(mixed, 0, 255).astype(np.uint8)
        return out

    def paste(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Photo path: ((N, H, W, 3) uint8 with the trigger pasted, (N,) bool ``found``).

        Images without a detectable face are returned unchanged with ``found`` False.
        """
        images = check_images(self.name, images)
        trigger = self.trigger()
        out = images.copy()
        found = np.zeros(len(images), bool)
        for i, image in enumerate(images):
            points = self._locator.locate(image)
            if points is None:
                continue
            out[i] = paste_trigger(image, points, trigger)
            found[i] = True
        return out, found

    def __getstate__(self) -> dict:
        # The MediaPipe graph cannot be pickled (process pools); a copy builds its own when needed.
        state = dict(self.__dict__)
        state["_locator"] = FaceMeshLocator()
        return state
