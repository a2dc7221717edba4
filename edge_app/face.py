"""Face stage: MediaPipe Face Mesh with iris refinement (478 landmarks per face).

Uses the legacy ``mediapipe.solutions.face_mesh`` graph of the mediapipe 0.10.21 wheel, which
ships the face detector, mesh and iris models inside the package (nothing is downloaded).
``refine_landmarks=True`` adds the 10 iris points (468-477) to the 468-point mesh.

In video mode (``static_image_mode=False``) MediaPipe detects once and then tracks the mesh from
frame to frame, re-detecting when the tracking confidence drops: that is what keeps the stage
fast enough for a 30 FPS loop. Unrelated still images (an image folder) must not be tracked: the
mesh of the previous photo's face is carried into the next photo, where it finds no face and the
detector is not run again until the track is lost, so every face after the first can be missed.
``detect(image, fresh=True)`` runs a second graph in static-image mode (created on first use):
the face detector runs on that image alone. ``static_image_mode=True`` makes every call fresh.

Several faces. ``max_faces`` (``face.max_faces`` in the app, 2 by default: a driver and a
passenger) asks MediaPipe for up to that many faces; :meth:`FaceMeshStage.detect_all` returns
every face that passes the thresholds and :mod:`edge_app.driver_select` chooses the driver's.
:meth:`FaceMeshStage.detect` keeps its one-face answer (the first face that passes). In video
mode MediaPipe runs its face detector on every frame while it tracks fewer faces than
``max_faces`` (otherwise only when a track is lost): on the synthetic driver's 640x480 frames with
one face that costs about 1.5 ms a frame (3.4 -> 4.9 ms for the mesh), and the one face's
landmarks are bit-identical to ``max_faces=1``'s (120 frames of the short drive compared).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from securegaze.errors import ConfigError
from securegaze.native_log import quiet_native_start

#: Frames a new face mesh runs with MediaPipe's native start-up lines kept quiet, unless it finds a face
#: first (its calculators print their warnings on the first face found).
QUIET_FRAMES = 100
#: Landmarks per face with iris refinement.
NUM_LANDMARKS = 478
#: Iris centres: the subject's right iris (image left) is 468-472, the left one 473-477; the
#: first index of each block is the centre.
RIGHT_IRIS_CENTRE = 468
LEFT_IRIS_CENTRE = 473


@dataclass(frozen=True)
class FaceLandmarks:
    """One face's landmarks in the frame.

    ``points_px``: (478, 2) float32 pixel coordinates (x right, y down) in the frame;
    ``depth``: (478,) float32 MediaPipe's relative depth (same scale as x, in pixels here; smaller
    is nearer the camera); ``frame_size``: (width, height) px.
    """

    points_px: np.ndarray
    depth: np.ndarray
    frame_size: tuple[int, int]

    @property
    def face_width_px(self) -> float:
        """Width of the landmark cloud, pixels (a size check for "too small to trust")."""
        return float(np.ptp(self.points_px[:468, 0]))

    @property
    def iris_centres_px(self) -> np.ndarray:
        """(2, 2): the subject's right then left iris centre, pixels."""
        return self.points_px[[RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE]]


