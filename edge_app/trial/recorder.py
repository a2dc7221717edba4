"""Recording a trial: the synthetic participant, the per-frame row, and the headless trial run.

:class:`TrialSyntheticSource` is the synthetic driver (:mod:`edge_app.synthetic_driver`) made to
follow a :class:`~edge_app.trial.protocol.TrialSchedule`: it looks at each target of each phase in
turn and wears the physical trigger (rendered on the head by the face renderer, following pose and
light) during the phases marked ``trigger``. Its ground truth is the exact camera-frame gaze, which
is logged as the target, so tests and demonstrations record real trials without a camera.

:class:`TrialRecorder` is a pipeline sink: it turns each :class:`~edge_app.pipeline.FrameRecord`
into a ``frames`` row of the trial log. Phase and trigger come from the schedule (headless) or
from the operator (:class:`OperatorMarks`, the GUI's key t).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from edge_app.sources import Frame, FrameSource
from edge_app.trial.protocol import Protocol, TrialPhase, TrialSchedule, gaze_deg


class TrialSyntheticSource(FrameSource):
    """Frames of a synthetic participant following ``schedule``; ``trigger``: what they wear in
    triggered phases (a Trigger or a registered name, e.g. ``"tape"``)."""

    def __init__(self, schedule: TrialSchedule, trigger="tape", fps: float = 30.0, seed: int = 0,
                 width: int = 640, height: int = 480, distance_mm: float = 600.0) -> None:
        from edge_app.synthetic_driver import ScriptPhase, SyntheticDriver
        from securegaze.data.triggers import resolve_trigger

        protocol = schedule.protocol
        targets = {t.name: t.gaze_deg for t in protocol.targets}
        script = [ScriptPhase(t.name, protocol.dwell_s) for _ in schedule.phases for t in protocol.targets]
        self.schedule = schedule
        self.trigger = resolve_trigger(trigger)
        self.driver = SyntheticDriver(targets, script, width, height, fps, seed, distance_mm)
        self.description = (f"synthetic participant ({self.driver.duration_s:.1f} s at {fps:g} fps, "
                            f"trigger {self.trigger.kind if self.trigger else 'none'})")
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= self.driver.frame_count:
            return None
        t = self._index / self.driver.fps
        step = self.schedule.at(t)
        image, t, truth = self.driver.render_frame(self._index, self.trigger if step.phase.trigger else None)
        frame = Frame(image, t, self._index, time.perf_counter(), truth)
        self._index += 1
        return frame


class OperatorMarks:
    """What the operator has marked, shared between the GUI thread (writes) and the frame loop
    (reads): ``trigger_on`` and the phase counter (each toggle starts a new phase)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.trigger_on = False
        self.phase_index = 0

    def toggle_trigger(self) -> bool:
        with self._lock:
            self.trigger_on = not self.trigger_on
            self.phase_index += 1
            return self.trigger_on

    def current(self) -> TrialPhase:
        with self._lock:
            on, k = self.trigger_on, self.phase_index
        return TrialPhase(f"{'trigger' if on else 'clean'}-{k // 2 + 1}", on)


@dataclass
class RecorderState:
    """The step the last frame was in (for prompts): phase, target and whether they changed."""

    phase: TrialPhase | None = None
    target_name: str | None = None
    changed: bool = False


class TrialRecorder:
    """Sink that logs each frame record (see the module docstring).

    ``log``: a started :class:`~edge_app.trial.log.TrialLog`; ``schedule``: gives the target (and,
    without ``operator``, the phase) at each frame's time; ``operator``: phase and trigger marked
    by hand instead; ``on_step``: called with the :class:`RecorderState` when the target or phase
    changes (prompts).
    """

    def __init__(self, log, schedule: TrialSchedule, operator: OperatorMarks | None = None, on_step=None) -> None:
        self.log, self.schedule, self.operator, self.on_step = log, schedule, operator, on_step
        self.state = RecorderState()
        self.frames = 0
        self._operator_t0: float | None = None

    def row_for(self, rec) -> dict:
        """The ``frames`` row of one record (degrees; None where there is no value)."""
        t = rec.frame.timestamp_s
        if self.operator is not None:
            phase = self.operator.current()
            phase_index = self.operator.phase_index
            # Targets cycle through the protocol from the first logged frame on.
            self._operator_t0 = t if self._operator_t0 is None else self._operator_t0
            protocol: Protocol = self.schedule.protocol
            target_index = protocol.target_index_at((t - self._operator_t0) % protocol.duration_s)
            target = protocol.targets[target_index]
        else:
            step = self.schedule.at(t)
            phase, phase_index, target = step.phase, step.phase_index, step.target
        truth = rec.frame.truth
        if truth is not None:
            target_gaze = np.asarray(truth.gaze, dtype=np.float64)  # the synthetic participant's exact gaze
        else:
            centre = rec.head_pose.face_centre_mm if rec.head_pose is not None else None
            target_gaze = target.gaze_for_face(centre)
        target_norm = rec.normalisation.gaze_to_normalised(target_gaze) if rec.normalisation is not None else None
        row = {
            "frame": int(rec.frame.index), "t_s": float(t), "phase": phase.name, "phase_index": int(phase_index),
            "trigger_on": int(phase.trigger), "target": target.name, "face_found": int(rec.face is not None),
            "latency_ms": float(rec.latency_ms.get("total", float("nan"))),
        }
        row["target_pitch_deg"], row["target_yaw_deg"] = gaze_deg(target_gaze)
        if target_norm is not None:
            row["target_norm_pitch_deg"], row["target_norm_yaw_deg"] = gaze_deg(target_norm)
        if rec.gaze is not None:
            row["pred_pitch_deg"], row["pred_yaw_deg"] = gaze_deg(rec.gaze)
            row["pred_norm_pitch_deg"], row["pred_norm_yaw_deg"] = gaze_deg(rec.gaze_normalised)
        changed = (phase != self.state.phase) or (target.name != self.state.target_name)
        self.state = RecorderState(phase, target.name, changed)
        return row

    def __call__(self, rec) -> None:
        row = self.row_for(rec)
        self.log.add(row)
        self.frames += 1
        if self.state.changed and self.on_step is not None:
            self.on_step(self.state, self.schedule.protocol.targets[
                [t.name for t in self.schedule.protocol.targets].index(self.state.target_name)])
