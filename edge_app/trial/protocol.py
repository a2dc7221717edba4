"""Trial protocols (docs/architecture.md section 9): what the participant looks at, when, and with or without
the trigger.

A :class:`Protocol` is one pass over its targets, ``dwell_s`` seconds each:

* ``screen4``: a dot at the four corners of a laptop screen, 4 s each (the SecureGaze
  demonstration). The screen geometry (:class:`ScreenGeometry`) turns each corner into a 3-D point
  in the camera frame; the gaze target is the direction from the participant's face to that point;
* ``cabin``: the cabin zone map's target points (road ahead, mirrors, cluster, ...), each shown on
  screen (and printed) as a text prompt, for a car or a mock-up.

A trial is a list of :class:`TrialPhase` s (``clean``, ``trigger``, ...), each one pass of the
protocol; a phase with ``trigger`` True is worn with the physical trigger. The
:class:`TrialSchedule` maps a time since the start to (phase, target). In the GUI the operator marks
the trigger with a key instead, and the schedule only gives the targets.

Angles: (pitch, yaw) in the camera frame (:mod:`securegaze.geometry`), radians unless named ``_deg``;
points in millimetres, camera frame (x right in the image, y down, z away from the camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from securegaze.errors import ConfigError
from securegaze.geometry import vector_to_pitchyaw

PROTOCOLS = ("screen4", "cabin")
#: Seconds per target: the SecureGaze demonstration holds each corner for 4 s.
DEFAULT_DWELL_S = 4.0


@dataclass(frozen=True)
class ScreenGeometry:
    """A laptop screen below its camera, mm. Defaults: a 15.6-inch 16:9 panel (344 x 194 mm), the
    webcam 10 mm above the top edge of the picture, the corner dots ``inset_mm`` inside the
    picture, and the participant's face ``viewing_distance_mm`` in front of the camera (a usual
    laptop distance, and Zhang et al.'s normalisation distance)."""

    width_mm: float = 344.0
    height_mm: float = 194.0
    camera_above_top_mm: float = 10.0
    inset_mm: float = 25.0
    viewing_distance_mm: float = 600.0

    def corner_point_mm(self, right: bool, bottom: bool) -> np.ndarray:
        """(3,) camera-frame point of a corner dot; ``right``: the participant's right, which is
        the image's left (camera -x) for a camera facing them."""
        x = (self.width_mm / 2 - self.inset_mm) * (-1.0 if right else 1.0)
        y = self.camera_above_top_mm + (self.height_mm - self.inset_mm if bottom else self.inset_mm)
        return np.array([x, y, 0.0])

    def nominal_face_mm(self) -> np.ndarray:
        return np.array([0.0, 0.0, self.viewing_distance_mm])


def gaze_towards(point_mm: np.ndarray, face_centre_mm: np.ndarray) -> np.ndarray:
    """(2,) camera-frame (pitch, yaw) radians of the direction from the face to ``point_mm``."""
    v = np.asarray(point_mm, dtype=np.float64) - np.asarray(face_centre_mm, dtype=np.float64)
    return vector_to_pitchyaw(v / np.linalg.norm(v))


@dataclass(frozen=True)
class TrialTarget:
    """One thing to look at. ``name``: an id (``top_left``, ``left_mirror``); ``prompt``: the text
    shown (and printed) to the participant; ``gaze_deg``: nominal camera-frame (pitch, yaw) degrees;
    ``point_mm``: a camera-frame point (screen targets), so the gaze can be recomputed from where
    the face really is; ``screen_xy``: the dot's place on the screen, 0..1 from the top-left."""

    name: str
    prompt: str
    gaze_deg: tuple[float, float]
    point_mm: tuple[float, float, float] | None = None
    screen_xy: tuple[float, float] | None = None

    def gaze_for_face(self, face_centre_mm: np.ndarray | None) -> np.ndarray:
        """(2,) radians: towards ``point_mm`` from this face position when both are known, else nominal."""
        if self.point_mm is not None and face_centre_mm is not None and np.all(np.isfinite(face_centre_mm)):
            return gaze_towards(np.asarray(self.point_mm), face_centre_mm)
        return np.radians(np.asarray(self.gaze_deg, dtype=np.float64))


@dataclass(frozen=True)
class Protocol:
    """One pass over ``targets``, ``dwell_s`` seconds each."""

    name: str
    targets: tuple[TrialTarget, ...]
    dwell_s: float

    @property
    def duration_s(self) -> float:
        return self.dwell_s * len(self.targets)

    def target_index_at(self, t_in_pass: float) -> int:
        return int(min(max(math.floor(t_in_pass / self.dwell_s), 0), len(self.targets) - 1))


