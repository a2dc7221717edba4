"""What a run did, for the person who started it: faces found, modes, cabin zones, alerts raised.

:class:`RunTally` takes the pipeline's frame records one by one (the headless sink) in memory that
does not grow with the run: counters per mode, zone and alert kind, and the first
:data:`MAX_EVENTS` alert events with their start time and length. :func:`summary_lines` turns a
run's summary data into the lines ``edge-app run`` prints at the end.

An *alert event* is a stretch of consecutive frames with an alert of one reason (``eyes_off_road``,
``head_off_road``, ``time_sharing``), from its first frame to the first frame without it; its level
is the highest reached. Times are the frames' own timestamps, seconds.
"""

from __future__ import annotations

import math
from typing import Any

from edge_app.attention import AlertLevel

#: Alert events kept with their times (the counts go on for ever).
MAX_EVENTS = 50


class RunTally:
    """Counts of one run's frames; ``add(record)`` per processed frame, ``to_dict()`` at the end."""

    def __init__(self) -> None:
        self.frames = 0
        self.face_frames = 0
        self.gaze_frames = 0
        self.modes: dict[str, int] = {}
        self.mode_reasons: dict[str, int] = {}
        self.zones: dict[str, int] = {}
        self.alert_frames: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []
        self.event_counts: dict[str, int] = {}
        self._open: dict[str, Any] | None = None
        self._last_t = 0.0

    def add(self, rec) -> None:
        """One :class:`~edge_app.pipeline.FrameRecord`."""
        self.frames += 1
        self.face_frames += rec.face is not None
        self.gaze_frames += rec.gaze is not None
        self.modes[rec.mode] = self.modes.get(rec.mode, 0) + 1
        if rec.mode_reason and len(self.mode_reasons) < 10:
            self.mode_reasons[rec.mode_reason] = self.mode_reasons.get(rec.mode_reason, 0) + 1
        if rec.zone is not None:
            self.zones[rec.zone] = self.zones.get(rec.zone, 0) + 1
        att = rec.attention
        t = float(rec.frame.timestamp_s)
        self._last_t = t
        reason = att.alert_reason if att is not None and att.alert_reason else None
        if reason is not None:
            self.alert_frames[reason] = self.alert_frames.get(reason, 0) + 1
        ev = self._open
        if ev is not None and ev["reason"] != reason:
            ev["duration_s"] = round(t - ev["start_s"], 3)
            self._open = ev = None
        if reason is not None and ev is None:
            self.event_counts[reason] = self.event_counts.get(reason, 0) + 1
            ev = {"reason": reason, "level": att.alert.label, "start_s": round(t, 3), "duration_s": None,
                  "mode": rec.mode}
            self._open = ev
            if len(self.events) < MAX_EVENTS:
                self.events.append(ev)
        if ev is not None and att.alert > _level(ev["level"]):
            ev["level"] = att.alert.label

    def to_dict(self) -> dict[str, Any]:
        """The tally as plain data (the ``--summary`` file's ``tally``)."""
        if self._open is not None and self._open["duration_s"] is None:
            self._open["duration_s"] = round(self._last_t - self._open["start_s"], 3)  # still on at the end
        return {"frames": self.frames, "face_frames": self.face_frames, "gaze_frames": self.gaze_frames,
                "modes": dict(self.modes), "mode_reasons": dict(self.mode_reasons), "zones": dict(self.zones),
                "alert_frames": dict(self.alert_frames), "alert_events": [dict(e) for e in self.events],
                "alert_event_counts": dict(self.event_counts)}


def _level(label: str) -> int:
    return AlertLevel.from_label(label)


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The run's outcome in a few lines: integrity decision and mode, faces, zones, alerts, and for
    the synthetic driver the gaze error against its ground truth. ``data``: the headless run's
    summary (:class:`~edge_app.headless.HeadlessRun` ``data``, with ``tally``)."""
    tally = data.get("tally") or {}
    n = tally.get("frames", 0)
    integ = data.get("integrity") or {}
    lines = []
    verdict = integ.get("verdict", "?")
    decided = ("BLOCKED: the gaze model is not run" if integ.get("blocked") else
               "runs under policy warn" if verdict == "backdoored" else "trusted")
    lines.append(f"integrity check: {verdict} ({integ.get('source', '?')}); model {decided}")
    modes = tally.get("modes", {})
    mode_text = ", ".join(f"{m} {_pct(c, n)}" for m, c in sorted(modes.items(), key=lambda kv: -kv[1]))
    lines.append(f"frames {n}: face found on {tally.get('face_frames', 0)} ({_pct(tally.get('face_frames', 0), n)}),"
                 f" gaze on {tally.get('gaze_frames', 0)} ({_pct(tally.get('gaze_frames', 0), n)}); "
                 f"mode: {mode_text or '-'}")
    for reason, count in list(tally.get("mode_reasons", {}).items())[:3]:
        short = reason if len(reason) <= 140 else reason[:137] + "..."  # whole in the JSON lines
        lines.append(f"  degraded ({count} frames): {short}")
    zones = tally.get("zones", {})
    zone_total = sum(zones.values())
    if zone_total:
        lines.append("zones (share of gaze frames): " + ", ".join(
            f"{z} {_pct(c, zone_total)}" for z, c in sorted(zones.items(), key=lambda kv: -kv[1])))
    events = tally.get("alert_events", [])
    counts = tally.get("alert_event_counts", {})
    if not counts:
        lines.append("alerts raised: none")
    else:
        lines.append("alerts raised: " + ", ".join(f"{c} x {r}" for r, c in sorted(counts.items())))
        for e in events[:12]:
            dur = e.get("duration_s")
            lines.append(f"  {e['start_s']:7.2f} s  {e['level']:<8} {e['reason']:<14} for "
                         f"{'-' if dur is None else f'{dur:.2f} s'} ({e['mode']})")
        if sum(counts.values()) > 12:
            lines.append(f"  ... {sum(counts.values()) - 12} more (all in --summary's tally)")
    err = data.get("mean_angular_error_deg")
    if err is not None and not (isinstance(err, float) and math.isnan(err)):
        lines.append(f"gaze error against the synthetic driver's truth: mean {err:.2f} deg, median "
                     f"{data['median_angular_error_deg']:.2f} deg over {data['gaze_frames']} frames")
    checks = data.get("checks")
    if checks:
        judged = [c for c in checks if c["judged"]]
        lines.append(f"scripted distractions: {sum(c['passed'] for c in judged)} of {len(judged)} raised the "
                     "expected alert" if judged else "scripted distractions: none reached before the run stopped")
    lines.append(f"speed: {data.get('processing_fps', 0.0):.1f} FPS processing, {data.get('fps', 0.0):.1f} FPS "
                 "end to end (source included)")
    return lines
