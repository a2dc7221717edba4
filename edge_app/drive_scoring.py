"""Scoring a synthetic drive: did each scripted glance raise the expected alert, and how far was the
gaze from the ground truth, per cabin zone. Beside the synthetic driver (edge_app/synthetic_driver.py),
used by ``edge-app run`` on ``--source synthetic``.

:class:`DriveScorer` takes the pipeline's frame records one by one and keeps memory fixed by the
drive (the number of scripted events and the drive's frame count), never growing with a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edge_app.synthetic_driver import oracle_gaze
from securegaze.geometry import angular_error_deg

#: How long after a checked glance ends its alert may still arrive, s: the return saccade, the One
#: Euro filter's lag and the recovery time all fall within it.
SETTLE_S = 1.0
#: The alert reasons of a long distraction: eyes off the road (gaze mode), head turned away from it
#: (degraded mode, edge_app/degraded.py).
LONG_DISTRACTION_REASONS = frozenset({"eyes_off_road", "head_off_road"})


@dataclass(frozen=True)
class DriveCheck:
    """One checked event of a script: consecutive phases with the same label and expectation.

    ``expected``: "none" (no alert at all), "warning" / "loud" / "critical" (the highest
    long-distraction level raised, eyes or head off the road, must be exactly that), or
    "time_sharing" (the time-sharing alert must be raised, and no long-distraction alert). ``observed_level`` and ``observed_reasons`` are
    what the frames of [start, end + SETTLE_S) showed; ``judged`` is False when the run stopped
    before the event ended (``--max-frames``), and ``passed`` is then False too.
    """

    label: str
    expected: str
    start_s: float
    end_s: float
    observed_level: str
    observed_reasons: tuple[str, ...]
    passed: bool
    judged: bool = True


def script_events(script, phase_starts) -> list[tuple[str, str, float, float]]:
    """(label, expected, start s, end s) of each checked event."""
    events: list[list] = []
    for k, phase in enumerate(script):
        if phase.expected_alert is None:
            continue
        start, end = float(phase_starts[k]), float(phase_starts[k]) + phase.duration_s
        if events and events[-1][0] == phase.name and events[-1][1] == phase.expected_alert and \
                abs(events[-1][3] - start) < 1e-9:
            events[-1][3] = end
        else:
            events.append([phase.name, phase.expected_alert, start, end])
    return [tuple(e) for e in events]


class DriveChecker:
    """:func:`check_drive` one frame at a time, in memory fixed by the script: per checked event
    only the highest alert level and the set of reasons seen in its window so far (an endless run
    keeps no per-frame observations). ``add(t, level, reason)`` per frame in time order."""

    def __init__(self, script, phase_starts) -> None:
        from edge_app.attention import AlertLevel

        self.events = script_events(script, phase_starts)
        self._top = [AlertLevel.NONE] * len(self.events)
        self._reasons: list[set[str]] = [set() for _ in self.events]
        self._seen = [False] * len(self.events)
        self.last_t = -1.0

    def add(self, t_s: float, level: str, reason: str | None) -> None:
        """One frame: source time s, alert level label, alert reason (None: no alert)."""
        from edge_app.attention import AlertLevel

        self.last_t = t_s
        for k, (_, _, start, end) in enumerate(self.events):
            if start <= t_s < end + SETTLE_S:
                self._seen[k] = True
                self._top[k] = max(self._top[k], AlertLevel.from_label(level))
                if reason:
                    self._reasons[k].add(reason)

    def results(self) -> list[DriveCheck]:
        from edge_app.attention import AlertLevel

        results = []
        for k, (label, expected, start, end) in enumerate(self.events):
            if self.last_t < end:
                results.append(DriveCheck(label, expected, start, end, "none", (), False, judged=False))
                continue
            top, reasons = self._top[k], tuple(sorted(self._reasons[k]))
            if expected == "none":
                passed = top == AlertLevel.NONE
            elif expected == "time_sharing":
                passed = "time_sharing" in reasons and not LONG_DISTRACTION_REASONS & set(reasons)
            else:
                passed = top == AlertLevel.from_label(expected) and bool(LONG_DISTRACTION_REASONS & set(reasons))
            results.append(DriveCheck(label, expected, start, end, top.label, reasons, self._seen[k] and passed))
        return results


def check_drive(script, phase_starts, observations) -> list[DriveCheck]:
    """Judge each checked event. ``observations``: (t s, alert level label, alert reason or None)
    per frame, in time order (an iterable; :class:`DriveChecker` takes them one at a time)."""
    checker = DriveChecker(script, phase_starts)
    for t, level, reason in observations:
        checker.add(t, level, reason)
    return checker.results()


class DriveScore:
    """Angular errors (deg) of a synthetic drive's gaze frames in memory fixed by the drive's
    length: the pipeline's error per frame in an array of ``frame_count`` allocated once (a drive is
    finite, and its exact median is reported), the means from running sums per true zone."""

    def __init__(self, frame_count: int) -> None:
        self._pipeline = np.empty(int(frame_count), dtype=np.float64)
        self.frames = 0
        self._oracle_sum = 0.0
        self._zones: dict[str, list[float]] = {}  # zone -> [pipeline sum, oracle sum, frames]

    def add(self, zone: str, pipeline_deg: float, oracle_deg: float) -> None:
        """One gaze frame: its true zone, the pipeline's and the oracle's angular error, deg."""
        if self.frames >= len(self._pipeline):
            raise ValueError(f"more gaze frames than the drive's {len(self._pipeline)} frames")
        self._pipeline[self.frames] = pipeline_deg
        self.frames += 1
        self._oracle_sum += oracle_deg
        z = self._zones.setdefault(zone, [0.0, 0.0, 0])
        z[0] += pipeline_deg
        z[1] += oracle_deg
        z[2] += 1

    def summary(self) -> dict:
        """``mean_angular_error_deg``, ``median_angular_error_deg``, ``oracle_mean_angular_error_deg``
        (NaN without gaze frames), ``gaze_frames`` and ``mean_angular_error_deg_by_zone``."""
        errors = self._pipeline[:self.frames]
        n = self.frames
        return {
            "mean_angular_error_deg": float(np.mean(errors)) if n else math.nan,
            "median_angular_error_deg": float(np.median(errors)) if n else math.nan,
            "oracle_mean_angular_error_deg": self._oracle_sum / n if n else math.nan,
            "gaze_frames": n,
            "mean_angular_error_deg_by_zone": {
                z: {"pipeline": v[0] / v[2], "oracle": v[1] / v[2], "frames": v[2]} for z, v in sorted(self._zones.items())},
        }


class DriveScorer:
    """The whole score of one synthetic drive, fed the pipeline's frame records as they come.

    ``driver``: the :class:`~edge_app.synthetic_driver.SyntheticDriver` of the source; ``engine``,
    ``pipeline`` and ``normalisation`` (the app's settings) give the *oracle*: the model run on a crop
    normalised as the app does but with the face's true head pose and face centre, i.e. the model alone, without landmark and
    head-pose errors.
    """

    def __init__(self, driver, engine, pipeline, normalisation) -> None:
        self.checker = DriveChecker(driver.script, driver.phase_starts)
        self.score = DriveScore(driver.frame_count)
        self.engine, self.pipeline, self.normalisation = engine, pipeline, normalisation

    def add(self, record) -> None:
        """One processed :class:`~edge_app.pipeline.FrameRecord` of the drive."""
        attention = record.attention
        self.checker.add(record.frame.timestamp_s, attention.alert.label, attention.alert_reason)
        if record.gaze is None:
            return
        truth, n = record.frame.truth, self.normalisation
        h, w = record.frame.image.shape[:2]
        oracle = oracle_gaze(self.engine, record.frame.image, truth, self.pipeline.intrinsics(w, h).matrix,
                             n.distance_mm, n.crop_width_mm, n.oversample)
        self.score.add(truth.zone, float(angular_error_deg(record.gaze, np.asarray(truth.gaze))),
                       float(angular_error_deg(oracle, np.asarray(truth.gaze))))

    def results(self) -> list[DriveCheck]:
        return self.checker.results()

    def summary(self) -> dict:
        """The error figures of :meth:`DriveScore.summary` and ``checks``: every checked event as a dict."""
        return {**self.score.summary(), "checks": [{**asdict(c), "observed_reasons": list(c.observed_reasons)}
                                                  for c in self.results()]}

    @property
    def passed(self) -> bool:
        """Whether every judged event raised the expected alert."""
        return all(c.passed for c in self.results() if c.judged)