def screen4_protocol(dwell_s: float = DEFAULT_DWELL_S, geometry: ScreenGeometry | None = None) -> Protocol:
    """The four corners of the screen: top-left, top-right, bottom-right, bottom-left (clockwise,
    as seen by the participant)."""
    geo = geometry or ScreenGeometry()
    face = geo.nominal_face_mm()
    targets = []
    for name, right, bottom, xy in (("top_left", False, False, (0.0, 0.0)), ("top_right", True, False, (1.0, 0.0)),
                                    ("bottom_right", True, True, (1.0, 1.0)), ("bottom_left", False, True, (0.0, 1.0))):
        point = geo.corner_point_mm(right, bottom)
        gaze = np.degrees(gaze_towards(point, face))
        targets.append(TrialTarget(name, f"look at the dot, {name.replace('_', ' ')} corner",
                                   (float(gaze[0]), float(gaze[1])), tuple(float(v) for v in point), xy))
    return Protocol("screen4", tuple(targets), _check_dwell(dwell_s))


def cabin_protocol(zone_map, dwell_s: float = DEFAULT_DWELL_S) -> Protocol:
    """Every zone of the cabin zone map that has a target point, in the map's order."""
    targets = tuple(TrialTarget(name, f"look at the {name.replace('_', ' ')}", (float(p), float(y)))
                    for name, (p, y) in zone_map.targets_deg().items())
    if not targets:
        raise ConfigError("cabin protocol: the zone map has no zone with a target_deg point")
    return Protocol("cabin", targets, _check_dwell(dwell_s))


def make_protocol(name: str, zone_map=None, dwell_s: float = DEFAULT_DWELL_S) -> Protocol:
    if name == "screen4":
        return screen4_protocol(dwell_s)
    if name == "cabin":
        if zone_map is None:
            from edge_app.zones import load_zone_map

            zone_map = load_zone_map(None)
        return cabin_protocol(zone_map, dwell_s)
    raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")


def _check_dwell(dwell_s: float) -> float:
    if not 0.5 <= dwell_s <= 120:
        raise ConfigError(f"--dwell-s {dwell_s} is outside 0.5..120 s")
    return float(dwell_s)


@dataclass(frozen=True)
class TrialPhase:
    """A named phase; ``trigger``: the participant wears the physical trigger during it."""

    name: str
    trigger: bool


def parse_phases(text: str) -> tuple[TrialPhase, ...]:
    """``"clean,trigger,clean"`` or with explicit names ``"baseline:clean,tape:trigger"``.

    Every phase is one pass of the protocol. Names must be unique: two passes of the same kind get
    a number (``clean``, ``trigger``, ``clean-2``).
    """
    phases: list[TrialPhase] = []
    seen: dict[str, int] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, kind = item.rpartition(":") if ":" in item else (item, "", item)
        if kind not in ("clean", "trigger"):
            raise ConfigError(f"--phases: {item!r}: each phase is clean or trigger (optionally NAME:clean / "
                              "NAME:trigger)")
        seen[name] = seen.get(name, 0) + 1
        unique = name if seen[name] == 1 else f"{name}-{seen[name]}"
        phases.append(TrialPhase(unique, kind == "trigger"))
    if not phases:
        raise ConfigError("--phases: no phase given; e.g. clean,trigger")
    return tuple(phases)


@dataclass(frozen=True)
class ScheduledStep:
    """What the schedule says at a time: phase index and phase, target index and target."""

    phase_index: int
    phase: TrialPhase
    target_index: int
    target: TrialTarget


class TrialSchedule:
    """``phases`` one after another, each a full pass of ``protocol``."""

    def __init__(self, protocol: Protocol, phases: tuple[TrialPhase, ...]) -> None:
        self.protocol, self.phases = protocol, tuple(phases)

    @property
    def duration_s(self) -> float:
        return self.protocol.duration_s * len(self.phases)

    def at(self, t_s: float) -> ScheduledStep:
        k = int(min(max(math.floor(t_s / self.protocol.duration_s), 0), len(self.phases) - 1))
        j = self.protocol.target_index_at(t_s - k * self.protocol.duration_s)
        return ScheduledStep(k, self.phases[k], j, self.protocol.targets[j])


def gaze_deg(pitchyaw_rad) -> tuple[float, float]:
    """(pitch, yaw) radians -> degrees as floats."""
    v = np.degrees(np.asarray(pitchyaw_rad, dtype=np.float64))
    return float(v[0]), float(v[1])

