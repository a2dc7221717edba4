"""Attention state machine: eyes-off-road timers, visual time-sharing and escalating alerts.

Fed one observation per frame (timestamp, zone or no face, or an integrity block), it returns the
driver state and the alert. The rules, with their sources in :class:`AttentionSettings`:

* **long distraction**: eyes off the road continuously for ``warning_after_s`` (3 s, Euro NCAP's
  long-distraction definition) raises ``warning``; ``loud_after_s`` (5 s) ``loud``;
  ``critical_after_s`` (11 s) ``critical`` (the escalation shape of openpilot's driver monitoring:
  a pre-alert, an audible prompt, then the critical alert);
* **visual time-sharing**: ``time_sharing_total_s`` (10 s) or more off the road within any
  sliding ``time_sharing_window_s`` (30 s) window raises ``warning`` with reason
  ``time_sharing`` on the next off-road glance (Euro NCAP's visual attention time-sharing);
* **recovery**: the gaze must stay on the road for ``recovery_s`` before a glance counts as
  over; then the continuous timer and every alert reset;
* **no face** (or no valid gaze) is ``NO_FACE``, never ``ATTENTIVE``; with
  ``no_face_counts_as_off_road`` the unobserved time feeds the long-distraction timer, as an
  unobserved driver cannot be assumed to watch the road;
* **camera unavailable**: a frame too dark for any face to be found (no light, a covered lens) says
  nothing about the driver: it neither feeds nor resets the off-road timers, and after
  ``unavailable_warning_s`` of it a ``warning`` with reason ``monitoring_unavailable`` tells the driver
  that monitoring is off (never ``eyes_off_road``);
* **blocked**: a model the integrity check blocked gives ``BLOCKED`` with its reason, and never
  an alarm (an untrusted model may neither raise nor suppress one).

Times are seconds of the frames' own timestamps. States: ``NO_FACE``, ``ATTENTIVE`` (eyes on the
road, no alert), ``DISTRACTED`` (eyes off the road, or an alert not yet recovered from),
``BLOCKED``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The alert reason that says monitoring is off because the camera sees too little.
MONITORING_UNAVAILABLE = "monitoring_unavailable"


class AttentionState(StrEnum):
    NO_FACE = "NO_FACE"
    ATTENTIVE = "ATTENTIVE"
    DISTRACTED = "DISTRACTED"
    BLOCKED = "BLOCKED"


class AlertLevel(IntEnum):
    NONE = 0
    WARNING = 1
    LOUD = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> AlertLevel:
        return cls[label.upper()]


class AttentionSettings(BaseModel):
    """Every threshold of the attention logic, seconds, with where the number comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Euro NCAP Assessment Protocol - Safety Assist, driver state monitoring (2023): "long
    # distraction" is the driver looking away from the forward road for 3 s or more.
    warning_after_s: float = Field(3.0, gt=0, le=60)
    # openpilot driver monitoring escalates from a visual pre-alert to an audible prompt and then a
    # critical alert; we keep that shape at 3 s / 5 s / 11 s of continuous eyes off the road.
    loud_after_s: float = Field(5.0, gt=0, le=120)
    critical_after_s: float = Field(11.0, gt=0, le=300)
    # Euro NCAP "visual attention time sharing": repeated glances away adding up to 10 s or more
    # within a 30 s window.
    time_sharing_total_s: float = Field(10.0, gt=0, le=600)
    time_sharing_window_s: float = Field(30.0, gt=0, le=3600)
    # A return to the road shorter than this is not a real glance back (a fixation lasts 200-400 ms;
    # single-frame zone flicker from model noise is far shorter), so it does not end the glance away.
    recovery_s: float = Field(0.5, ge=0, le=10)
    # An unobserved driver is not assumed to watch the road (openpilot also escalates when the face
    # is not seen); set false where the camera is known to lose the face often.
    no_face_counts_as_off_road: bool = True
    # A gap between frames longer than this (a stalled source) is not counted as looking anywhere.
    max_frame_gap_s: float = Field(1.0, gt=0, le=60)
    # Euro NCAP asks that the driver be told when driver monitoring is not available (a covered or
    # blinded camera); we tell after as long as a long distraction takes.
    unavailable_warning_s: float = Field(3.0, gt=0, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> AttentionSettings:
        if not self.warning_after_s < self.loud_after_s < self.critical_after_s:
            raise ValueError("need warning_after_s < loud_after_s < critical_after_s, got "
                             f"{self.warning_after_s:g}, {self.loud_after_s:g}, {self.critical_after_s:g}")
        if self.time_sharing_total_s >= self.time_sharing_window_s:
            raise ValueError(f"time_sharing_total_s ({self.time_sharing_total_s:g}) must be shorter than "
                             f"time_sharing_window_s ({self.time_sharing_window_s:g})")
        return self


@dataclass(frozen=True)
class AttentionOutput:
    """The attention result of one frame.

    ``alert_reason``: ``"eyes_off_road"``, ``"time_sharing"`` or None; ``reason``: why the state
    is what it is when it is NO_FACE or BLOCKED (None otherwise); ``eyes_off_road_s``: the
    continuous off-road time so far; ``off_road_in_window_s``: off-road time in the sliding window.
    """

    state: AttentionState
    alert: AlertLevel
    alert_reason: str | None
    reason: str | None
    eyes_off_road_s: float
    off_road_in_window_s: float


class AttentionMonitor:
    """Feed ``update`` once per frame, in timestamp order."""

    def __init__(self, settings: AttentionSettings | None = None) -> None:
        self.settings = settings or AttentionSettings()
        self.reset()

    def reset(self) -> None:
        self._last_t: float | None = None
        self._off_since_s = 0.0  # continuous eyes-off-road time
        self._on_road_s = 0.0  # continuous on-road time since the last off-road frame
        self._glance_active = False
        self._intervals: deque[tuple[float, float]] = deque()  # (start, end) of off-road time, for the window
        self._window_total = 0.0
        self._time_sharing = False
        self._unavailable_s = 0.0  # continuous time the camera showed too little to find a face

    def _window_add(self, start: float, end: float) -> None:
        if end <= start:
            return
        if self._intervals and abs(self._intervals[-1][1] - start) < 1e-9:
            prev_start, prev_end = self._intervals.pop()
            self._window_total -= prev_end - prev_start
            start = prev_start
        self._intervals.append((start, end))
        self._window_total += end - start

    def _window_trim(self, now: float) -> float:
        """Off-road seconds within (now - window, now]."""
        low = now - self.settings.time_sharing_window_s
        while self._intervals and self._intervals[0][1] <= low:
            s, e = self._intervals.popleft()
            self._window_total -= e - s
        clipped = 0.0
        if self._intervals and self._intervals[0][0] < low:
            clipped = low - self._intervals[0][0]
        return max(self._window_total - clipped, 0.0)

    def update(self, t_s: float, zone: str | None, on_road: bool, blocked_reason: str | None = None,
               no_face_reason: str = "no face found", camera_unavailable: bool = False) -> AttentionOutput:
        """One frame: ``zone`` is None when there is no face or no valid gaze (``no_face_reason``
        says which); ``on_road`` whether the zone is an on-road zone; ``blocked_reason`` set when the
        integrity check blocked the model (then nothing else matters); ``camera_unavailable``: no face
        because the camera sees too little (see the module docstring)."""
        s = self.settings
        if blocked_reason is not None:
            self.reset()
            return AttentionOutput(AttentionState.BLOCKED, AlertLevel.NONE, None, blocked_reason, 0.0, 0.0)
        dt = 0.0 if self._last_t is None else t_s - self._last_t
        if dt < 0 or dt > s.max_frame_gap_s:
            dt = 0.0  # a stalled or restarted source: the gap is not evidence of anything
        self._last_t = t_s
        observed = zone is not None
        if camera_unavailable and not observed:
            # Nothing is known about the driver: the glance timers hold their values.
            self._unavailable_s += dt
            late = self._unavailable_s >= s.unavailable_warning_s
            return AttentionOutput(AttentionState.NO_FACE, AlertLevel.WARNING if late else AlertLevel.NONE,
                                   MONITORING_UNAVAILABLE if late else None, no_face_reason,
                                   self._off_since_s if self._glance_active else 0.0, self._window_trim(t_s))
        self._unavailable_s = 0.0
        off_road = (not on_road) if observed else s.no_face_counts_as_off_road
        if off_road:
            self._off_since_s += dt
            self._on_road_s = 0.0
            self._glance_active = True
            if observed:
                self._window_add(t_s - dt, t_s)
        elif observed:
            self._on_road_s += dt
            if self._glance_active and self._on_road_s >= s.recovery_s:
                self._glance_active = False
                self._off_since_s = 0.0
                self._time_sharing = False
        window = self._window_trim(t_s)
        if off_road and observed and window >= s.time_sharing_total_s:
            self._time_sharing = True
        # Until recovery the off-road timer keeps its value (a short look back is not a reset).
        level = AlertLevel.NONE
        if self._glance_active:
            if self._off_since_s >= s.critical_after_s:
                level = AlertLevel.CRITICAL
            elif self._off_since_s >= s.loud_after_s:
                level = AlertLevel.LOUD
            elif self._off_since_s >= s.warning_after_s:
                level = AlertLevel.WARNING
        reason = "eyes_off_road" if level > AlertLevel.NONE else None
        if self._time_sharing and level == AlertLevel.NONE:
            level, reason = AlertLevel.WARNING, "time_sharing"
        if not observed:
            state = AttentionState.NO_FACE
        elif off_road or level > AlertLevel.NONE:
            state = AttentionState.DISTRACTED
        else:
            state = AttentionState.ATTENTIVE
        return AttentionOutput(state, level, reason, None if observed else no_face_reason,
                               self._off_since_s if self._glance_active else 0.0, window)
