"""The live trigger alarm's sliding window: the model's gaze and the model-free estimate over the
latest ``window_s`` seconds, and one window's comparison (:class:`WindowStats`).

:class:`MotionWindow` holds the frames with both gazes, the frames just before the window (for
``track_lag_s``) and the tracks' frame-to-frame jitter; :meth:`MotionWindow.stats` gives the
window's verdict. The rules, and what each setting means, are in :mod:`edge_app.anomaly`, which
owns the state that outlives a window (the fitted gain, the offset reference, the parting, the
alarm). Angles are degrees.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

#: The parted window of a collapse: the model's gaze stayed while the eyes moved.
STILL_MODEL = "model still while the eyes moved"
#: The latest seconds whose median offset (model - estimate) is the displacement "now": a fixation
#: lasts 0.2-0.4 s, and a one-frame glitch of either track is outvoted from 10 frames a second on.
CURRENT_S = 0.2


@dataclass(frozen=True)
class WindowStats:
    """One window's comparison (degrees): ``frames`` and ``span_s`` of frames with both gazes,
    the two dispersions, the unexplained share, the correlation of the de-meaned tracks, the
    displacement of the current offset from its reference (module docstring), the motion needed to
    count, and the verdict ``agree`` | ``parted`` | ``none`` with the kind of parting."""

    frames: int
    span_s: float
    model_dispersion_deg: float
    free_dispersion_deg: float
    unexplained_share: float
    correlation: float
    offset_change_deg: float | None
    motion_needed_deg: float
    verdict: str
    kind: str | None
    offset_now: np.ndarray | None = None
    offset_before: np.ndarray | None = None
    binocular_share: float = math.nan


def rms_spread(x: np.ndarray) -> float:
    """The RMS distance of the (N, 2) points ``x`` from their mean, degrees."""
    return float(np.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1))))


class MotionWindow:
    """The frames of the current window (see the module docstring); ``settings``: the alarm's
    :class:`~edge_app.anomaly.AnomalySettings`."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self._window: deque[tuple[float, np.ndarray, np.ndarray, np.ndarray | None]] = deque()
        self._lead: deque[tuple[float, np.ndarray, np.ndarray]] = deque()  # frames just out of the window
        self._jitter: deque[tuple[float, float]] = deque(maxlen=64)

    def tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """(frames, 2) model and estimate gazes of the window, degrees."""
        return np.array([w[1] for w in self._window]), np.array([w[2] for w in self._window])

    def add(self, t: float, model: np.ndarray, free: np.ndarray, eyes: np.ndarray | None) -> None:
        """One frame with both gazes (degrees) and the eyes' own angles (or None)."""
        if self._window:
            _, m0, f0, _ = self._window[-1]
            self._jitter.append((float(np.hypot(*(model - m0))), float(np.hypot(*(free - f0)))))
        self._window.append((t, model, free, eyes))
        while self._window and self._window[0][0] < t - self.settings.window_s:
            self._lead.append(self._window.popleft()[:3])
        while self._lead and self._lead[0][0] < t - self.settings.window_s - self.settings.track_lag_s:
            self._lead.popleft()

    def stats(self, gain: np.ndarray, offset_ref: np.ndarray | None) -> WindowStats | None:
        """The current window's comparison, or None with fewer than ``min_window_frames`` frames
        or frames spanning less than half the window."""
        s = self.settings
        if len(self._window) < s.min_window_frames:
            return None
        t = np.array([w[0] for w in self._window])
        span = float(t[-1] - t[0])
        if span < 0.5 * s.window_s - 1e-9:
            return None
        m = np.array([w[1] for w in self._window])
        raw = np.array([w[2] for w in self._window])
        binocular, eye_motion = self._binocular_share()
        f = raw * gain  # the estimate mapped onto this model's gains, for the offsets
        # The motion tests use the estimate as it is: a weak model follows at a fraction of it
        # (above still_share), a collapsed one does not, whatever gains agreement has taught.
        dm, df = m - m.mean(axis=0), raw - raw.mean(axis=0)
        sm, sf = rms_spread(m), rms_spread(raw)
        sr = rms_spread(m - raw)
        corr = float(np.mean(np.sum(dm * df, axis=1)) / (sm * sf)) if sm > 1e-9 and sf > 1e-9 else math.nan
        # The displacement now: the median offset of the latest CURRENT_S against the agreeing
        # reference (before any, against the window's older half: what the offset just was).
        offsets = m - f
        latest, older = t >= t[-1] - CURRENT_S, t <= t[-1] - 0.5 * s.window_s + 1e-9  # span >= half: never empty
        now = np.median(offsets[latest], axis=0)
        before = np.median(offsets[older], axis=0)
        offset = float(np.hypot(*(now - (offset_ref if offset_ref is not None else before))))
        jitter = np.median(np.array(self._jitter), axis=0) if len(self._jitter) >= 8 else np.zeros(2)
        needed = max(s.min_motion_deg, s.noise_factor * float(jitter.max()))
        motion = max(sm, sf)
        share = sr / motion if motion > 1e-9 else 0.0
        # A track is still when it was still over the window and the track_lag_s before it: the two
        # tracks need not reach the end of one movement on the same frame (the face mesh's points
        # can trail the image by a frame or two, more with the lower face masked).
        sm_lead, sf_lead = self._lead_dispersion(m, raw)
        verdict, kind = "none", None
        if motion >= needed and eye_motion >= 0.5 * needed and binocular > s.max_binocular_share:
            kind = "the two eyes moved apart"  # iris points that moved without the eyes: no evidence
        elif motion >= needed:
            if sm <= s.still_share * sf or sf <= s.still_share * sm:
                # One track still while the other moved, unless the still one had just finished the same
                # movement (it moved within track_lag_s before the window): then no evidence.
                if max(sm, sm_lead) <= s.still_share * sf:
                    verdict, kind = "parted", STILL_MODEL
                elif max(sf, sf_lead) <= s.still_share * sm:
                    verdict, kind = "parted", "model moved while the eyes stayed"
            elif min(sm, sf) >= needed and corr <= s.apart_corr:
                verdict, kind = "parted", "model and eyes moved apart"
            elif sm >= s.follow_share * sf and min(sm, sf) >= 0.5 * needed and corr >= s.agree_corr:
                verdict = "agree"
            elif offset >= s.start_offset_deg and offset_ref is not None and not self._model_went_further(
                    m, f, latest, older):
                verdict, kind = "parted", "model off the eyes' track"
        return WindowStats(len(self._window), span, sm, sf, share, corr, offset, needed, verdict, kind, now, before,
                           binocular)

    def _lead_dispersion(self, m: np.ndarray, raw: np.ndarray) -> tuple[float, float]:
        """The RMS dispersion of the model and of the estimate over the window together with the
        frames of the ``track_lag_s`` before it; 0 when there are none (the window's own then stand)."""
        if not self._lead:
            return 0.0, 0.0
        return (rms_spread(np.concatenate([np.array([w[1] for w in self._lead]), m])),
                rms_spread(np.concatenate([np.array([w[2] for w in self._lead]), raw])))

    @staticmethod
    def _model_went_further(m: np.ndarray, f: np.ndarray, latest: np.ndarray, older: np.ndarray) -> bool:
        """Whether, from the window's older half to its latest frames, the model moved at least as far
        as the (gain-mapped) estimate along the estimate's direction: the estimate under-read a large
        glance (an eyelid over a lowered iris, an iris near the eye's corner), which is no sign of a
        collapse, whose output lags the eyes or moves elsewhere."""
        dm = np.median(m[latest], axis=0) - np.median(m[older], axis=0)
        df = np.median(f[latest], axis=0) - np.median(f[older], axis=0)
        size = float(np.hypot(*df))
        return size > 1e-9 and float(dm @ df) / size >= size

    def _binocular_share(self) -> tuple[float, float]:
        """How much of the two irises' movement over the window was not shared: the RMS of the
        de-meaned difference of the eyes' own angles (eye in head) over twice the RMS of their
        de-meaned mean. 0 when the irises moved together, as eyes do; 1 when one iris point stayed
        while the other moved, or each moved on its own (a face mesh guessing where an iris it cannot
        see is); more when they moved opposite ways. With it, the larger of the two eyes' own RMS
        motions (degrees). NaN and 0 when a frame lacks them."""
        eyes = [w[3] for w in self._window]
        if any(e is None for e in eyes):
            return math.nan, 0.0
        e = np.array(eyes)  # (frames, eye, pitch/yaw)
        apart, together = rms_spread(e[:, 0] - e[:, 1]), rms_spread((e[:, 0] + e[:, 1]) / 2)
        each = max(rms_spread(e[:, 0]), rms_spread(e[:, 1]))
        return (apart / (2 * together) if together > 1e-9 else math.inf), each

