"""The synthetic driver: full camera frames of a rendered face following a scripted drive.

Why it looks the way it does. The project's renderer (:mod:`securegaze.data.synthetic`) draws
*normalised face crops*: exactly what the normalisation's virtual camera (Zhang et al. 2018)
sees. A driver frame is therefore made by running the normalisation backwards: a crop is rendered
for a virtual camera that looks at the face centre, and warped into the real camera with the
homography ``K R_c^T K_c^-1`` (a pure rotation between two cameras sharing their centre).
MediaPipe Face Mesh detects these faces (checked before anything else was built: it found all
24 crops of 8 identities at 128, 224 and 320 px pasted into a 640x480 frame;
``tests/test_edge_synthetic.py`` keeps checking the driver's frames), so the frames need no
compositing onto a real photograph and go through the real face stage like camera frames. Two changes to the
crop keep it honest as a camera frame rather than a pasted square:

* the crop is rendered zoomed out (``head_scale`` x ``ZOOM``, offset scaled to match), so the
  whole head, hair and neck are in view instead of the cut-off training framing;
* its background is a flat cabin colour equal to the frame's, and sensor noise is added to the
  whole frame after the warp, so there is no visible seam.

Ground truth. The script gives the driver's gaze in the **real camera frame** (pitch, yaw
radians, :mod:`securegaze.geometry`). The rendered gaze label is that direction expressed in the
crop camera, ``R_c g_cam``; the de-normalised prediction of the pipeline is compared with
``g_cam``, so the reported angular error includes every stage: landmarks, head pose,
normalisation, model and de-normalisation. The crop camera's roll follows a slow sway of the
driver's head, so roll removal is exercised as well.

Scale. The renderer's head unit is set from a 63 mm interpupillary distance
(``ASSUMED_IPD_MM`` of the trigger module): ``mm_per_unit = 63 / (2 * eye_dx)``.

Personal offset. A person's eyes do not point exactly where they look: the visual axis (fovea to
the object) differs from the optical axis that the eye's appearance shows by a few degrees, the
angle kappa (about 5 deg nasal-temporal and 1-2 deg vertical in adults), and gaze models learn the
average person. ``personal_offset_deg`` gives the synthetic driver such an offset: the eyes are
rendered turned by (d_pitch, d_yaw) degrees in the face's crop camera (the normalised frame the
pipeline sees, roll removed) from the gaze the ground truth gives, so a model sees eyes that are
off by that offset and a per-driver calibration (``edge-app calibrate driver``) must remove it.

Passenger. ``passenger_side`` ("left" or "right": the image side; None: no passenger, the
frames byte-identical to those before the option existed) seats a second person, another
identity drawn from the seed, on that side of the image, and moves the driver's face
:data:`DRIVER_SHIFT_MM` towards the other side, so that both fit a 640x480 frame: the driver at
700 mm (face about 125 px wide), the passenger further back at :data:`PASSENGER_DISTANCE_MM`
(about 95 px wide), as a front passenger sits beside and a little behind a camera on the steering
column. The passenger looks around the cabin on its own slow loop (:data:`PASSENGER_LOOKS`: the
road, the centre screen leaning in towards it, its side window, the driver, its lap), turning the
head by half of each glance, with its own sway. It is drawn behind the driver (the driver is
nearer). The ground truth stays the driver's.

Scripts are lists of :class:`ScriptPhase`; each phase names the cabin zone looked at (its gaze
comes from the zone map's ``target`` point) and, for distractions, the alert it must raise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from securegaze.data.synthetic import (
    HEAD_CENTRE_Y,
    SyntheticConfig,
    render,
    sample_params,
    with_condition_draws,
)
from securegaze.data.synthetic.condition_names import check_conditions
from securegaze.data.synthetic.night_ir import headlight_sweep
from securegaze.data.triggers import ASSUMED_IPD_MM
from securegaze.errors import ConfigError
from securegaze.geometry import pitchyaw_to_vector, vector_to_pitchyaw

#: Zoom-out of the rendered crop: it covers 1 / ZOOM times the training crop's width.
ZOOM = 0.6
#: Flat cabin background, linear RGB in [0, 1] (renderer colours) and the frame's BGR uint8.
BACKGROUND_RGB = np.array([0.36, 0.34, 0.31], dtype=np.float32)
#: Sensor noise added to every frame, standard deviation in grey levels (0..255).
FRAME_NOISE_STD = 2.0
#: Share of an eye movement made by the head (drivers turn the head for large glances; the rest is
#: the eyes), the default of ``head_follow``. Kept small so head poses stay inside the renderer's
#: training jitter (10/12/5 deg): the gaze model is not asked about heads it never saw. Drivers
#: differ ("owl" and "lizard" glances, Fridman et al. 2016); 0.6 gives an owl-like driver whose head
#: shows where it looks, which head-pose-only monitoring (edge_app/degraded.py) needs.
HEAD_FOLLOW = 0.3
#: Saccade duration for the gaze to move to a new target, s (large saccades last 50-100 ms; the
#: fixation settles within ~150 ms), and the slower head movement, s.
GAZE_TRANSITION_S = 0.15
HEAD_TRANSITION_S = 0.4
#: With a passenger: how far the driver's face moves sideways towards its own side of the image, mm
#: at 700 mm (about 120 px at 640 px focal length), and where the passenger sits: sideways from
#: the camera axis and from the camera, mm. Chosen so that both faces are in a 640x480 frame with
#: room for their sway and the passenger's lean, both at least ~90 px wide, and their drawn
#: squares apart.
DRIVER_SHIFT_MM = 130.0
PASSENGER_SIDEWAYS_MM = 300.0
PASSENGER_DISTANCE_MM = 950.0
#: How far the passenger leans in towards the middle while it looks at the centre screen, mm.
PASSENGER_LEAN_MM = 70.0
#: The passenger's loop of looks: (pitch deg, yaw deg towards the driver's side, seconds), in the
#: camera frame, and the share of each gaze shift its head makes.
PASSENGER_LOOKS: tuple[tuple[float, float, float], ...] = (
    (10.0, 0.0, 3.0),     # the road ahead
    (-15.0, 20.0, 2.5),   # the centre screen (leaning in)
    (2.0, -30.0, 2.0),    # out of its side window
    (8.0, 25.0, 1.5),     # at the driver
    (-30.0, 5.0, 2.5),    # its lap (a phone)
)
PASSENGER_HEAD_FOLLOW = 0.5
#: Seed offset of the passenger's identity (a different person from the driver's seed).
PASSENGER_SEED_OFFSET = 7919


@dataclass(frozen=True)
class ScriptPhase:
    """One step of a drive: look at ``zone`` for ``duration_s`` seconds.

    ``expected_alert``: for a checked phase, what the glance must raise (see :class:`DriveCheck`:
    "none", "warning", "loud", "critical" or "time_sharing"), judged from the phase's start until
    ``SETTLE_S`` after it ends (the smoothing and the return saccade need that long); None: not
    checked. Consecutive phases with the same ``label`` and expectation are judged as one event.
    """

    zone: str
    duration_s: float
    expected_alert: str | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.zone


TASK_LABEL = "infotainment task, 5 glances of 2.4 s (time-sharing)"

#: The full drive of ``--source synthetic``: a mirror check and a cluster glance that must stay
#: silent, a 3-s phone glance that must raise the warning, an infotainment task of repeated short
#: glances that only the visual time-sharing rule catches, and the return to the road.
FULL_SCRIPT: tuple[ScriptPhase, ...] = (
    ScriptPhase("road_ahead", 3.0),
    ScriptPhase("left_mirror", 1.0, "none", "mirror check 1 s"),
    ScriptPhase("road_ahead", 3.0),
    ScriptPhase("instrument_cluster", 1.0, "none", "cluster glance 1 s"),
    ScriptPhase("road_ahead", 3.0),
    ScriptPhase("phone_lap", 3.0, "warning", "phone on the lap 3 s"),
    ScriptPhase("road_ahead", 4.0),
    ScriptPhase("rear_view_mirror", 1.0, "none", "rear-view mirror 1 s"),
    ScriptPhase("road_ahead", 2.0),
    # Five 2.4-s glances at the centre screen with 1-s looks back: none is a long distraction,
    # together they pass 10 s off the road within 30 s.
    *[p for _ in range(5) for p in (ScriptPhase("infotainment", 2.4, "time_sharing", TASK_LABEL),
                                    ScriptPhase("road_ahead", 1.0, "time_sharing", TASK_LABEL))],
    ScriptPhase("road_ahead", 5.0),
)

#: A short drive for tests and quick checks: a 1-s mirror check and a 3-s phone glance.
SHORT_SCRIPT: tuple[ScriptPhase, ...] = (
    ScriptPhase("road_ahead", 2.5),
    ScriptPhase("left_mirror", 1.0, "none", "mirror check 1 s"),
    ScriptPhase("road_ahead", 2.5),
    ScriptPhase("phone_lap", 3.0, "warning", "phone on the lap 3 s"),
    ScriptPhase("road_ahead", 2.5),
)

SCRIPTS = {"full": FULL_SCRIPT, "short": SHORT_SCRIPT}


#: Grey level of the dark cabin around the face in a night_ir frame (the illuminator lights the face).
NIGHT_CABIN_GREY = 18
#: A passing car's headlights cross the night frame every SWEEP_EVERY_S seconds, taking SWEEP_S.
SWEEP_EVERY_S, SWEEP_S = 9.0, 1.2
def look_at_rotation(centre_mm: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """(3, 3) rows = axes of a camera at the origin looking at ``centre_mm``, rolled by ``roll``
    radians about its view, expressed in the real camera's frame (x kept near the real x)."""
    z = np.asarray(centre_mm, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x0 = np.array([1.0, 0.0, 0.0]) - z[0] * z
    x0 /= np.linalg.norm(x0)
    y0 = np.cross(z, x0)
    x = math.cos(roll) * x0 + math.sin(roll) * y0
    y = np.cross(z, x)
    return np.stack([x, y, z])


def _ease(a: np.ndarray, b: np.ndarray, t_since: float, duration: float) -> np.ndarray:
    """Minimum-jerk blend from a to b, ``t_since`` seconds into a move of ``duration`` seconds."""
    s = min(max(t_since / duration, 0.0), 1.0) if duration > 0 else 1.0
    w = s**3 * (10 - 15 * s + 6 * s**2)
    return a + (b - a) * w


@dataclass(frozen=True)
class DriverFrameTruth:
    """Ground truth of one synthetic frame: camera-frame gaze (pitch, yaw) radians, the zone looked
    at, the phase index in the script and its name; ``crop_rotation`` (3, 3) and
    ``face_centre_mm`` (3,) describe the virtual camera the face was rendered for (rows: its axes
    in the camera frame; the point it looks at, mm); ``head_rotation`` (3, 3) is the head's true pose
    (camera from head, the head-pose stage's convention) and ``true_face_centre_mm`` (3,) the true face
    centre of the normalisation (mean of the eye and mouth corners), which :func:`oracle_gaze` uses to
    separate the model's own error from the errors of the face and pose stages."""

    gaze: tuple[float, float]
    zone: str
    phase_index: int
    phase: str
    crop_rotation: np.ndarray | None = None
    face_centre_mm: np.ndarray | None = None
    head_rotation: np.ndarray | None = None
    true_face_centre_mm: np.ndarray | None = None


class SyntheticDriver:
    """Renders the frames of a scripted drive.

    ``zone_targets``: zone name -> (pitch, yaw) degrees in the camera frame, the point a driver
    looks at in that zone (from the zone map). ``width`` x ``height``: frame size px;
    ``focal_px``: the camera's focal length (the intrinsics approximation, focal = width, by
    default); ``distance_mm``: camera to face centre; ``fps``: frame rate of the script's clock;
    ``personal_offset_deg``: (pitch, yaw) degrees between the rendered eyes and the true gaze, in
    the face's crop camera (see the module docstring; (0, 0): the eyes show the true gaze);
    ``head_follow``: the share of each gaze shift made by the head, 0..1 (:data:`HEAD_FOLLOW`);
    ``passenger_side``: "left" | "right", the image side of a passenger (see the module
    docstring), None for none.
    """

    def __init__(self, zone_targets: dict[str, tuple[float, float]], script=SHORT_SCRIPT, width: int = 640,
                 height: int = 480, fps: float = 30.0, seed: int = 0, distance_mm: float = 700.0,
                 focal_px: float | None = None, personal_offset_deg: tuple[float, float] = (0.0, 0.0),
                 head_follow: float = HEAD_FOLLOW, passenger_side: str | None = None,
                 conditions: tuple[str, ...] = ()) -> None:
        if not script:
            raise ConfigError("synthetic driver script is empty")
        missing = sorted({p.zone for p in script} - set(zone_targets))
        if missing:
            raise ConfigError(f"synthetic driver script looks at zone(s) {', '.join(missing)} that the zone map "
                              f"lacks (zones with a target: {', '.join(sorted(zone_targets))})")
        if not (16 <= width <= 4096 and 16 <= height <= 4096 and 1 <= fps <= 240 and 200 <= distance_mm <= 2000):
            raise ConfigError(f"synthetic driver: frame {width}x{height}, fps {fps}, distance {distance_mm} mm "
                              "outside 16..4096 px, 1..240 fps, 200..2000 mm")
        self.script = tuple(script)
        self.zone_targets = {k: np.radians(np.asarray(v, dtype=np.float64)) for k, v in zone_targets.items()}
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.distance_mm = float(distance_mm)
        self.focal_px = float(focal_px or width)
        self.camera_matrix = np.array([[self.focal_px, 0, width / 2.0], [0, self.focal_px, height / 2.0], [0, 0, 1]])
        self.seed = int(seed)
        offset = np.asarray(personal_offset_deg, dtype=np.float64)
        if offset.shape != (2,) or not np.all(np.abs(offset) <= 20.0):
            raise ConfigError(f"synthetic driver: personal_offset_deg {list(personal_offset_deg)} is not two angles "
                              "within +-20 deg")
        self.personal_offset = np.radians(offset)
        if not 0.0 <= head_follow <= 1.0:
            raise ConfigError(f"synthetic driver: head_follow {head_follow} outside 0..1")
        self.head_follow = float(head_follow)
        # Cabin conditions the driver wears (glasses, a mask, ...) or the camera sees (night_ir), drawn
        # by the renderer on the face (securegaze.data.synthetic.conditions); () renders as before.
        self.conditions = check_conditions(conditions)
        ident = sample_params(1, seed, SyntheticConfig(head_jitter_deg=(0.0, 0.0, 0.0), conditions=self.conditions))
        self.mm_per_unit = ASSUMED_IPD_MM / (2.0 * float(ident.eye_dx[0]))
        bg = np.broadcast_to(BACKGROUND_RGB, (1, 2, 3))
        # A fixed identity and light for the whole drive; the per-frame fields are set in render_frame.
        self._identity = ident.replace(background_rgb=bg, blur_sigma=0.25, noise_std=0.0,
                                       head_scale=ZOOM, head_offset=(0.0, ZOOM * HEAD_CENTRE_Y - HEAD_CENTRE_Y))
        # Canvas: as many pixels across as the camera gives the covered width at this distance.
        canvas_mm = 2.0 / ZOOM * self.mm_per_unit
        self.canvas_px = int(round(self.focal_px * canvas_mm / self.distance_mm))
        self._canvas_focal = self.canvas_px * self.distance_mm / canvas_mm
        self._rng = np.random.default_rng([self.seed, 0xD21E])
        self.background_bgr = np.clip(BACKGROUND_RGB[::-1] * 255 + 0.5, 0, 255).astype(np.uint8)
        starts = np.cumsum([0.0] + [p.duration_s for p in self.script])
        self.phase_starts = starts[:-1]
        self.duration_s = float(starts[-1])
        if passenger_side not in (None, "left", "right"):
            raise ConfigError(f"synthetic driver: passenger_side {passenger_side!r} is not left, right or None")
        self.passenger_side = passenger_side
        # +1: the passenger sits towards the camera's +x (image right); the driver moves the other way.
        self._passenger_sign = 0.0 if passenger_side is None else (1.0 if passenger_side == "right" else -1.0)
        if passenger_side is not None:
            self._set_up_passenger(bg)

    @property
    def frame_count(self) -> int:
        return int(math.floor(self.duration_s * self.fps))

    # -- the script's motion --------------------------------------------------------------------
    def phase_at(self, t: float) -> int:
        return int(np.clip(np.searchsorted(self.phase_starts, t, side="right") - 1, 0, len(self.script) - 1))

    def gaze_at(self, t: float) -> tuple[np.ndarray, np.ndarray, int]:
        """(camera-frame gaze (2,) radians, head direction (2,) radians, phase index) at time t s."""
        k = self.phase_at(t)
        target = self.zone_targets[self.script[k].zone]
        previous = self.zone_targets[self.script[k - 1].zone] if k > 0 else target
        since = t - self.phase_starts[k]
        gaze = _ease(previous, target, since, GAZE_TRANSITION_S)
        head = self.head_follow * _ease(previous, target, since, HEAD_TRANSITION_S)
        return gaze, head, k

    def face_centre_at(self, t: float) -> np.ndarray:
        """(3,) camera-frame face centre, mm: a slow sway of a seated driver (a few cm)."""
        return np.array([25.0 * math.sin(0.31 * t) + 10.0 - self._passenger_sign * DRIVER_SHIFT_MM,
                         -15.0 + 12.0 * math.sin(0.47 * t + 1.0), self.distance_mm + 30.0 * math.sin(0.23 * t)])

    def roll_at(self, t: float) -> float:
        """Head roll about the view, radians (a gentle +-6 degree sway)."""
        return math.radians(6.0) * math.sin(0.37 * t + 0.5)

    # -- rendering -------------------------------------------------------------------------------
    def render_frame(self, index: int, trigger=None) -> tuple[np.ndarray, float, DriverFrameTruth]:
        """Frame ``index``: ((H, W, 3) uint8 BGR, timestamp s, truth). ``trigger``: a physical
        trigger (:mod:`securegaze.data.triggers`, object or registered name) the driver wears in
        this frame, drawn by the renderer on the head so it follows pose and light (trigger trials)."""
        t = index / self.fps
        gaze_cam, head_cam, k = self.gaze_at(t)
        centre = self.face_centre_at(t)
        r_c = look_at_rotation(centre, self.roll_at(t))
        # The eyes show the gaze in the crop camera, turned by the driver's personal offset.
        label = vector_to_pitchyaw(r_c @ pitchyaw_to_vector(gaze_cam)) + self.personal_offset
        head = vector_to_pitchyaw(r_c @ pitchyaw_to_vector(head_cam))
        params = self._identity.replace(gaze=label.astype(np.float32),
                                        head_pose=np.array([head[0], head[1], 0.0], np.float32))
        if self.conditions:
            if "night_ir" in self.conditions:
                params = with_condition_draws(params, "night_ir", **headlight_sweep(t, SWEEP_EVERY_S, SWEEP_S))
            canvas = render(params, SyntheticConfig(size=self.canvas_px, conditions=self.conditions), trigger)[0]
        else:
            canvas = render(params, self.canvas_px, trigger)[0]
        c = (self.canvas_px - 1) / 2.0
        k_c = np.array([[self._canvas_focal, 0, c], [0, self._canvas_focal, c], [0, 0, 1]])
        # The canvas camera is at distance_mm; moving the face along its view only rescales it.
        scale = np.diag([1.0, 1.0, self.distance_mm / np.linalg.norm(centre)])
        homography = self.camera_matrix @ r_c.T @ np.linalg.inv(scale) @ np.linalg.inv(k_c)
        bgr = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        frame = cv2.warpPerspective(bgr, homography, (self.width, self.height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT,
                                    borderValue=tuple(int(v) for v in self.background_bgr))
        if self.passenger_side is not None:
            frame = self._behind_passenger(frame, bgr, homography, t)
        if "night_ir" in self.conditions:  # the whole frame through the same monochrome sensor, cabin dark
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            outside = cv2.warpPerspective(np.ones(bgr.shape[:2], np.uint8), homography, (self.width, self.height)) == 0
            grey[outside] = NIGHT_CABIN_GREY
            frame = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        # One noise value for the three channels of a monochrome (night_ir) sensor.
        shape = frame.shape[:2] + (1,) if "night_ir" in self.conditions else frame.shape
        noise = self._rng.normal(0.0, FRAME_NOISE_STD, shape).astype(np.float32)
        frame = np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        phase = self.script[k]
        head_rotation, true_centre = self._true_pose(params, r_c, centre)
        truth = DriverFrameTruth((float(gaze_cam[0]), float(gaze_cam[1])), phase.zone, k, phase.name, r_c, centre,
                                 head_rotation, true_centre)
        return frame, t, truth

    # -- the passenger ---------------------------------------------------------------------------
    def _set_up_passenger(self, background: np.ndarray) -> None:
        ident = sample_params(1, self.seed + PASSENGER_SEED_OFFSET, SyntheticConfig(head_jitter_deg=(0.0, 0.0, 0.0)))
        self._passenger = ident.replace(background_rgb=background, blur_sigma=0.25, noise_std=0.0, head_scale=ZOOM,
                                        head_offset=(0.0, ZOOM * HEAD_CENTRE_Y - HEAD_CENTRE_Y))
        canvas_mm = 2.0 / ZOOM * ASSUMED_IPD_MM / (2.0 * float(ident.eye_dx[0]))
        self._passenger_canvas_px = int(round(self.focal_px * canvas_mm / PASSENGER_DISTANCE_MM))
        self._passenger_canvas_focal = self._passenger_canvas_px * PASSENGER_DISTANCE_MM / canvas_mm
        starts = np.cumsum([0.0] + [look[2] for look in PASSENGER_LOOKS])
        self._passenger_starts, self._passenger_loop_s = starts[:-1], float(starts[-1])

    def passenger_look_at(self, t: float) -> tuple[np.ndarray, np.ndarray, float]:
        """The passenger's (camera-frame gaze (2,) radians, head direction (2,) radians, lean mm
        towards the middle) at time t s: the loop of :data:`PASSENGER_LOOKS`, eased like the driver's."""
        u = t % self._passenger_loop_s
        k = int(np.searchsorted(self._passenger_starts, u, side="right") - 1)
        since = u - self._passenger_starts[k]

        def look(i: int) -> np.ndarray:
            pitch, towards_driver, _ = PASSENGER_LOOKS[i % len(PASSENGER_LOOKS)]
            # Yaw is + towards the image's left; towards the driver is away from the passenger's side.
            return np.radians([pitch, -self._passenger_sign * towards_driver])

        first = t < self._passenger_loop_s and k == 0  # the drive starts on the first look, not moving
        previous = look(k if first else k - 1)
        gaze = _ease(previous, look(k), since, GAZE_TRANSITION_S)
        head = PASSENGER_HEAD_FOLLOW * _ease(previous, look(k), since, HEAD_TRANSITION_S)
        leaning = [1.0 if i % len(PASSENGER_LOOKS) == 1 else 0.0 for i in (k if first else k - 1, k)]
        lean = PASSENGER_LEAN_MM * float(_ease(np.array(leaning[0]), np.array(leaning[1]), since, 0.8))
        return gaze, head, lean

    def passenger_centre_at(self, t: float) -> np.ndarray:
        """(3,) camera-frame centre of the passenger's face, mm: its seat, its own sway and its lean."""
        lean = self.passenger_look_at(t)[2]
        return np.array([self._passenger_sign * (PASSENGER_SIDEWAYS_MM - lean) + 20.0 * math.sin(0.29 * t + 2.0),
                         -5.0 + 10.0 * math.sin(0.43 * t + 0.3),
                         PASSENGER_DISTANCE_MM + 25.0 * math.sin(0.21 * t + 1.2)])

    def _behind_passenger(self, frame: np.ndarray, driver_bgr: np.ndarray, homography: np.ndarray,
                          t: float) -> np.ndarray:
        """The frame with the passenger drawn behind the driver: the passenger's face is warped into
        the camera like the driver's, and the driver's head (the canvas pixels that differ from the
        flat background) is laid over it."""
        gaze_cam, head_cam, _ = self.passenger_look_at(t)
        centre = self.passenger_centre_at(t)
        r_c = look_at_rotation(centre, math.radians(4.0) * math.sin(0.33 * t + 2.0))
        label = vector_to_pitchyaw(r_c @ pitchyaw_to_vector(gaze_cam))
        head = vector_to_pitchyaw(r_c @ pitchyaw_to_vector(head_cam))
        params = self._passenger.replace(gaze=label.astype(np.float32),
                                         head_pose=np.array([head[0], head[1], 0.0], np.float32))
        canvas = cv2.cvtColor(render(params, self._passenger_canvas_px)[0], cv2.COLOR_RGB2BGR)
        c = (self._passenger_canvas_px - 1) / 2.0
        k_c = np.array([[self._passenger_canvas_focal, 0, c], [0, self._passenger_canvas_focal, c], [0, 0, 1]])
        scale = np.diag([1.0, 1.0, PASSENGER_DISTANCE_MM / np.linalg.norm(centre)])
        passenger_h = self.camera_matrix @ r_c.T @ np.linalg.inv(scale) @ np.linalg.inv(k_c)
        border = tuple(int(v) for v in self.background_bgr)
        behind = cv2.warpPerspective(canvas, passenger_h, (self.width, self.height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        head_mask = (np.abs(driver_bgr.astype(np.int16) - driver_bgr[0, 0].astype(np.int16)).max(axis=2) > 3)
        alpha = cv2.warpPerspective(head_mask.astype(np.float32), homography, (self.width, self.height),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
        return np.clip(frame * alpha + behind * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)

    def _true_pose(self, params, r_c: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(camera-from-head rotation (3, 3), face centre (3,) mm) of the rendered face in the camera frame.

        The canvas is an orthographic picture placed as a plane at the crop camera's look-at point, so
        the face centre is the point of that plane where its image lies (canvas units are
        ``mm_per_unit / ZOOM`` mm)."""
        from securegaze.data.synthetic.framing import face_centre_head
        from securegaze.data.synthetic.raycast import HeadFrame

        head = HeadFrame.build(params, self.canvas_px)
        uv = head.project(face_centre_head(params))[0]
        mm = self.mm_per_unit / ZOOM
        return r_c.T @ head.rotation[0], centre + r_c.T @ np.array([uv[0] * mm, uv[1] * mm, 0.0])

    def frames(self) -> Iterator[tuple[np.ndarray, float, DriverFrameTruth]]:
        for i in range(self.frame_count):
            yield self.render_frame(i)


def oracle_gaze(engine, frame_bgr: np.ndarray, truth: DriverFrameTruth, camera_matrix: np.ndarray,
                distance_mm: float, crop_width_mm: float, oversample: int = 2) -> np.ndarray:
    """The camera-frame gaze (2,) radians the engine gives when the frame is normalised as the app
    normalises it, but with the face's true head pose and face centre instead of the estimated ones:
    the model's error on these frames without the landmark and head-pose errors (a diagnostic only)."""
    from edge_app.normalisation import plan_normalisation, warp_face

    norm = plan_normalisation(truth.true_face_centre_mm, truth.head_rotation, camera_matrix, engine.input_size,
                              distance_mm, crop_width_mm)
    crop = cv2.cvtColor(warp_face(frame_bgr, norm, oversample), cv2.COLOR_BGR2RGB)
    return norm.gaze_to_camera(engine.infer(crop[None])[0])
