"""The live trigger alarm: the model's gaze held against a model-free estimate, frame by frame.

A physical backdoor trigger appears at run time, after the start-up scan: the model's output then
collapses onto the attacker's target while the driver's eyes keep moving. :class:`GazeAnomalyMonitor`
compares the model's gaze with the model-free estimate of :mod:`edge_app.free_gaze`
(iris in the eye openings plus head pose, from the face mesh the app runs anyway) and raises the
``gaze_model_anomaly`` alert, with its evidence, when the two part for longer than
``alarm_after_s``.

Only relative motion is compared, never absolute agreement: the estimate is a gain and an offset
away from any model, and both change with glasses, light and the person. Both gazes are compared
in the **normalised camera frame**, the model's own output frame (:mod:`edge_app.normalisation`;
the estimate is turned into it with the frame's ``R_n``): there a collapsed output stands still,
whereas de-normalising it would move it with the head. Over a sliding window of ``window_s``
seconds of frames that have both gazes (degrees):

* each track's **dispersion**: RMS distance from its own window mean (``model_dispersion_deg``,
  ``free_dispersion_deg``) and the **correlation** of the two de-meaned tracks (sum of dot products
  over both RMS sizes);
* a window in which either track moved by ``min_motion_deg`` RMS (and by ``noise_factor`` times
  its median frame-to-frame jitter) is evidence. It is **parted** when the model moved at most
  ``still_share`` of what the eyes moved (a collapse: the model stays put while the eyes move),
  when the eyes moved at most ``still_share`` of what the model moved (the output jumped, the eyes
  did not), or when both moved and their correlation is ``apart_corr`` or below (opposite ways);
  it is **agreeing** when the model moved at least ``follow_share`` of what the eyes moved, both
  moved by half the motion needed, and the correlation is ``agree_corr`` or above; a window that
  is neither while the displacement (below) is ``start_offset_deg`` or more is parted too (the
  model moves, but off the eyes' track: a partial collapse); else, or with too few frames, it is
  no evidence. These tests use the estimate as it is, without the fitted gains below: a benign
  model follows at least ~0.35 of it on every axis, a collapsed one at most ~0.25. The
  **unexplained share** (RMS of the difference of the de-meaned tracks over the larger
  dispersion: ~0.2 when the model follows the eyes, 1 for a collapse) is reported with the
  evidence.

A collapse is then quiet: model and eyes are both still until the next glance. What keeps a parting
going is the **displacement**: the median of (model - estimate) over the latest ``CURRENT_S`` (0.2)
seconds, against a reference learnt on agreeing windows (before the first, against the window's
older half). A collapse onto a target shifts it by the distance to the target and it stays
shifted; a model that follows the eyes keeps it; a glitch that is over takes it back. So a parting
starts on a parted window whose displacement is still there (``min_motion_deg`` or more), and goes
on while that holds or while the displacement stays ``offset_deg`` or more from the reference.
An agreeing window ends it; windows without evidence neither add to it nor end it (they forget it
over ``forget_s``). After ``alarm_after_s`` of parting the alert is raised, and it lasts until the
model has shown it follows the eyes again: ``clear_after_s`` without parting or displacement, with
at least one agreeing window in it.

Per-session fit (``fit_gain``): the estimate's per-axis gain against this model (a weak model
follows vertical eye movements at a fraction of their size), which the offsets use, is learnt on
agreeing windows only, and not while the alarm is raised, so the fit never sees a collapse (a
parted window is never an agreeing one, nor is a model following at under ``follow_share``); within ``gain_range``, with time constant ``fit_time_s`` of agreeing evidence; the
offset reference the same way. A frame whose face centre jumped by ``max_face_jump_mm`` (another
person in view) starts the window and the fit afresh.

The face mesh's first frames of a face are a detection, not yet a track: its landmarks (and the
head pose and iris offsets from them) jump as tracking takes over, by up to 15 deg of estimate
with the lower face covered. The first ``settle_s`` seconds of a face (after no face, or a face
jump) give no evidence.

On a near-infrared camera's grey image the face mesh's iris points can stay at their prior while
the eyes move (on the synthetic night drives the estimate missed whole glances the model followed):
there a parted window counts only after the estimate has agreed with the model at least once since
the face appeared, and only when it is the estimate that moved while the model stayed (a collapse),
never the model moving while the estimate stayed (``agree_first_infrared``). The price: a trigger
worn from a night drive's first frame, before any agreement, and a trigger that makes the output
jump while the eyes rest, are not caught by this alarm at night.

The estimate averages two measurements of one gaze, each eye's iris in its own opening, and the
face mesh can fail one eye at a time (an iris point left at its prior on a grey image, thrown across
the eye for a frame, held up by a lowered lid). Three checks use that (measured on recorded drives
with ``benchmarks/anomaly_replay.py``):

* a frame whose irises aim the eyes more than ``max_vergence_deg`` apart gives no estimate
  (:func:`~edge_app.free_gaze.vergence_deg`, kind ``apart``: eyes fixing one point differ by a few
  degrees of vergence plus the face's own offset);
* a window in which either eye moved (half the motion needed) but their unshared motion exceeds
  ``max_binocular_share`` of their shared motion (1: as much as if each moved on its own) is no
  evidence ("the two eyes moved apart");
* a track counts as still only when it was still over the window and the ``track_lag_s`` before
  it: the face mesh's points can reach the end of a glance a frame or two after the model does,
  and, on a masked face, drift on for half a second; judged frame-exact, the window after the
  model stopped read as the model staying while the eyes moved;
* a window is not "off the eyes' track" when the model moved at least as far as the estimate along
  the estimate's direction: an estimate that under-read a large glance (a lid over a lowered iris
  reads a 27-deg downward glance as 5) is not a model that lags the eyes, as a collapsed one does.

Frames without a model gaze or with eyes not visible (:class:`~edge_app.free_gaze.FreeGaze`) give no
evidence. Times are seconds of the frames' own timestamps; angles degrees unless named ``_rad``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from edge_app.anomaly_window import STILL_MODEL, MotionWindow, WindowStats
from securegaze.validation import StrictModel

#: The alert's name in the JSON lines, the overlay and the degraded-mode reason.
ALERT_NAME = "gaze_model_anomaly"

class AnomalySettings(StrictModel):
    """The live trigger alarm's settings (``anomaly:`` in the config); reasons for each default in
    ``calibration/edge_default.yaml``."""

    enabled: bool = True
    window_s: float = Field(1.0, gt=0.1, le=10)
    min_motion_deg: float = Field(4.0, gt=0, le=45)
    noise_factor: float = Field(3.0, ge=0, le=20)
    still_share: float = Field(0.2, gt=0, lt=1)
    follow_share: float = Field(0.3, gt=0, le=1)
    agree_corr: float = Field(0.5, ge=-1, le=1)
    apart_corr: float = Field(-0.3, ge=-1, le=1)
    offset_deg: float = Field(12.0, gt=0, le=90)
    start_offset_deg: float = Field(20.0, gt=0, le=90)
    alarm_after_s: float = Field(1.0, ge=0, le=60)
    clear_after_s: float = Field(2.0, ge=0, le=600)
    forget_s: float = Field(10.0, gt=0, le=3600)
    min_window_frames: int = Field(4, ge=3, le=1000)
    fit_gain: bool = True
    gain_range: tuple[float, float] = (0.25, 4.0)
    fit_time_s: float = Field(3.0, gt=0, le=3600)
    max_face_jump_mm: float = Field(150.0, gt=0, le=5000)
    settle_s: float = Field(0.3, ge=0, le=10)
    agree_first_infrared: bool = True
    iris_gain_u: float = Field(0.3, gt=0.05, le=1)
    iris_gain_v: float = Field(0.2, gt=0.05, le=1)
    max_vergence_deg: float = Field(45.0, gt=0, le=180)
    max_binocular_share: float = Field(1.0, gt=0, le=10)
    track_lag_s: float = Field(0.2, ge=0, le=2)

    @model_validator(mode="after")
    def _ordered(self) -> AnomalySettings:
        if not self.still_share <= self.follow_share:
            raise ValueError(f"need still_share <= follow_share, got {self.still_share:g} and {self.follow_share:g}")
        if not self.offset_deg <= self.start_offset_deg:
            raise ValueError(f"need offset_deg <= start_offset_deg, got {self.offset_deg:g} and "
                             f"{self.start_offset_deg:g}")
        if not self.apart_corr < self.agree_corr:
            raise ValueError(f"need apart_corr < agree_corr, got {self.apart_corr:g} and {self.agree_corr:g}")
        low, high = self.gain_range
        if not 0 < low <= 1 <= high:
            raise ValueError(f"gain_range must hold 1 with a positive lower end, got {list(self.gain_range)}")
        return self


@dataclass(frozen=True)
class AnomalyOutput:
    """The monitor's result for one frame. ``state``: ``off`` | ``no_evidence`` | ``agree`` |
    ``parted`` (parting, not yet for ``alarm_after_s``) | ``alarm``; ``alert``: ``gaze_model_anomaly``
    while the alarm lasts, else None; ``evidence``: the numbers behind a parting or an alarm;
    ``eyes``: why the model-free estimate is missing on this frame (None when it is there);
    ``untrusted_reason``: while the alarm lasts, one line saying why the gaze is not to be trusted
    (degraded mode's reason), fixed when the alarm is raised."""

    state: str
    alert: str | None
    evidence: dict[str, Any] | None
    eyes: str | None = None
    untrusted_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "alert": self.alert}
        if self.evidence is not None:
            out["evidence"] = self.evidence
        if self.eyes is not None:
            out["eyes"] = self.eyes
        return out


