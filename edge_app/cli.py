"""The ``edge-app`` command line (the driver-monitoring application).

Exit codes of ``edge-app run``: 0 done; 2 a user error (bad option, config, model, source, audit
database or output path, an existing recording without ``--overwrite`` / ``--append``: one
``error:`` line, before the integrity scan); 10 the integrity check blocked the model (policy
block): the model was never run, the frames were monitored in degraded mode (head pose only,
:mod:`edge_app.degraded`) to the end of the source, and 10 tells a script or service manager that
the gaze model is out (the Jetson unit does not restart on it); 3 a synthetic drive finished but a
scripted distraction did not raise the expected alert; 130 interrupted by SIGINT (Ctrl-C), 143
interrupted by SIGTERM (``systemctl stop``): the frame loop stopped cleanly, the recording and
``--summary`` were written and the summary printed (a signal during the start-up integrity check
stops it: nothing is recorded). The interrupted codes come before 10 and 3 (a drive that did not
finish is not judged), and 10 before 3.

``edge-app trial`` exits 0 done, 2 user error, 10 model blocked, and 130 / 143 when a signal
stopped it (during the start-up scan: nothing recorded; later: every logged frame committed and the
trial marked interrupted). ``edge-app report`` shows each trial as finished or interrupted (a trial
whose process was killed has no end time and counts as interrupted).

Outputs of ``edge-app run`` (:mod:`edge_app.outputs`): ``--out`` is checked at start and written
to a temporary file renamed onto its name at the end (also when interrupted); an existing
recording is replaced only with ``--overwrite`` and added to only with ``--append``; ``{n}`` or
``{time}`` in the name give a new file per run. ``--summary`` and ``--screenshot`` are written
atomically and replace an earlier file of that name (they describe the latest run).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from edge_app.calibrate.cli import calibrate_app
from securegaze import __version__
from securegaze.cli.support import run_app
from securegaze.errors import ConfigError
from securegaze.geometry import CONVENTION

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
EXIT_CHECKS_FAILED = 3

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SecureGaze Edge driver-monitoring app.")
app.add_typer(calibrate_app, name="calibrate")


@app.callback()
def _root() -> None:
    """SecureGaze Edge driver-monitoring app."""


@app.command()
def info() -> None:
    """Print the version and the gaze conventions."""
    Console().print(f"edge-app {__version__}\ngaze convention: {CONVENTION}")


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
    clean: str | None = typer.Option(None, "--clean", help="clean faces of the start-up scan: synthetic "
                                     "(default), synthetic:STYLE, or a folder of face images (PNG/JPEG, any size, "
                                     "no labels)"),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="stop after this many frames"),
    summary_path: Path | None = typer.Option(None, "--summary", help="also write the run summary as JSON here"),
    gui: bool = typer.Option(False, "--gui", help="show the overlay window (keys: q quit, space pause, r record, "
                             "t mark trigger)"),
    screenshot: Path | None = typer.Option(None, "--screenshot", help="with --gui: save the window as PNG at exit"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out recording (at the end "
                                   "of the run, atomically)"),
    append: bool = typer.Option(False, "--append", help="add this run's lines to an existing --out recording"),
    driver: str | None = typer.Option(None, "--driver", help="apply this driver's gaze calibration: an id in "
                                      "driver.store, or a .yaml file (edge-app calibrate driver)"),
) -> None:
    """Run the driver-monitoring loop headless: integrity check, then frames to JSON lines.

    An existing --out file is never replaced silently: pass --overwrite or --append, or put {n}
    (next free number) or {time} (UTC start time) in its name for a new file per run.

    A model the integrity check blocks is never run: the frames are still monitored, in degraded
    mode (head-pose-only distraction alerts; every JSON line has mode and mode_reason), and the run
    exits 10 at its end.

    Exit codes: 0 done, 2 user error, 10 the integrity check blocked the model (the run was
    monitored in degraded mode), 3 a synthetic drive's scripted distraction did not raise the
    expected alert, 130 / 143 stopped by SIGINT / SIGTERM (outputs written, summary printed).
    """
    from edge_app.calibrate.gaze_correction import load_gaze_correction, with_driver
    from edge_app.head_pose import CameraIntrinsics
    from edge_app.headless import run_headless
    from edge_app.integrity import EXIT_BLOCKED
    from edge_app.outputs import expand_placeholders, plan_output
    from edge_app.signals import EXIT_SIGINT, StopSignals
    from edge_app.sources import open_source
    from edge_app.startup import ScanProgressPrinter, load_edge_config
    from edge_app.zones import load_zone_map
    from securegaze.io import atomic_write_json, check_output_file

    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    config = with_driver(load_edge_config(config_path, policy, audit_db, clean), driver)
    _check_source_vs_engine(config)
    correction = load_gaze_correction(config)  # a missing or bad file fails before the scan; the pipeline applies it
    if correction is not None:
        err.print(f"driver calibration: {correction.describe()}")
    started = datetime.now(UTC)  # one {time} for every output of the run
    target = plan_output(out, "--out", "the JSON lines", overwrite, append, started)
    if summary_path is not None:
        summary_path = check_output_file(expand_placeholders(str(summary_path), started), "--summary",
                                         "the run summary")
    if screenshot is not None:
        screenshot = check_output_file(expand_placeholders(str(screenshot), started), "--screenshot",
                                       "the window's PNG")
    model_path = model or config.model or DEFAULT_MODEL
    zone_map = load_zone_map(config.zones)
    intrinsics = CameraIntrinsics.from_yaml(config.camera.calibration) if config.camera.calibration else None
    # Open the source before the (possibly minute-long) scan, so a missing camera fails at once.
    src = open_source(source, config)
    if getattr(src, "note", None):  # an image folder is one recording: its subfolders are not read
        err.print(f"source: note: {src.note}; pass a subfolder as --source to read it")
    if gui:  # the overlay window: edge_app.gui (PyQt6 is imported only there)
        from edge_app.gui.app import run_gui

        try:
            gui_code = run_gui(config, src, model_path, zone_map, intrinsics, target or out, max_frames, screenshot)
        finally:
            src.close()
        if gui_code:
            raise typer.Exit(gui_code)
        return
    with StopSignals() as signals:  # SIGINT and SIGTERM alike, through to the last written byte
        try:
            outcome = run_headless(config, src, model_path, zone_map, intrinsics, target or out, max_frames,
                                   benchmark, notify=err.print, progress=ScanProgressPrinter(err), signals=signals)
        except KeyboardInterrupt:
            signals.armed = True  # a second signal must not break the clean-up
            kept = f"; {target} left as it was" if target is not None and target.path.exists() else ""
            # print(), not the console: the signal may have cut a console print short, leaving it mid-buffer.
            print(f"interrupted by {signals.label} during the start-up integrity check: nothing recorded{kept}",
                  file=sys.stderr, flush=True)
            raise typer.Exit(signals.exit_code or EXIT_SIGINT) from None
        finally:
            src.close()
        # Human lines go to stderr when the JSON lines go to stdout, so they never mix.
        report = Console(stderr=out in (None, "-"), highlight=False, soft_wrap=True, markup=False)
        _print_run(report, outcome, target, signals.label)
        if summary_path is not None:
            atomic_write_json(summary_path, outcome.data)
        if outcome.summary.interrupted:
            report.print(f"interrupted by {signals.label}: the frames up to the stop are recorded "
                         f"(exit {signals.exit_code or EXIT_SIGINT})")
            raise typer.Exit(signals.exit_code or EXIT_SIGINT)
        if outcome.blocked:  # monitored in degraded mode to the end; the exit code still says the model was blocked
            report.print(f"exit {EXIT_BLOCKED}: {outcome.integrity.reason}; the frames were monitored in degraded "
                         "mode (head pose only)")
            raise typer.Exit(EXIT_BLOCKED)
    if outcome.drive is not None and not outcome.drive.passed:
        raise typer.Exit(EXIT_CHECKS_FAILED)


_MODE_WORDS = {"new": "a new file", "overwrite": "replacing any earlier file (--overwrite)",
               "append": "added to the file (--append)", "stream": "written directly"}


def _print_run(report: Console, outcome, out, stopped_by: str) -> None:
    """The human summary of a finished headless run; ``out``: the checked --out target (None: stdout)."""
    summary, data = outcome.summary, outcome.data
    stopped = f" (stopped by {stopped_by})" if summary.interrupted else ""
    report.print(f"frames {summary.frames}{stopped}, captured {summary.captured}, dropped {summary.dropped}, "
                 f"states {summary.states}")
    if out is not None:
        report.print(f"recording: {data['log_lines_written']} JSON lines in {out}, {_MODE_WORDS[out.mode]}")
    if outcome.log_lines_dropped:
        why = f" ({outcome.log_error})" if outcome.log_error is not None else " (the disk or pipe could not keep up)"
        report.print(f"warning: {outcome.log_lines_dropped} of {summary.frames} frames' JSON lines were not written "
                     f"to {out or 'stdout'}{why}; gaps show in the frame numbers")
    if data.get("unreadable_images"):
        bad = data["unreadable_images"]
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        report.print(f"warning: {len(bad)} image(s) did not decode and were skipped as dropped frames: {bad[0]}{more}")
    if summary.invalid_gaze_frames:
        report.print(f"warning: the model returned NaN/inf gaze on {summary.invalid_gaze_frames} frames "
                     "(reported as NO_FACE with that reason)")
    # Per-stage latency on every exit (docs/architecture.md section 2); --benchmark leaves out the warm-up.
    report.print(f"{'stage':<13} {'p50 ms':>8} {'p95 ms':>8}")
    for stage, st in summary.latency.items():
        report.print(f"{stage:<13} {st['p50']:8.2f} {st['p95']:8.2f}")
    report.print(f"end-to-end FPS {summary.fps:.1f} (source included); processing FPS {summary.processing_fps:.1f}")
    if outcome.drive is not None:
        _print_drive(report, outcome, data)
    from edge_app.run_report import summary_lines

    report.print("summary:")
    for line in summary_lines(data):
        report.print(f"  {line}")


def _print_drive(report: Console, outcome, data) -> None:
    """The synthetic drive's accuracy per zone and its scripted checks."""
    if not data["gaze_frames"]:
        report.print("synthetic driver: no gaze frames (the model was not run)")
    else:
        report.print(f"synthetic driver: mean angular error {data['mean_angular_error_deg']:.2f} deg over "
                     f"{data['gaze_frames']} frames (median {data['median_angular_error_deg']:.2f}) against ground "
                     f"truth, camera frame; {data['oracle_mean_angular_error_deg']:.2f} deg normalised with the true head "
                     "pose and face centre (the oracle: the model alone, without landmark and head-pose errors)")
    for z, v in data["mean_angular_error_deg_by_zone"].items():
        report.print(f"  {z:<20} {v['pipeline']:6.2f} deg pipeline, {v['oracle']:6.2f} deg oracle, {v['frames']} frames")
    for c in outcome.drive.results():
        if not c.judged:
            report.print(f"  skip {c.label} ({c.start_s:.1f}-{c.end_s:.1f} s): the run stopped before it")
            continue
        mark = "ok  " if c.passed else "FAIL"
        report.print(f"  {mark} {c.label} ({c.start_s:.1f}-{c.end_s:.1f} s): expected {c.expected}, got "
                     f"{c.observed_level} {list(c.observed_reasons) or ''}")


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

    Exit codes: 0 done, 2 user error, 10 model blocked by the integrity check, 130 / 143 stopped by
    SIGINT / SIGTERM (during the start-up scan: nothing recorded; later: the trial marked interrupted).
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
        info = t["trial"]
        detail = f" ({info['status_detail']})" if info["status_detail"] else ""
        console.print(f"{t['label']}: trial {info['id']} {info['status']}{detail}, {t['frames']} frames")
        for p in t["phases"]:
            extra = ""
            if p["trigger"] and p.get("ae_deg") is not None:
                extra = f", AE {p['ae_deg']:.2f}, DAE {p['dae_deg']:.2f}, ASR@5deg {100 * p['asr_5deg']:.1f}%"
            err_text = "-" if p["angular_error_deg"] is None else f"{p['angular_error_deg']:.2f}"
            console.print(f"{t['label']}: {p['phase']}{' [trigger]' if p['trigger'] else ''}: "
                          f"{p['gaze_frames']}/{p['frames']} frames, angular error {err_text} deg{extra}")
    console.print(f"report: {out}")


