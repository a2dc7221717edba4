"""The ``edge-app`` command line (the driver-monitoring application).

Exit codes of ``edge-app run``: 0 done; 2 a user error (bad option, config, model, source or
audit database: one ``error:`` line); 10 the integrity check blocked the model (policy block);
3 a synthetic drive finished but a scripted distraction did not raise the expected alert.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from securegaze import __version__
from securegaze.cli_support import run_app
from securegaze.errors import ConfigError, InputFileError
from securegaze.geometry import CONVENTION

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
EXIT_CHECKS_FAILED = 3

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SecureGaze Edge driver-monitoring app.")


@app.callback()
def _root() -> None:
    """SecureGaze Edge driver-monitoring app."""


@app.command()
def info() -> None:
    """Print the version and the gaze conventions."""
    Console().print(f"edge-app {__version__}\ngaze convention: {CONVENTION}")


class JsonLinesWriter:
    """Writes one JSON object per line on its own thread, so a slow disk or pipe never stalls the
    frame loop (DESIGN.md section 2). ``path`` None or "-": stdout.

    The queue between the frame loop and the writer holds at most ``max_queue`` lines (about 1 kB
    each), so a disk that cannot keep up never makes the run grow without limit. When it is full:

    * ``drop_when_full`` (live sources): the line is dropped and counted in ``dropped``, and the run
      summary reports the count. A driver-monitoring loop must keep raising alerts on time: waiting
      for the disk would delay the alarm for the driver in front of the camera, whereas a gap in
      the log is visible (consecutive ``frame`` numbers) and counted, never silent;
    * otherwise (recorded sources: video, folder, synthetic drive; nothing happens in real time)
      ``write`` waits for room, so every processed frame reaches the log. The capture thread never
      waits on this queue either way: only the frame loop calls ``write``.

    A line that cannot be written (disk full, a closed pipe) is counted in ``dropped`` too, and
    ``error`` keeps the first such error; the writer keeps draining so ``write`` never blocks for ever.
    """

    def __init__(self, path: str | None, drop_when_full: bool = False, max_queue: int = 1024) -> None:
        self._fh = sys.stdout if path in (None, "-") else open(path, "w", encoding="utf-8")  # noqa: SIM115
        self._owns = self._fh is not sys.stdout
        self.drop_when_full = drop_when_full
        self.dropped = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="jsonl-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self.error is not None:
                self.dropped += 1
                continue
            try:
                self._fh.write(json.dumps(item) + "\n")
            except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
                self.error = exc
                self.dropped += 1
        try:
            self._fh.flush()
        except (OSError, ValueError) as exc:
            self.error = self.error or exc

    def write(self, obj: dict) -> None:
        if not self.drop_when_full:
            self._queue.put(obj)
            return
        try:
            self._queue.put_nowait(obj)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        self._queue.put(None)  # waits for room: the writer is draining
        self._thread.join()
        if self._owns:
            self._fh.close()


def _check_out_path(out: str | None) -> None:
    """``--out`` must be a file in an existing folder; checked before the scan, not after it."""
    if out in (None, "-"):
        return
    path = Path(out)
    if path.is_dir():
        raise InputFileError(f"--out {out}: is a folder; expected a file for the JSON lines")
    if not path.parent.is_dir():
        raise InputFileError(f"--out {out}: folder {path.parent} does not exist; expected a file in an existing folder")


def _check_source_vs_engine(config) -> None:
    if config.engine.kind == "tensorrt" and config.engine.tensorrt_engine is None:
        raise ConfigError("engine.kind tensorrt needs engine.tensorrt_engine (built by deploy/jetson/build_engine.py)")


@app.command()
def run(
    source: str = typer.Option("camera:0", "--source", help="camera:N | VIDEO | IMAGE_DIR | synthetic[:short|:full]"
                               " | camera:synthetic (a simulated live camera at synthetic.fps)"),
    model: Path | None = typer.Option(None, "--model", help="model bundle or .onnx (default: models/default)"),
    config_path: Path | None = typer.Option(None, "--config", help="YAML settings (see calibration/edge_default.yaml)"),
    out: str | None = typer.Option(None, "--out", help="JSON lines, one per frame, to this file ('-': stdout)"),
    benchmark: bool = typer.Option(False, "--benchmark", help="time only after 5 warm-up frames (the per-stage "
                                   "p50/p95 and FPS table is printed on every exit)"),
    policy: str | None = typer.Option(None, "--policy", help="integrity policy for a backdoored model: block | warn"),
    audit_db: Path | None = typer.Option(None, "--audit-db", help="SQLite audit database"),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="stop after this many frames"),
    summary_path: Path | None = typer.Option(None, "--summary", help="also write the run summary as JSON here"),
    gui: bool = typer.Option(False, "--gui", help="show the overlay window (keys: q quit, space pause, r record, "
                             "t mark trigger)"),
    screenshot: Path | None = typer.Option(None, "--screenshot", help="with --gui: save the window as PNG at exit"),
) -> None:
    """Run the driver-monitoring loop headless: integrity check, then frames to JSON lines.

    Exit codes: 0 done, 2 user error, 10 model blocked by the integrity check, 3 a synthetic
    drive's scripted distraction did not raise the expected alert.
    """
    from edge_app.head_pose import CameraIntrinsics
    from edge_app.integrity import EXIT_BLOCKED, IntegrityChecker
    from edge_app.pipeline import Pipeline, run_pipeline
    from edge_app.sources import SyntheticSource, open_source
    from edge_app.startup import ScanProgressPrinter, load_edge_config, open_checked_engine
    from edge_app.zones import load_zone_map

    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    config = load_edge_config(config_path, policy, audit_db)
    _check_source_vs_engine(config)
    _check_out_path(out)
    model_path = model or config.model or DEFAULT_MODEL
    zone_map = load_zone_map(config.zones)
    intrinsics = CameraIntrinsics.from_yaml(config.camera.calibration) if config.camera.calibration else None
    # Open the source before the (possibly minute-long) scan, so a missing camera fails at once.
    src = open_source(source, config)
    if gui:  # the overlay window: edge_app.gui (PyQt6 is imported only there)
        from edge_app.gui.app import run_gui

        try:
            gui_code = run_gui(config, src, model_path, zone_map, intrinsics, out, max_frames, screenshot)
        finally:
            src.close()
        if gui_code:
            raise typer.Exit(gui_code)
        return
    to_stdout = out in (None, "-")
    report = Console(stderr=to_stdout, highlight=False, soft_wrap=True, markup=False)  # human lines never mix into JSON on stdout

    try:
        err.print(f"integrity: checking {model_path} (policy {config.integrity.policy})")
        result = IntegrityChecker(config.integrity).check(model_path, progress=ScanProgressPrinter(err))
        for note in result.notes:
            err.print(f"integrity: note: {note}")
        err.print(f"integrity: {result.reason} [{result.source}]")
        if result.blocked:
            writer = JsonLinesWriter(out)
            writer.write({"state": "BLOCKED", "reason": result.reason, "integrity": result.summary()})
            writer.close()
            if summary_path is not None:
                from securegaze.io import atomic_write_json

                atomic_write_json(summary_path, {"model": str(model_path), "blocked": True, "frames": 0,
                                                 "integrity": result.summary()})
            err.print(f"error: {result.reason}")
            raise typer.Exit(EXIT_BLOCKED)
        engine = open_checked_engine(config, model_path, result)
        for note in engine.notes:
            err.print(f"engine: note: {note}")
        err.print(f"engine: {engine.name} {engine.providers}, input {engine.input_size} px; source: {src.description}")
        pipeline = Pipeline(config, engine, zone_map, intrinsics, result)
        drop = {"auto": None, "always": True, "never": False}[config.capture.drop_stale]
        live = src.live if drop is None else drop
        # Opened once every check has passed: a refused run leaves --out as it was. Live: a full
        # queue drops (and counts) log lines rather than delay the alerts; see JsonLinesWriter.
        writer = JsonLinesWriter(out, drop_when_full=live)
        synthetic = isinstance(src, SyntheticSource)
        # The synthetic drive's scoring in memory fixed by the drive (never per frame of a run).
        checker = score = None
        if synthetic:
            from edge_app.synthetic_driver import DriveChecker, DriveScore

            checker = DriveChecker(src.driver.script, src.driver.phase_starts)
            score = DriveScore(src.driver.frame_count)

        def sink(rec) -> None:
            line = rec.to_json()
            if result.verdict == "backdoored":
                line["integrity_warning"] = result.reason
            writer.write(line)
            if not synthetic:
                return
            att = rec.attention
            checker.add(rec.frame.timestamp_s, att.alert.label, att.alert_reason)
            if rec.gaze is not None:
                from edge_app.synthetic_driver import oracle_gaze
                from securegaze.geometry import angular_error_deg

                truth = rec.frame.truth
                n = config.normalisation
                h, w = rec.frame.image.shape[:2]
                oracle = oracle_gaze(engine, rec.frame.image, truth, pipeline.intrinsics(w, h).matrix,
                                     n.distance_mm, n.crop_width_mm, n.oversample)
                score.add(truth.zone, float(angular_error_deg(rec.gaze, np.asarray(truth.gaze))),
                          float(angular_error_deg(oracle, np.asarray(truth.gaze))))

        try:
            summary = run_pipeline(pipeline, src, sink, drop, config.capture.queue_size, max_frames,
                                   warmup_frames=5 if benchmark else 0)
        finally:
            writer.close()
            pipeline.close()
    finally:
        src.close()

    data = {"source": src.description, "model": str(model_path), "integrity": result.summary(),
            "frames": summary.frames, "captured": summary.captured, "dropped": summary.dropped,
            "wall_s": summary.wall_s, "fps": summary.fps, "processing_fps": summary.processing_fps,
            "latency_ms": summary.latency, "states": summary.states, "alerts": summary.alerts,
            "invalid_gaze_frames": summary.invalid_gaze_frames, "log_lines_dropped": writer.dropped}
    stopped = " (stopped by Ctrl-C)" if summary.interrupted else ""
    report.print(f"frames {summary.frames}{stopped}, captured {summary.captured}, dropped {summary.dropped}, "
                 f"states {summary.states}")
    if writer.dropped:
        why = f" ({writer.error})" if writer.error is not None else " (the disk or pipe could not keep up)"
        report.print(f"warning: {writer.dropped} of {summary.frames} frames' JSON lines were not written to "
                     f"{out or 'stdout'}{why}; gaps show in the frame numbers")
    if summary.invalid_gaze_frames:
        report.print(f"warning: the model returned NaN/inf gaze on {summary.invalid_gaze_frames} frames "
                     "(reported as NO_FACE with that reason)")
    # Per-stage latency on every exit (DESIGN.md section 2); --benchmark leaves out the warm-up frames.
    report.print(f"{'stage':<12} {'p50 ms':>8} {'p95 ms':>8}")
    for stage, st in summary.latency.items():
        report.print(f"{stage:<12} {st['p50']:8.2f} {st['p95']:8.2f}")
    report.print(f"end-to-end FPS {summary.fps:.1f} (source included); processing FPS {summary.processing_fps:.1f}")
    code = 0
    if synthetic:
        checks = checker.results()
        data.update(score.summary())
        mean_err = data["mean_angular_error_deg"]
        data["checks"] = [{"label": c.label, "expected": c.expected, "observed_level": c.observed_level,
                           "observed_reasons": list(c.observed_reasons), "start_s": c.start_s, "end_s": c.end_s,
                           "passed": c.passed, "judged": c.judged} for c in checks]
        report.print(f"synthetic driver: mean angular error {mean_err:.2f} deg over {data['gaze_frames']} frames "
                     f"(median {data['median_angular_error_deg']:.2f}) against ground truth, camera frame; "
                     f"{data['oracle_mean_angular_error_deg']:.2f} deg with the rendering camera's normalisation "
                     "(the model alone, without landmark and head-pose errors)")
        for z, v in data["mean_angular_error_deg_by_zone"].items():
            report.print(f"  {z:<20} {v['pipeline']:6.2f} deg pipeline, {v['oracle']:6.2f} deg oracle, "
                         f"{v['frames']} frames")
        for c in checks:
            if not c.judged:
                report.print(f"  skip {c.label} ({c.start_s:.1f}-{c.end_s:.1f} s): the run stopped before it")
                continue
            mark = "ok  " if c.passed else "FAIL"
            report.print(f"  {mark} {c.label} ({c.start_s:.1f}-{c.end_s:.1f} s): expected {c.expected}, got "
                         f"{c.observed_level} {list(c.observed_reasons) or ''}")
        if not all(c.passed for c in checks if c.judged):
            code = EXIT_CHECKS_FAILED
    if summary_path is not None:
        from securegaze.io import atomic_write_json

        atomic_write_json(summary_path, data)
    if code:
        raise typer.Exit(code)


@app.command()
def trial(
    protocol: str = typer.Option("screen4", "--protocol", help="screen4 (four screen corners) | cabin (cabin points)"),
    db: Path = typer.Option(..., "--db", help="SQLite trial database (created if missing; trials are appended)"),
    participant: str = typer.Option(..., "--participant", help="participant id, e.g. P01"),
    source: str = typer.Option("synthetic", "--source", help="synthetic (scripted participant) | camera:N | VIDEO"),
    model: Path | None = typer.Option(None, "--model", help="model bundle or .onnx (default: models/default)"),
    config_path: Path | None = typer.Option(None, "--config", help="YAML settings (see calibration/edge_default.yaml)"),
    phases: str = typer.Option("clean,trigger", "--phases", help="phases, one protocol pass each: clean | trigger "
                               "(NAME:clean, NAME:trigger); with --gui the operator marks the trigger with t"),
    dwell_s: float = typer.Option(4.0, "--dwell-s", help="seconds per target"),
    trigger: str = typer.Option("tape", "--trigger", help="trigger the synthetic participant wears in trigger phases"),
    policy: str | None = typer.Option(None, "--policy", help="integrity policy: block | warn (warn records a flagged model)"),
    audit_db: Path | None = typer.Option(None, "--audit-db", help="SQLite audit database"),
    fps: float | None = typer.Option(None, "--fps", help="frame rate of the synthetic participant"),
    seed: int = typer.Option(0, "--seed", help="identity of the synthetic participant"),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="stop after this many frames"),
    gui: bool = typer.Option(False, "--gui", help="show the overlay; key t marks the trigger on/off"),
) -> None:
    """Record a physical-trigger trial: every frame to SQLite (Ctrl-C / SIGTERM keep what was logged).

    Exit codes: 0 done (also when interrupted), 2 user error, 10 model blocked by the integrity check.
    """
    from edge_app.trial.run import TrialOptions, run_trial

    code = run_trial(TrialOptions(protocol, db, participant, source, model, config_path, phases, dwell_s, trigger,
                                  policy, audit_db, fps, seed, max_frames, gui), DEFAULT_MODEL)
    if code:
        raise typer.Exit(code)


@app.command()
def report(
    dbs: list[Path] = typer.Argument(..., help="one trial database, or two (e.g. backdoored and mitigated) side by side"),
    out: Path = typer.Option(..., "--out", help="self-contained HTML report"),
    label: list[str] = typer.Option([], "--label", help="column title per database (repeat)"),
    target: str | None = typer.Option(None, "--target", help="attacker target gaze PITCH,YAW in degrees, for AE/ASR"),
    trial_id: int | None = typer.Option(None, "--trial", help="trial id in each database (default: the last)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the numbers as JSON"),
) -> None:
    """Trial report: angular error per phase, AE/DAE/ASR@5deg for triggered phases, gaze traces."""
    from edge_app.trial.report import parse_target_deg, write_report

    result = write_report([str(d) for d in dbs], out, label, parse_target_deg(target), trial_id, json_out)
    console = Console(highlight=False, soft_wrap=True, markup=False)
    for t in result["trials"]:
        for p in t["phases"]:
            extra = ""
            if p["trigger"] and p.get("ae_deg") is not None:
                extra = f", AE {p['ae_deg']:.2f}, DAE {p['dae_deg']:.2f}, ASR@5deg {100 * p['asr_5deg']:.1f}%"
            err_text = "-" if p["angular_error_deg"] is None else f"{p['angular_error_deg']:.2f}"
            console.print(f"{t['label']}: {p['phase']}{' [trigger]' if p['trigger'] else ''}: "
                          f"{p['gaze_frames']}/{p['frames']} frames, angular error {err_text} deg{extra}")
    console.print(f"report: {out}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    return run_app(app, argv, prog_name="edge-app")


if __name__ == "__main__":
    sys.exit(main())