def alarm_reason(w: WindowStats | None, t_s: float) -> str:
    """The degraded-mode reason of an alarm raised at ``t_s`` on the parted window ``w``."""
    if w is None or w.kind is None:
        return f"{ALERT_NAME} since {t_s:.1f} s: the model's gaze parted from the eyes' movement"
    return (f"{ALERT_NAME} since {t_s:.1f} s: {w.kind} (model {w.model_dispersion_deg:.1f} deg, eyes "
            f"{w.free_dispersion_deg:.1f} deg RMS in {w.span_s:.1f} s, correlation {w.correlation:.2f})")


def _round(v: float | None, digits: int = 2):
    return None if v is None or not math.isfinite(v) else round(float(v), digits)


class GazeAnomalyMonitor:
    """Feed ``update`` once per frame in timestamp order (see the module docstring)."""

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self.settings = settings or AnomalySettings()
        self.alarms_raised = 0
        self.alarm_frames = 0
        self.reset()

    def reset(self) -> None:
        """Forget the window, the fit and any parting (a new person, a new session)."""
        self._window = MotionWindow(self.settings)
        self._gain = np.ones(2)
        self._offset_ref: np.ndarray | None = None
        self._last_t: float | None = None
        self._last_centre: np.ndarray | None = None
        self._face_since: float | None = None  # when the current face appeared (settle_s)
        self._ever_agreed = False  # an agreeing window since the reset (agree_first_infrared)
        self._parted_s = 0.0
        self._parted_since: float | None = None
        self._parting_ref: np.ndarray | None = None
        self._peak: WindowStats | None = None
        self._alarm = False
        self._alarm_since: float | None = None
        self._alarm_parting: tuple[WindowStats | None, float, float | None] = (None, 0.0, None)
        self._alarm_reason: str | None = None
        self._calm_s = 0.0
        self._calm_agreed = False

    # -- the window ---------------------------------------------------------------------------------
    def window_stats(self) -> WindowStats | None:
        """The current window's comparison (:meth:`MotionWindow.stats`), or None with too few frames."""
        return self._window.stats(self._gain, self._offset_ref)

    def _learn(self, dt: float) -> None:
        """Update the per-axis gain and the offset reference from the current (agreeing) window."""
        s = self.settings
        m, f = self._window.tracks()
        rate = min(dt / s.fit_time_s, 1.0)
        if s.fit_gain:
            dm, df = m - m.mean(axis=0), f - f.mean(axis=0)
            for k in range(2):
                var = float(np.sum(df[:, k] ** 2))
                if var >= len(f) * (0.5 * s.min_motion_deg) ** 2:  # this axis moved enough to measure it
                    slope = float(np.sum(dm[:, k] * df[:, k])) / var
                    if slope > 0:
                        slope = min(max(slope, s.gain_range[0]), s.gain_range[1])
                        self._gain[k] = math.exp(math.log(self._gain[k]) + rate * (math.log(slope) -
                                                                                   math.log(self._gain[k])))
        offset = m.mean(axis=0) - (f * self._gain).mean(axis=0)
        self._offset_ref = offset if self._offset_ref is None else self._offset_ref + rate * (offset - self._offset_ref)

    # -- one frame -----------------------------------------------------------------------------------
    def update(self, t_s: float, model_gaze_rad: np.ndarray | None, free_gaze_rad: np.ndarray | None,
               face_centre_mm: np.ndarray | None = None, eyes_reason: str | None = None,
               infrared: bool = False, eyes_deg: np.ndarray | None = None) -> AnomalyOutput:
        """One frame: the model's gaze and the model-free estimate, (pitch, yaw) radians in one
        frame (the pipeline gives both in the normalised camera frame), either None when missing;
        ``face_centre_mm`` (3,) for the person-change check; ``eyes_reason``: why the estimate is
        missing (reported); ``infrared``: the frame is a near-infrared camera's (grey), where a
        parting counts only once the estimate has agreed with the model (``agree_first_infrared``)."""
        s = self.settings
        if not s.enabled:
            return AnomalyOutput("off", None, None)
        dt = 0.0 if self._last_t is None else min(max(t_s - self._last_t, 0.0), s.window_s)
        self._last_t = t_s
        if face_centre_mm is not None and self._last_centre is not None and \
                float(np.linalg.norm(np.asarray(face_centre_mm) - self._last_centre)) > s.max_face_jump_mm:
            alarm, raised = self._alarm, self.alarms_raised
            self.reset()  # another face: a new comparison (an alarm in progress stays until cleared)
            self._alarm, self.alarms_raised, self._last_t = alarm, raised, t_s
        if face_centre_mm is not None:
            self._last_centre = np.asarray(face_centre_mm, dtype=np.float64)
            self._face_since = t_s if self._face_since is None else self._face_since
        else:
            self._face_since = None
        settled = self._face_since is None or t_s - self._face_since >= s.settle_s
        stats = None
        if model_gaze_rad is not None and free_gaze_rad is not None and settled:
            self._window.add(t_s, np.degrees(np.asarray(model_gaze_rad, dtype=np.float64)),
                             np.degrees(np.asarray(free_gaze_rad, dtype=np.float64)),
                             None if eyes_deg is None else np.asarray(eyes_deg, dtype=np.float64))
            stats = self.window_stats()
        verdict = stats.verdict if stats is not None else "none"
        if verdict == "agree":
            self._ever_agreed = True
        elif verdict == "parted" and infrared and s.agree_first_infrared and (
                not self._ever_agreed or stats.kind != STILL_MODEL):
            # An estimate not yet seen to follow this face's eyes is no evidence against the model;
            # nor, on infrared, is an estimate that stayed while the model moved (the iris points'
            # failure there is to stay put): only the estimate moving while the model stays counts.
            verdict = "none"
        displaced = stats.offset_change_deg if stats is not None else 0.0
        # Parted now: a parted window whose displacement is still there (a glitch that is over
        # leaves parted windows behind it, but no displacement); or a parting under way whose
        # displacement stays beyond offset_deg from the agreeing reference (before the first
        # agreeing window: from the offset just before the parting started).
        parted_now = verdict == "parted" and displaced >= s.min_motion_deg
        held = self._offset_ref if self._offset_ref is not None else self._parting_ref
        sustained = (self._parted_s > 0 and stats is not None and held is not None
                     and float(np.hypot(*(stats.offset_now - held))) >= s.offset_deg)
        if parted_now or (sustained and verdict != "agree"):
            if self._parted_s == 0:  # a parting starts on a parted window
                self._parted_s, self._parting_ref = 1e-9, stats.offset_before
            else:
                self._parted_s += dt
            self._parted_since = t_s if self._parted_since is None else self._parted_since
            if verdict == "parted" and (self._peak is None or stats.unexplained_share >= self._peak.unexplained_share):
                self._peak = stats
            self._calm_s, self._calm_agreed = 0.0, False
        elif verdict == "agree":
            self._parted_s, self._parted_since, self._peak = 0.0, None, None
            self._calm_s += dt
            self._calm_agreed = True
            if not self._alarm:
                self._learn(dt)
        else:  # no evidence: the parting is slowly forgotten, the calm clock runs on
            self._parted_s = max(self._parted_s - dt * self._parted_s / s.forget_s, 0.0) if self._parted_s else 0.0
            if self._parted_s < 1e-6:
                self._parted_s, self._parted_since, self._peak = 0.0, None, None
            if displaced < s.offset_deg:
                self._calm_s += dt
        if not self._alarm and self._parted_s >= max(s.alarm_after_s, 1e-9):
            self._alarm, self._alarm_since = True, t_s
            self._alarm_parting = (self._peak or stats, self._parted_s, self._parted_since)
            self._alarm_reason = alarm_reason(self._alarm_parting[0], t_s)
            self.alarms_raised += 1
        elif self._alarm and self._parted_s == 0.0 and self._calm_agreed and self._calm_s >= s.clear_after_s:
            self._alarm, self._alarm_since = False, None
        if self._alarm:
            self.alarm_frames += 1
        state = "alarm" if self._alarm else "parted" if self._parted_s > 0 else (
            "agree" if verdict == "agree" else "no_evidence")
        evidence = None
        if self._alarm or self._parted_s > 0:
            evidence = self._evidence(stats, t_s)
        eyes = eyes_reason if free_gaze_rad is None else None
        return AnomalyOutput(state, ALERT_NAME if self._alarm else None, evidence, eyes,
                             self._alarm_reason if self._alarm else None)

    def _evidence(self, stats: WindowStats | None, t_s: float) -> dict[str, Any]:
        """The numbers behind a parting: its strongest parted window and how long it has lasted;
        while the alarm lasts, those of the parting that raised it (unless a longer one is under way)."""
        w, parted_s, since = self._peak or stats, self._parted_s, self._parted_since
        if self._alarm and self._alarm_parting[1] >= parted_s:
            w, parted_s, since = self._alarm_parting
        out: dict[str, Any] = {
            "window_s": self.settings.window_s,
            "parted_for_s": _round(parted_s, 3),
            "parted_since_s": _round(since, 3),
            "alarm_since_s": _round(self._alarm_since, 3),
            "kind": w.kind if w is not None else None,
        }
        if w is not None:
            out.update(frames=w.frames, model_dispersion_deg=_round(w.model_dispersion_deg),
                       free_dispersion_deg=_round(w.free_dispersion_deg),
                       unexplained_share=_round(w.unexplained_share, 3), correlation=_round(w.correlation, 3),
                       motion_needed_deg=_round(w.motion_needed_deg))
        if stats is not None:
            out["offset_change_deg"] = _round(stats.offset_change_deg)
        out["gain"] = [_round(g, 3) for g in self._gain]
        return out