@app.command()
def crops(
    source: str = typer.Argument(..., help="IMAGE_DIR | IMAGE | VIDEO: photos or camera frames with a face"),
    out: Path = typer.Option(..., "--out", help="new folder for the face crops (PNG); must not hold files"),
    size: int = typer.Option(224, "--size", min=16, max=1024, help="side of the crops in px (the scan resizes "
                             "them to the model's input)"),
    config_path: Path | None = typer.Option(None, "--config", help="YAML settings (face stage, normalisation)"),
) -> None:
    """Cut the face out of each photo or frame as the app does (face stage, head pose,
    normalisation) and write the crops: a clean set for `securegaze scan --clean OUT`.

    The subfolders of an image folder are read too (hidden ones skipped), and each crop keeps its
    image's name and subfolder. Frames without a face, and images that do not decode, are left out,
    counted and named. The start-up check does this by itself for a --clean folder of photos; this
    command makes the same faces for the scanner's own commands.
    Exit codes: 0 done, 2 user error (bad source, an --out that holds files, no face at all).
    """
    from edge_app.clean_faces import write_face_crops
    from edge_app.image_files import names_text
    from edge_app.sources import open_source
    from edge_app.startup import load_edge_config
    from securegaze.errors import InputFileError
    from securegaze.io import check_output_dir, check_outside, shown

    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    config = load_edge_config(config_path)
    if not Path(source).exists():  # camera:N and synthetic are no files either
        raise InputFileError(f"crops {shown(source)}: no such file or folder; expected an image folder, an "
                             "image or a video file")
    check_output_dir(out, "--out", "the face crops")
    check_outside(out, "--out", source, "SOURCE")  # subfolders are read: the crops would be read next time
    if out.is_dir() and any(out.iterdir()):
        raise InputFileError(f"--out {shown(out)}: the folder already holds files; give a new or empty "
                             "folder")
    src = open_source(source, config, subfolders=True)
    written, frames, missed = write_face_crops(src, out, config, size)
    bad = [src.name(path) for path in getattr(src, "unreadable", [])]
    found = frames + len(bad)  # an image folder's files; a video's frames
    unread = f" ({len(bad)} unreadable: {names_text(bad)})" if bad else ""
    if not written:
        decoded = f" that decode{unread}" if bad else ""
        what = (f"none of its {found} images decodes{unread}" if not frames else
                f"no face found in any of its {frames} images or frames{decoded}")
        raise InputFileError(f"{shown(source)}: {what}")
    left = f"; {len(missed)} without a face left out ({names_text(missed)})" if missed else ""
    err.print(f"crops: {written} faces of {found} images or frames{unread} written to {shown(out)} at "
              f"{size}x{size} px{left}; scan with: securegaze scan MODEL --clean {shown(out)}")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    return run_app(app, argv, prog_name="edge-app")


if __name__ == "__main__":
    sys.exit(main())
