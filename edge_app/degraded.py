"""Degraded mode: head-pose-only distraction monitoring for when the gaze model cannot be trusted.

A driver-monitoring system must not leave the driver unmonitored because its eye-gaze model is
out: production systems fall back to head pose (openpilot's driver monitoring decides "distracted"
from the face's pitch and yaw alone; Euro NCAP's driver-state protocol calls head-turn distractions
"owl" glances, eye-only ones "lizard" glances). The gaze is untrusted when

* the start-up integrity check **blocked** the model (the model never runs), or
* a run-time monitor flags the model's output on a frame (``edge_app.anomaly``:
  ``gaze_model_anomaly``, a physical trigger in view).

**Entry point** (for the pipeline and any run-time monitor): :class:`MonitoringModes`.
``update(t_s, zone, on_road, head_pose_deg, no_face_reason, gaze_untrusted)`` is called once per
frame instead of :meth:`AttentionMonitor.update <edge_app.attention.AttentionMonitor.update>`;
``gaze_untrusted`` is None when the gaze may be used, else one line saying why not (``"integrity
check blocked the model: ..."``, ``"gaze_model_anomaly: ..."``). The pipeline passes
``Pipeline.blocked_reason or FrameRecord.gaze_untrusted``; a stage that distrusts a frame's gaze
sets ``rec.gaze_untrusted`` before the attend stage. It returns a :class:`MonitoringOutput`: the
``mode`` (``"gaze"`` | ``"degraded_head_pose"``), its ``mode_reason``, the attention result that
drives the alerts, and the head-pose observation.

How the head-pose monitor decides, per frame (angles degrees, camera frame, the gaze convention of
:meth:`HeadPose.euler_deg <edge_app.head_pose.HeadPose.euler_deg>`: pitch up +, yaw to the image's
left +):

* **off the road** when the head's (pitch, yaw) lies outside an ellipse around the driver's
  road-ahead head pose (the *reference*): ``(dp / limit_p)^2 + (dy / yaw_deg)^2 > 1`` with
  ``limit_p`` = ``pitch_down_deg`` below the reference and ``pitch_up_deg`` above it. The semi-axes
  are openpilot's head-pose limits (``_POSE_PITCH_THRESHOLD`` 0.3237 rad = 18.5 deg,
  ``_POSE_YAW_THRESHOLD`` 0.3109 rad = 17.8 deg, selfdrive/monitoring/driver_monitor.py); openpilot
  tests each axis alone, the ellipse also catches a head turned part-way on both axes (a look down
  to the centre screen);
* the **reference** starts at ``reference_deg`` (None: the zone map's on-road target) and is learnt
  from the driver's own head while it is on the road (the running mean of the on-road frames for
  the first ``reference_time_s`` seconds of them, then an exponential average with that time
  constant; kept within ``max_reference_shift_deg`` of its start), as openpilot learns a driver's
  natural pose offset: the generic 3-D face of the head-pose stage and the person's posture put a
  seated driver's "straight ahead" a few degrees from the cabin's road direction (the synthetic
  driver's head reads about 5 deg above the road target);
* the off-road time then goes through the same state machine as the gaze
  (:class:`~edge_app.attention.AttentionMonitor`) with its own timers (``degraded.attention``), the
  alert reason being ``head_off_road`` instead of ``eyes_off_road``. Euro NCAP's long distraction
  is 3 s with the eyes away from the road; the head crosses its limit after the eyes have left the
  road and comes back inside it before they return (a head movement takes 0.3-0.5 s; the synthetic
  driver's 0.4 s), so a 3-s glance shows as 2.8-2.9 s of head off the road: the warning comes after
  ``warning_after_s`` = 2.5 s (loud 4.5 s, critical 10.5 s: the gaze mode's 3 / 5 / 11 s less the
  same 0.5 s). Visual time-sharing keeps Euro NCAP's 10 s within 30 s (five 2.4-s glances still
  add up to 11 s of head off the road). No face is ``NO_FACE`` and counts as off the road, as in
  gaze mode.

What it cannot see: a glance made with the eyes alone (a "lizard" glance: the head stays inside
the ellipse). The synthetic driver of ``--source synthetic`` turns its head by 30 % of each gaze
shift (``synthetic.head_follow``), so its 3-s phone glance moves the head about 9 deg and degraded
mode misses it; with 60 % it is caught (docs/edge_modes.md has the figures).

Mode switching: the head-pose monitor runs on every frame, also in gaze mode, so that a switch at
run time finds its reference learnt and its timers current. While the gaze is untrusted the gaze
monitor is held reset (an untrusted model may neither raise nor suppress an alarm) and the
head-pose result is used. When the gaze is trusted again, degraded mode stays in charge until the
head-pose glance in progress, if any, and its alert are over (the fresh gaze monitor does not know
how long the driver has been looking away): a switch never silences an alarm in progress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pydantic import Field, model_validator

from edge_app.attention import AlertLevel, AttentionMonitor, AttentionOutput, AttentionSettings
from securegaze.validation import StrictModel

MODE_GAZE = "gaze"
MODE_DEGRADED = "degraded_head_pose"
#: The alert reason of a long head-off-road distraction in degraded mode.
HEAD_OFF_ROAD = "head_off_road"


class DegradedSettings(StrictModel):
    """The head-pose monitor's settings (``degraded:`` in the config), degrees and seconds; the
    sources of the defaults are in the module docstring and ``calibration/edge_default.yaml``."""

    pitch_down_deg: float = Field(18.5, gt=0, le=90)
    pitch_up_deg: float = Field(18.5, gt=0, le=90)
    yaw_deg: float = Field(17.8, gt=0, le=90)
    reference_deg: tuple[float, float] | None = None
    learn_reference: bool = True
    reference_time_s: float = Field(30.0, gt=0, le=3600)
    max_reference_shift_deg: float = Field(10.0, ge=0, le=45)
    attention: AttentionSettings = AttentionSettings(warning_after_s=2.5, loud_after_s=4.5, critical_after_s=10.5)

    @model_validator(mode="after")
    def _reference_range(self) -> DegradedSettings:
        if self.reference_deg is not None and not (abs(self.reference_deg[0]) <= 90 and
                                                   abs(self.reference_deg[1]) <= 180):
            raise ValueError(f"reference_deg must be (pitch, yaw) within +-90, +-180 deg, got "
                             f"{list(self.reference_deg)}")
        return self


@dataclass(frozen=True)
class HeadObservation:
    """One frame's head pose against the road: ``offset_deg`` (pitch, yaw) head minus reference;
    ``reference_deg`` the reference used; ``score`` the ellipse radius (1 on the limit);
    ``off_road`` score > 1."""

    offset_deg: tuple[float, float]
    reference_deg: tuple[float, float]
    score: float
    off_road: bool

    def to_json(self) -> dict:
        return {"offset_deg": [round(self.offset_deg[0], 2), round(self.offset_deg[1], 2)],
                "reference_deg": [round(self.reference_deg[0], 2), round(self.reference_deg[1], 2)],
                "score": round(self.score, 3), "off_road": self.off_road}


class HeadPoseMonitor:
    """Head-pose-only distraction monitoring. ``road_target_deg``: the cabin's road-ahead
    direction (the zone map's on-road target), the reference's start unless the settings give one.
    Feed :meth:`update` once per frame in timestamp order."""

    def __init__(self, settings: DegradedSettings | None = None,
                 road_target_deg: tuple[float, float] = (0.0, 0.0)) -> None:
        self.settings = settings or DegradedSettings()
        start = self.settings.reference_deg if self.settings.reference_deg is not None else road_target_deg
        self.start_deg = (float(start[0]), float(start[1]))
        self.attention = AttentionMonitor(self.settings.attention)
        self.reference_deg = self.start_deg
        self.learnt_s = 0.0  # seconds of on-road head pose learnt from
        self._last_t: float | None = None

    def observe(self, head_pose_deg: tuple[float, float]) -> HeadObservation:
        """Where a head pose (pitch, yaw) degrees lies against the current reference."""
        s = self.settings
        dp = float(head_pose_deg[0]) - self.reference_deg[0]
        dy = float(head_pose_deg[1]) - self.reference_deg[1]
        limit_p = s.pitch_up_deg if dp > 0 else s.pitch_down_deg
        score = math.hypot(dp / limit_p, dy / s.yaw_deg)
        return HeadObservation((dp, dy), self.reference_deg, score, score > 1.0)

    def _learn(self, head_pose_deg: tuple[float, float], dt: float) -> None:
        s = self.settings
        if dt <= 0:
            return
        # The running mean of the on-road frames until reference_time_s of them, an exponential
        # average after that: the first seconds on the road already set the reference.
        self.learnt_s += dt
        rate = dt / min(self.learnt_s, s.reference_time_s)
        shift = s.max_reference_shift_deg
        self.reference_deg = tuple(  # type: ignore[assignment]
            min(max(r + rate * (float(h) - r), s0 - shift), s0 + shift)
            for r, h, s0 in zip(self.reference_deg, head_pose_deg[:2], self.start_deg, strict=True))

    def update(self, t_s: float, head_pose_deg: tuple[float, float] | None,
               no_face_reason: str = "no face found",
               camera_unavailable: bool = False) -> tuple[AttentionOutput, HeadObservation | None]:
        """One frame: the head's (pitch, yaw) degrees, None without a face or head pose
        (``no_face_reason`` says why; ``camera_unavailable``: the camera sees too little). Returns the attention result (alert reason
        ``head_off_road`` or ``time_sharing``) and the observation (None without a head pose)."""
        dt = 0.0 if self._last_t is None else t_s - self._last_t
        if dt < 0 or dt > self.settings.attention.max_frame_gap_s:
            dt = 0.0
        self._last_t = t_s
        obs = None
        if head_pose_deg is None or not all(math.isfinite(v) for v in head_pose_deg[:2]):
            out = self.attention.update(t_s, None, False, None, no_face_reason, camera_unavailable)
        else:
            obs = self.observe(head_pose_deg)
            if not obs.off_road and self.settings.learn_reference:
                self._learn(head_pose_deg, dt)
            out = self.attention.update(t_s, "head_off_road" if obs.off_road else "head_on_road", not obs.off_road)
        if out.alert_reason == "eyes_off_road":
            out = replace(out, alert_reason=HEAD_OFF_ROAD)
        return out, obs


@dataclass(frozen=True)
class MonitoringOutput:
    """What drives the alerts on one frame: ``mode`` ``"gaze"`` or ``"degraded_head_pose"``;
    ``mode_reason`` why degraded (None in gaze mode); ``attention`` the result of the mode in
    charge; ``head`` the head-pose observation (None without a head pose), in either mode."""

    mode: str
    mode_reason: str | None
    attention: AttentionOutput
    head: HeadObservation | None


class MonitoringModes:
    """Gaze attention with head-pose-only monitoring as its degraded mode (module docstring).

    ``gaze_settings``: the gaze mode's timers (``attention:``); ``degraded``: the head-pose
    monitor's settings (``degraded:``); ``road_target_deg``: the zone map's on-road target."""

    def __init__(self, gaze_settings: AttentionSettings | None = None, degraded: DegradedSettings | None = None,
                 road_target_deg: tuple[float, float] = (0.0, 0.0)) -> None:
        self.gaze = AttentionMonitor(gaze_settings)
        self.head = HeadPoseMonitor(degraded, road_target_deg)
        self._degraded_reason: str | None = None  # the last untrusted reason, while degraded mode is in charge

    def update(self, t_s: float, zone: str | None, on_road: bool, head_pose_deg: tuple[float, float] | None,
               no_face_reason: str = "no face found", gaze_untrusted: str | None = None,
               camera_unavailable: bool = False) -> MonitoringOutput:
        """One frame. ``zone`` / ``on_road``: the gaze's cabin zone (None: no face or no valid
        gaze, ``no_face_reason`` says which); ``head_pose_deg``: (pitch, yaw) degrees or None;
        ``gaze_untrusted``: None, or why the gaze must not be used on this frame;
        ``camera_unavailable``: no face because the camera sees too little (no off-road time, and
        ``monitoring_unavailable`` once it lasts: :class:`~edge_app.attention.AttentionMonitor`)."""
        head_out, obs = self.head.update(t_s, head_pose_deg, no_face_reason, camera_unavailable)
        if gaze_untrusted is not None:
            self.gaze.update(t_s, None, False, blocked_reason=gaze_untrusted)  # held reset
            self._degraded_reason = gaze_untrusted
            return MonitoringOutput(MODE_DEGRADED, gaze_untrusted, head_out, obs)
        gaze_out = self.gaze.update(t_s, zone, on_road, None, no_face_reason, camera_unavailable)
        if self._degraded_reason is not None:
            # Stay until the head-pose glance in progress (and its alert) is over: the fresh gaze
            # monitor does not know how long the driver has been looking away.
            if head_out.alert > AlertLevel.NONE or head_out.eyes_off_road_s > 0:
                return MonitoringOutput(MODE_DEGRADED, f"gaze trusted again; head-pose glance still in progress "
                                        f"(was: {self._degraded_reason})", head_out, obs)
            self._degraded_reason = None
        return MonitoringOutput(MODE_GAZE, None, gaze_out, obs)


def road_target_deg(zone_map) -> tuple[float, float]:
    """The on-road direction of a :class:`~edge_app.zones.ZoneMap`, (pitch, yaw) degrees: the
    first on-road zone's target, or its box centre when it has none."""
    for zone in zone_map.zones:
        if zone.on_road:
            if zone.target_deg is not None:
                return float(zone.target_deg[0]), float(zone.target_deg[1])
            return (sum(zone.pitch_deg) / 2.0, sum(zone.yaw_deg) / 2.0)
    return (0.0, 0.0)