class AnomalyStage:
    """The pipeline stage: the monitor fed from a frame record. ``process(rec)`` reads
    ``rec.free_gaze`` (the model-free estimate the pipeline made for the frame's face, with
    :class:`~edge_app.free_gaze.FreeGazeEstimator`), ``rec.head_pose``, ``rec.normalisation`` and
    ``rec.gaze_normalised``, and returns the :class:`AnomalyOutput`; a frame without a face, a pose
    or a model gaze gives no evidence."""

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self.monitor = GazeAnomalyMonitor(settings or AnomalySettings())

    def inputs(self, rec) -> dict[str, Any]:
        """The keyword arguments of :meth:`GazeAnomalyMonitor.update` for frame record ``rec``: what
        the monitor sees of the frame. A ``--trace`` of the conditions benchmark stores them, so that
        recorded drives can be replayed through other settings (``benchmarks/anomaly_replay.py``)."""
        t = rec.frame.timestamp_s
        if not self.monitor.settings.enabled:
            return {"t_s": t, "model_gaze_rad": None, "free_gaze_rad": None}
        free = rec.free_gaze
        if free is None or rec.head_pose is None or rec.normalisation is None or rec.gaze_normalised is None:
            return {"t_s": t, "model_gaze_rad": None, "free_gaze_rad": None, "eyes_reason": "no face or no model gaze"}
        free_norm = rec.normalisation.gaze_to_normalised(free.gaze) if free.visible else None
        return {"t_s": t, "model_gaze_rad": rec.gaze_normalised, "free_gaze_rad": free_norm,
                "face_centre_mm": rec.head_pose.face_centre_mm, "eyes_reason": free.reason, "infrared": free.mono,
                "eyes_deg": free.eyes_deg}

    def process(self, rec) -> AnomalyOutput:
        return self.monitor.update(**self.inputs(rec))