class FaceMeshStage:
    """Find the faces of a frame: ``detect_all(frame_bgr)`` -> a list of :class:`FaceLandmarks`
    (up to ``max_faces``), ``detect(frame_bgr)`` -> the first of them or None.

    ``min_detection_confidence`` / ``min_tracking_confidence``: MediaPipe's face-detector and
    mesh-presence thresholds in [0, 1]; a face below them is reported as absent (the pipeline's
    NO_FACE state), never guessed. ``min_face_width_px``: faces whose landmark cloud is narrower
    are also reported absent (too few pixels on the eyes for a gaze estimate). ``max_faces``: the
    most faces MediaPipe looks for (1: the behaviour before driver selection).
    """

    def __init__(self, static_image_mode: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, min_face_width_px: float = 40.0,
                 max_faces: int = 1) -> None:
        if not 1 <= int(max_faces) <= 8:
            raise ConfigError(f"face.max_faces must be within 1..8, got {max_faces}")
        self.max_faces = int(max_faces)
        for name, value in (("min_detection_confidence", min_detection_confidence),
                            ("min_tracking_confidence", min_tracking_confidence)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"face.{name} must be within [0, 1], got {value}")
        self.min_face_width_px = float(min_face_width_px)
        self.last_rejection: str | None = None
        self._confidences = (min_detection_confidence, min_tracking_confidence)
        self._unstarted: dict[int, int] = {}  # frames each mesh ran before its first face (start-up lines then)
        self._mesh = self._new_mesh(static_image_mode)
        self._still_mesh = self._mesh if static_image_mode else None

    def _new_mesh(self, static_image_mode: bool):
        import mediapipe as mp

        with quiet_native_start():
            mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static_image_mode, max_num_faces=self.max_faces, refine_landmarks=True,
                min_detection_confidence=self._confidences[0], min_tracking_confidence=self._confidences[1])
            # The graph opens its calculators (and logs their models' start) on its own threads: one blank
            # frame through it waits for them inside the quiet block, not after it.
            mesh.process(np.zeros((64, 64, 3), np.uint8))
        self._unstarted[id(mesh)] = 0
        return mesh

    def _process(self, mesh, rgb: np.ndarray):
        """``mesh.process(rgb)``; MediaPipe's start-up lines kept quiet until a mesh has found its first
        face (its calculators warn then), for at most :data:`QUIET_FRAMES` frames."""
        if self._unstarted.get(id(mesh), QUIET_FRAMES) >= QUIET_FRAMES:
            return mesh.process(rgb)
        with quiet_native_start():
            result = mesh.process(rgb)
        self._unstarted[id(mesh)] = QUIET_FRAMES if result.multi_face_landmarks else self._unstarted[id(mesh)] + 1
        return result

    def detect(self, frame_bgr: np.ndarray, fresh: bool = False) -> FaceLandmarks | None:
        """``frame_bgr``: (H, W, 3) uint8 BGR; ``fresh``: a still image unrelated to the previous
        frame, detected on its own (static-image mode) instead of tracked. The first face that passes
        the thresholds, or None when none does (``last_rejection`` then says why)."""
        faces = self.detect_all(frame_bgr, fresh)
        return faces[0] if faces else None

    def detect_all(self, frame_bgr: np.ndarray, fresh: bool = False) -> list[FaceLandmarks]:
        """Every face that passes the thresholds, in MediaPipe's order (at most ``max_faces``); an
        empty list when none does, and ``last_rejection`` says why (the first rejected face's
        reason, or "no face found"). Arguments as :meth:`detect`."""
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR frame, got {frame_bgr.shape} {frame_bgr.dtype}")
        height, width = frame_bgr.shape[:2]
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        rgb.flags.writeable = False  # lets MediaPipe wrap the buffer instead of copying it
        if fresh and self._still_mesh is None:
            self._still_mesh = self._new_mesh(True)
        result = self._process(self._still_mesh if fresh else self._mesh, rgb)
        faces: list[FaceLandmarks] = []
        rejection = None
        for found in result.multi_face_landmarks or ():
            face, why = self._checked(found.landmark, width, height)
            if face is None:
                rejection = rejection or why
            else:
                faces.append(face)
        self.last_rejection = None if faces else (rejection or "no face found")
        return faces

    def _checked(self, marks, width: int, height: int) -> tuple[FaceLandmarks | None, str | None]:
        """One MediaPipe face as :class:`FaceLandmarks`, or (None, why it is not trusted)."""
        xyz = np.array([(p.x, p.y, p.z) for p in marks], dtype=np.float32)
        if len(xyz) != NUM_LANDMARKS:
            return None, f"face mesh returned {len(xyz)} landmarks, expected {NUM_LANDMARKS}"
        points = xyz[:, :2] * np.array([width, height], dtype=np.float32)
        face = FaceLandmarks(points, xyz[:, 2] * np.float32(width), (width, height))
        if not np.isfinite(points).all():
            return None, "face mesh returned non-finite landmarks"
        if face.face_width_px < self.min_face_width_px:
            return None, (f"low landmark confidence: face {face.face_width_px:.0f} px wide, "
                          f"below face.min_face_width_px {self.min_face_width_px:.0f}")
        return face, None

    def close(self) -> None:
        self._mesh.close()
        if self._still_mesh is not None and self._still_mesh is not self._mesh:
            self._still_mesh.close()

    def __enter__(self) -> FaceMeshStage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
