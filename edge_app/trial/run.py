"""``edge-app trial``: record a physical-trigger trial into SQLite (headless, or with the GUI).

The model goes through the same startup integrity check as ``edge-app run`` (a blocked model
records nothing and exits 10); the frames go through the same :class:`~edge_app.pipeline.Pipeline`;
each record becomes a row of the trial log (:mod:`edge_app.trial.log`). Ctrl-C or SIGTERM end the
trial early (:class:`~edge_app.signals.StopSignals`): the frame loop stops, every frame already
handed to the log is committed, the trial is marked ``interrupted``, and the exit code is 130
(SIGINT) or 143 (SIGTERM). A signal during the start-up integrity check stops the trial before
anything is recorded, says so, and exits with the same codes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from edge_app.signals import EXIT_SIGINT, StopSignals
from securegaze.errors import ConfigError


@dataclass(frozen=True)
class TrialOptions:
    """The ``edge-app trial`` options (see its help)."""

    protocol: str
    db: Path
    participant: str
    source: str
    model: Path | None
    config_path: Path | None
    phases: str
    dwell_s: float
    trigger: str
    policy: str | None
    audit_db: Path | None
    fps: float | None
    seed: int
    max_frames: int | None
    gui: bool = False


def open_trial_source(options: TrialOptions, schedule, config):
    """``synthetic``: the synthetic participant following the schedule; anything else: as ``edge-app run``."""
    from edge_app.sources import open_source
    from edge_app.trial.recorder import TrialSyntheticSource

    if options.source == "synthetic":
        s = config.synthetic
        distance = 600.0 if options.protocol == "screen4" else s.distance_mm
        fps = options.fps if options.fps is not None else s.fps  # an explicit 0 is refused, never replaced
        return TrialSyntheticSource(schedule, options.trigger, fps, options.seed, s.width, s.height,
                                    distance)
    return open_source(options.source, config)


def run_trial(options: TrialOptions, default_model: Path) -> int:
    """Run a trial; returns the exit code (0 done, 10 model blocked, 130 / 143 stopped by SIGINT /
    SIGTERM)."""
    from edge_app.head_pose import CameraIntrinsics
    from edge_app.integrity import EXIT_BLOCKED
    from edge_app.pipeline import Pipeline, run_pipeline
    from edge_app.startup import ScanProgressPrinter, check_and_open_engine, load_edge_config
    from edge_app.trial.log import TrialLog, open_database
    from edge_app.trial.protocol import TrialSchedule, make_protocol, parse_phases
    from edge_app.trial.recorder import OperatorMarks, TrialRecorder
    from edge_app.zones import load_zone_map

    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    config = load_edge_config(options.config_path, options.policy, options.audit_db)
    zone_map = load_zone_map(config.zones)
    protocol = make_protocol(options.protocol, zone_map, options.dwell_s)
    phases = parse_phases(options.phases)
    schedule = TrialSchedule(protocol, phases)
    if options.fps is not None and not 1 <= options.fps <= 240:  # NaN fails too
        raise ConfigError(f"--fps {options.fps:g} is not a frame rate in 1..240")
    if not options.participant.strip():
        raise ConfigError("--participant must not be empty (an id such as P01; no names needed)")
    if options.gui:  # before anything is recorded: no window, no trial
        from edge_app.gui.qt_env import NoDisplayError, display_problem, prepare_qt_environment

        prepare_qt_environment()
        problem = display_problem()
        if problem:
            raise NoDisplayError(problem)
    if options.db.exists() and (not options.db.is_file() or options.db.stat().st_size > 0):
        open_database(options.db, create=False).close()  # a database it cannot add to: refused before the scan
    model_path = options.model or config.model or default_model
    intrinsics = CameraIntrinsics.from_yaml(config.camera.calibration) if config.camera.calibration else None
    src = open_trial_source(options, schedule, config)
    log = None
    interrupted = False
    with StopSignals() as signals:
        try:
            err.print(f"integrity: checking {model_path} (policy {config.integrity.policy})")
            result, engine = check_and_open_engine(config, model_path, ScanProgressPrinter(err))
            err.print(f"integrity: {result.reason} [{result.source}]")
            if engine is None:
                err.print(f"error: {result.reason}; nothing recorded")
                return EXIT_BLOCKED
            pipeline = Pipeline(config, engine, zone_map, intrinsics, result)
            signals.armed = True  # from here on a signal only sets signals.stop (see StopSignals)
            log = TrialLog(options.db)
            trigger_kind = getattr(src, "trigger", None)
            trial_id = log.start(options.participant, protocol.name,
                                 [{"name": p.name, "trigger": p.trigger} for p in phases], str(model_path),
                                 result.model_sha256, result.verdict, src.description,
                                 trigger_kind.kind if trigger_kind is not None else options.trigger,
                                 {"dwell_s": protocol.dwell_s, "targets": [t.name for t in protocol.targets],
                                  "gui": options.gui, "policy": config.integrity.policy})
            err.print(f"trial {trial_id} -> {options.db}: participant {options.participant}, protocol {protocol.name} "
                      f"({len(protocol.targets)} targets x {protocol.dwell_s:g} s), phases "
                      f"{', '.join(p.name + (' [trigger]' if p.trigger else '') for p in phases)}; source {src.description}")
            if options.gui:
                from edge_app.gui.app import run_trial_gui

                recorder = TrialRecorder(log, schedule, OperatorMarks())
                code, summary = run_trial_gui(pipeline, src, recorder, result, config, options.max_frames,
                                              stop=signals.stop)
                interrupted = (summary.interrupted if summary is not None else False) or signals.stop.is_set()
                return signals.exit_code or code

            def prompt(state, target) -> None:
                wear = "WEAR the trigger" if state.phase.trigger else "no trigger"
                err.print(f"trial: phase {state.phase.name} ({wear}): {target.prompt}")

            recorder = TrialRecorder(log, schedule, on_step=prompt)
            max_frames = options.max_frames
            try:
                summary = run_pipeline(pipeline, src, recorder, None, config.capture.queue_size, max_frames,
                                       stop=signals.stop)
            finally:
                pipeline.close()
            interrupted = summary.interrupted
            return (signals.exit_code or EXIT_SIGINT) if interrupted else 0
        except KeyboardInterrupt:
            signals.armed = True  # a second signal must not break the clean-up
            interrupted = True
            if log is None:
                # print(), not the console: the signal may have cut a console print short, mid-buffer.
                print(f"trial: interrupted by {signals.label} during the start-up integrity check; nothing "
                      f"recorded in {options.db}", file=sys.stderr, flush=True)
            return signals.exit_code or EXIT_SIGINT
        finally:
            src.close()
            if log is not None:
                log.close(interrupted)
                stopped = " (interrupted)" if interrupted else ""
                err.print(f"trial: {log.logged} frames logged to {options.db}{stopped}")
                if signals.signum is not None:
                    err.print(f"trial: stopped by {signals.label}; the trial is marked interrupted "
                              f"(exit {signals.exit_code})")
