"""Prompting gaze targets and recording where the pipeline says the driver looks (driver and cabin calibration).

A session is one pass over a list of targets (:class:`~edge_app.trial.protocol.TrialTarget`, the
trials' targets: cabin points from the zone map, or dots on a screen), ``dwell_s`` seconds each,
after a ``lead_in_s`` for live sources (time to read the first prompt). Each target is prompted
when its turn comes: a line on the terminal, or in the overlay window with ``--gui`` (the trials'
:class:`~edge_app.gui.app.GuiSession` shows the prompt, or the dot for a screen target). The first
``SETTLE_S`` of every target are not used: a driver needs about a quarter of a second to react to
a prompt and the saccade and fixation take another 0.2-0.3 s. The frames go through the full
:class:`~edge_app.pipeline.Pipeline` (face, head pose, normalisation, model), so the calibration
sees the gaze exactly as the app will.

:class:`GazeRecorder` is the pipeline sink that assigns frames to targets and keeps, per target,
the model's gaze in the normalised frame, where the target lies in that frame, and the camera-frame
gaze. The synthetic driver (:func:`synthetic_session_source`) follows the same schedule, looking
at each target in turn, with ground truth; its optional personal offset
(``synthetic.personal_offset_deg``) is what the driver calibration must remove.

Angles: (pitch, yaw) radians in the arrays, degrees where named ``_deg``; times in seconds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_app.trial.protocol import Protocol, TrialPhase, TrialSchedule, TrialTarget
from edge_app.trial.recorder import RecorderState
from securegaze.errors import ConfigError

#: Seconds of each target left out: reaction to the prompt (~0.25 s), saccade and settling.
SETTLE_S = 0.6
#: Seconds before the first target on a live source (reading the first prompt).
LEAD_IN_S = 3.0
DEFAULT_DWELL_S = 2.0
DWELL_RANGE_S = (1.0, 10.0)


@dataclass
class TargetRecord:
    """What was recorded while ``target`` was prompted: ``frames`` after the settle time, ``faces``
    of them with a gaze, and per such frame the model's gaze ``pred_norm`` and the target
    ``target_norm`` in that frame's normalised frame and the camera-frame gaze ``gaze_cam``
    (radians, lists of (2,) arrays)."""

    target: TrialTarget
    frames: int = 0
    faces: int = 0
    pred_norm: list[np.ndarray] = field(default_factory=list)
    target_norm: list[np.ndarray] = field(default_factory=list)
    gaze_cam: list[np.ndarray] = field(default_factory=list)


class GazeRecorder:
    """Pipeline sink of a session (see the module docstring). ``schedule`` and ``state`` are what
    the overlay window reads to show the current prompt; ``on_prompt(index, target)`` is called
    when a target's turn starts; ``finished`` is set once the last target's time is over."""

    def __init__(self, protocol: Protocol, lead_in_s: float = 0.0, settle_s: float = SETTLE_S,
                 on_prompt: Callable[[int, TrialTarget], None] | None = None) -> None:
        self.protocol = protocol
        self.schedule = TrialSchedule(protocol, (TrialPhase("calibration", False),))
        self.state = RecorderState()
        self.lead_in_s, self.settle_s = float(lead_in_s), float(settle_s)
        self.on_prompt = on_prompt
        self.records = [TargetRecord(t) for t in protocol.targets]
        self.finished = threading.Event()
        self.frames = 0
        self.current_index = -1  # the target whose turn it is (-1: before the first)
        self._t0: float | None = None

    @property
    def duration_s(self) -> float:
        return self.lead_in_s + self.protocol.duration_s

    def __call__(self, rec) -> None:
        t_frame = rec.frame.timestamp_s
        self._t0 = t_frame if self._t0 is None else self._t0
        t = t_frame - self._t0 - self.lead_in_s
        self.frames += 1
        if t >= self.protocol.duration_s:
            self.finished.set()
            return
        if t < 0:
            return
        k = int(min(math.floor(t / self.protocol.dwell_s), len(self.records) - 1))
        target = self.protocol.targets[k]
        if k != self.current_index:
            self.current_index = k
            self.state = RecorderState(self.schedule.phases[0], target.name, True)
            if self.on_prompt is not None:
                self.on_prompt(k, target)
        if t - k * self.protocol.dwell_s < self.settle_s:
            return
        record = self.records[k]
        record.frames += 1
        if rec.gaze_normalised is None or rec.normalisation is None:
            return
        truth = rec.frame.truth
        if truth is not None:  # the synthetic driver's exact gaze
            target_cam = np.asarray(truth.gaze, dtype=np.float64)
        else:
            target_cam = target.gaze_for_face(rec.head_pose.face_centre_mm if rec.head_pose is not None else None)
        record.faces += 1
        record.pred_norm.append(np.asarray(rec.gaze_normalised, dtype=np.float64))
        record.target_norm.append(rec.normalisation.gaze_to_normalised(target_cam))
        record.gaze_cam.append(np.asarray(rec.gaze, dtype=np.float64))


def check_dwell(dwell_s: float) -> float:
    lo, hi = DWELL_RANGE_S
    if not lo <= dwell_s <= hi:  # NaN fails too
        raise ConfigError(f"--dwell-s {dwell_s:g} is outside {lo:g}..{hi:g} s (each target needs {SETTLE_S:g} s "
                          "to settle and then frames to measure)")
    return float(dwell_s)


def synthetic_session_source(protocol: Protocol, config, cabin_targets_deg: dict[str, tuple[float, float]] | None = None):
    """The synthetic driver (``config.synthetic``: seed, fps, size, distance, personal offset)
    looking at each target of ``protocol`` in turn for its dwell; ``cabin_targets_deg``: where each
    target really is, camera-frame degrees (default: the targets' own ``gaze_deg``), for a cabin
    that differs from the one prompted."""
    from edge_app.sources import SyntheticSource
    from edge_app.synthetic_driver import ScriptPhase, SyntheticDriver

    s = config.synthetic
    where = {t.name: t.gaze_deg for t in protocol.targets}
    where.update(cabin_targets_deg or {})
    script = [ScriptPhase(t.name, protocol.dwell_s) for t in protocol.targets]
    driver = SyntheticDriver(where, script, s.width, s.height, s.fps, s.seed, s.distance_mm,
                             personal_offset_deg=s.personal_offset_deg)
    source = SyntheticSource(driver)
    source.description = (f"synthetic driver (seed {s.seed}, {len(script)} targets x {protocol.dwell_s:g} s at "
                          f"{s.fps:g} fps, personal offset {list(s.personal_offset_deg)} deg)")
    return source


def session_source(spec: str, protocol: Protocol, config):
    """``synthetic``: the synthetic driver following the session, in the cabin of the config's zone
    map (``zones``, as for ``edge-app run --source synthetic``: a target named after one of its zones
    is looked at where that map puts it); anything else as ``edge-app run`` (camera:N, a video, an
    image folder)."""
    from edge_app.sources import open_source
    from edge_app.zones import load_zone_map

    if spec == "synthetic":
        cabin = load_zone_map(config.zones).targets_deg()
        return synthetic_session_source(protocol, config, {t.name: cabin[t.name] for t in protocol.targets
                                                           if t.name in cabin})
    if spec.startswith("synthetic:") or spec == "camera:synthetic":
        raise ConfigError(f"--source {spec}: a calibration follows its own targets; use --source synthetic "
                          "for the synthetic driver")
    return open_source(spec, config)


def record_session(pipeline, source, recorder: GazeRecorder, gui: bool = False, config=None,
                   max_frames: int | None = None) -> bool:
    """Run ``source`` through ``pipeline`` into ``recorder`` until the last target's time is over
    (or the source ends, or Ctrl-C / SIGTERM, or the window is closed); with ``gui`` in the overlay
    window, which shows each prompt. Returns whether every target had its turn (the last one
    started; a session stopped earlier is incomplete)."""
    from edge_app.pipeline import run_pipeline, signals_set

    stop = threading.Event()
    watcher = threading.Thread(target=lambda: (recorder.finished.wait(), stop.set()), daemon=True)
    watcher.start()
    if gui:
        from edge_app.gui.app import GuiSession

        critical = config.attention.critical_after_s if config is not None else 11.0
        session = GuiSession(source, lambda _result: pipeline, result=pipeline.integrity, sink=recorder,
                             recorder=recorder, max_frames=max_frames, critical_after_s=critical, stop=stop)
        session.run()
    else:
        try:
            with signals_set(stop):
                run_pipeline(pipeline, source, recorder, max_frames=max_frames, stop=stop)
        finally:
            pipeline.close()
    recorder.finished.set()  # releases the watcher
    return recorder.current_index == len(recorder.records) - 1
