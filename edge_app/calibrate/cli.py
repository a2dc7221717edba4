"""``edge-app calibrate``: board, camera, driver and cabin (docs/calibration.md).

Each command parses its options, checks its output path before the long work, calls its module
and prints what it measured; the file is written atomically and only after the app's own reader
accepted it. Exit codes: 0 written; 2 a user error or a refused calibration (one ``error:`` line
naming what is missing; nothing written); 10 the gaze model was blocked by the start-up integrity
check (driver and cabin run the gaze pipeline, which the check guards as in ``edge-app run``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from edge_app.calibrate.board import DEFAULT_BOARD
from edge_app.calibrate.camera import DEFAULT_MAX_VIEWS
from edge_app.calibrate.gaze_session import DEFAULT_DWELL_S, LEAD_IN_S

#: The bundled model, as in ``edge-app run`` (edge_app/cli.py), which imports this module.
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"

calibrate_app = typer.Typer(add_completion=False, no_args_is_help=True,
                            help="Calibrate: a printable board, camera intrinsics, a driver's gaze, the cabin zone map.")


def _console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


@calibrate_app.command("board")
def board_command(
    out: Path = typer.Option(..., "--out", help="the page: .pdf (vector) or .png"),
    board: str = typer.Option(DEFAULT_BOARD, "--board", help="chessboard:COLSxROWS:SQUARE_MM or "
                              "charuco:COLSxROWS:SQUARE_MM:MARKER_MM[:DICT]"),
    paper: str = typer.Option("a4", "--paper", help="a4 | letter (landscape)"),
    dpi: int = typer.Option(300, "--dpi", help="resolution of a .png page"),
) -> None:
    """Write a printable calibration board at true size (print at 100 %, check the scale bar)."""
    from edge_app.calibrate.board import BoardSpec, write_board_page
    from securegaze.io import check_output_file

    spec = BoardSpec.parse(board)
    check_output_file(out, "--out", "the board page")
    label = write_board_page(spec, out, paper, dpi)
    c = Console(highlight=False, soft_wrap=True, markup=False)
    c.print(f"board: wrote {out}: {label}")
    c.print(f"board: square size {spec.square_mm:g} mm; print at 100 % (no 'fit to page'), check the 50-mm scale bar, "
            "glue the page flat on a rigid board")
    c.print(f"board: then edge-app calibrate camera --source camera:0 --board {spec.text} --out camera.yaml")


@calibrate_app.command("camera")
def camera_command(
    source: str = typer.Option(..., "--source", help="camera:N | VIDEO | IMAGE_DIR with views of the board"),
    out: Path = typer.Option(..., "--out", help="camera intrinsics YAML (camera.calibration in the config)"),
    board: str = typer.Option(DEFAULT_BOARD, "--board", help="the board, as printed by calibrate board"),
    square_mm: float | None = typer.Option(None, "--square-mm", help="the printed square as measured, mm "
                                           "(default: the board's)"),
    views: int = typer.Option(DEFAULT_MAX_VIEWS, "--views", min=3, max=500, help="stop after this many distinct views"),
    max_seconds: float = typer.Option(120.0, "--max-seconds", help="live camera: stop collecting after this long"),
    k3: bool = typer.Option(False, "--k3", help="also fit the radial coefficient k3 (wide-angle lenses)"),
    config_path: Path | None = typer.Option(None, "--config", help="YAML settings (camera.width/height for camera:N)"),
) -> None:
    """Camera intrinsics from views of the board: coverage checked, RMS reprojection error printed."""
    import time

    from edge_app.calibrate.board import BoardSpec
    from edge_app.calibrate.camera import (
        CORNER_NAMES,
        calibrate_views,
        collect_views,
        corners_reached,
        write_camera_yaml,
    )
    from edge_app.calibrate.yaml_out import check_yaml_output
    from edge_app.config import load_config
    from edge_app.sources import open_source
    from securegaze.errors import ConfigError

    spec = BoardSpec.parse(board)
    if square_mm is not None and not 2.0 <= square_mm <= 200.0:  # NaN fails too
        raise ConfigError(f"--square-mm {square_mm:g} is outside 2..200 mm")
    spec = spec.with_square(square_mm)
    check_yaml_output(out, "--out", "the camera intrinsics")
    if source.startswith("synthetic") or source == "camera:synthetic":
        raise ConfigError(f"--source {source}: the synthetic driver shows no board; use camera:N, a video or a "
                          "folder of photos of the board")
    if not 1.0 <= max_seconds <= 3600.0:
        raise ConfigError(f"--max-seconds {max_seconds:g} is outside 1..3600")
    err = _console()
    src = open_source(source, load_config(config_path))
    started = time.monotonic()
    err.print(f"camera: {spec.describe()}; reading {src.description}" +
              ("; move the board across the frame, into its corners, tilted each way" if src.live else ""))

    def on_frame(got, view) -> None:
        if view is not None and src.live:
            reached = corners_reached(got.views, got.frame_size)
            todo = [n for n in CORNER_NAMES if not reached[n]]
            err.print(f"camera: view {len(got.views)}: {len(view.detection.image_points)} corners"
                      + (f"; frame corners still to reach: {', '.join(todo)}" if todo else ""))

    try:
        got = collect_views(src, spec, views, on_frame=on_frame,
                            should_stop=(lambda: time.monotonic() - started > max_seconds) if src.live else None)
    finally:
        src.close()
    err.print(f"camera: board found in {got.frames_with_board} of {got.frames_read} frames; {len(got.views)} distinct "
              f"views ({got.duplicates} near-duplicates left out)")
    cal = calibrate_views(got, fit_k3=k3)
    k, d = cal.matrix, cal.distortion
    worst = int(cal.view_rms_px.argmax())
    c = Console(highlight=False, soft_wrap=True, markup=False)
    dropped = f"; dropped as outliers: {', '.join(cal.dropped)}" if cal.dropped else ""
    c.print(f"camera: RMS reprojection error {cal.rms_px:.3f} px over {len(cal.used)} views (worst view "
            f"{cal.view_rms_px[worst]:.3f} px, {cal.used[worst]}){dropped}")
    fov_h, fov_v = cal.fov_deg
    c.print(f"camera: fx {k[0, 0]:.2f} px, fy {k[1, 1]:.2f} px, centre ({k[0, 2]:.2f}, {k[1, 2]:.2f}) px for "
            f"{cal.frame_size[0]}x{cal.frame_size[1]}; field of view {fov_h:.1f} x {fov_v:.1f} deg")
    c.print(f"camera: distortion k1 {d[0]:+.4f} k2 {d[1]:+.4f} p1 {d[2]:+.5f} p2 {d[3]:+.5f} k3 {d[4]:+.4f}")
    write_camera_yaml(cal, out, spec, source)
    c.print(f"camera: wrote {out} (set camera.calibration: {out} in the config)")


def _check_display(gui: bool) -> None:
    """With ``--gui``, a display must be there before the integrity check (as for edge-app trial)."""
    if gui:
        from edge_app.gui.qt_env import NoDisplayError, display_problem, prepare_qt_environment

        prepare_qt_environment()
        problem = display_problem()
        if problem:
            raise NoDisplayError(problem)


def _open_gaze_pipeline(config, model: Path | None, err: Console):
    """The integrity check and the pipeline of ``edge-app run``; exits 10 when the model is blocked."""
    from edge_app.head_pose import CameraIntrinsics
    from edge_app.integrity import EXIT_BLOCKED
    from edge_app.pipeline import Pipeline
    from edge_app.startup import ScanProgressPrinter, check_and_open_engine
    from edge_app.zones import load_zone_map

    model_path = model or config.model or DEFAULT_MODEL
    err.print(f"integrity: checking {model_path} (policy {config.integrity.policy})")
    result, engine = check_and_open_engine(config, model_path, ScanProgressPrinter(err))
    err.print(f"integrity: {result.reason} [{result.source}]")
    if engine is None:
        err.print(f"error: {result.reason}; nothing calibrated")
        raise typer.Exit(EXIT_BLOCKED)
    intrinsics = CameraIntrinsics.from_yaml(config.camera.calibration) if config.camera.calibration else None
    return Pipeline(config, engine, load_zone_map(config.zones), intrinsics, result), result


def _session(pipeline, src, protocol, lead_in_s: float | None, gui: bool, config, err: Console, what: str):
    """Prompt ``protocol``'s targets and record them (headless prompts on stderr, or the window)."""
    from edge_app.calibrate.gaze_session import GazeRecorder, record_session
    from securegaze.errors import CalibrationError

    lead = (LEAD_IN_S if src.live else 0.0) if lead_in_s is None else lead_in_s
    n = len(protocol.targets)

    def prompt(k, target) -> None:
        err.print(f"{what}: {target.prompt} ({k + 1}/{n}, {protocol.dwell_s:g} s)")

    recorder = GazeRecorder(protocol, lead, on_prompt=None if gui else prompt)
    err.print(f"{what}: {n} targets x {protocol.dwell_s:g} s from {src.description}"
              + (f"; the first prompt in {lead:g} s" if lead else ""))
    try:
        complete = record_session(pipeline, src, recorder, gui, config)
    finally:
        src.close()
    if not complete:
        raise CalibrationError(f"{what}: the session stopped at target {recorder.current_index + 1} of {n}; nothing "
                               "written")
    return recorder


@calibrate_app.command("driver")
def driver_command(
    driver_id: str = typer.Option(..., "--driver-id", help="the driver's id (letters, digits, . _ -)"),
    source: str = typer.Option("camera:0", "--source", help="camera:N | VIDEO | synthetic (the synthetic driver)"),
    out: Path | None = typer.Option(None, "--out", help="the calibration file (default: <driver.store>/<ID>.yaml)"),
    targets: str = typer.Option("cabin", "--targets", help="cabin | screen9 | comma list of zone names"),
    dwell_s: float = typer.Option(DEFAULT_DWELL_S, "--dwell-s", help="seconds per target"),
    fit: str = typer.Option("auto", "--fit", help="auto | bias | affine"),
    lead_in_s: float | None = typer.Option(None, "--lead-in-s", help=f"seconds before the first target (default "
                                           f"{LEAD_IN_S:g} for a live camera, else 0)"),
    model: Path | None = typer.Option(None, "--model", help="model bundle or .onnx (default: models/default)"),
    config_path: Path | None = typer.Option(None, "--config", help="YAML settings (see calibration/edge_default.yaml)"),
    policy: str | None = typer.Option(None, "--policy", help="integrity policy: block | warn"),
    audit_db: Path | None = typer.Option(None, "--audit-db", help="SQLite audit database"),
    gui: bool = typer.Option(False, "--gui", help="prompt the targets in the overlay window"),
) -> None:
    """A driver's gaze correction from a few targets, for edge-app run --driver ID."""
    import re

    from edge_app.calibrate.driver import driver_protocol, fit_correction, write_driver_yaml
    from edge_app.calibrate.gaze_correction import DRIVER_ID_PATTERN, driver_file
    from edge_app.calibrate.gaze_session import check_dwell, session_source
    from edge_app.calibrate.yaml_out import check_yaml_output
    from edge_app.startup import load_edge_config
    from edge_app.zones import load_zone_map
    from securegaze.errors import ConfigError
    from securegaze.io import check_output_dir

    if not re.match(DRIVER_ID_PATTERN, driver_id):
        raise ConfigError(f"--driver-id {driver_id!r}: letters, digits, '.', '_' or '-', up to 64")
    config = load_edge_config(config_path, policy, audit_db)
    config = config.model_copy(update={"driver": config.driver.model_copy(update={"id": None})})  # raw gaze
    protocol = driver_protocol(targets, load_zone_map(config.zones), check_dwell(dwell_s))
    if out is None:
        out = driver_file(config.driver, driver_id)
        check_output_dir(out.parent, "driver.store", "driver calibrations")
        out.parent.mkdir(parents=True, exist_ok=True)
    check_yaml_output(out, "--out", f"driver {driver_id}'s calibration")
    if fit not in ("auto", "bias", "affine"):
        raise ConfigError(f"--fit must be auto, bias or affine, got {fit!r}")
    _check_display(gui)
    err = _console()
    src = session_source(source, protocol, config)
    try:
        pipeline, result = _open_gaze_pipeline(config, model, err)
    except BaseException:
        src.close()  # a camera must not stay open after a refused or blocked start
        raise
    recorder = _session(pipeline, src, protocol, lead_in_s, gui, config, err, f"driver {driver_id}")
    got = fit_correction(recorder.records, driver_id, fit, result.model_sha256)
    c = Console(highlight=False, soft_wrap=True, markup=False)
    c.print(f"{'target':<20} {'frames':>7} {'kept':>5} {'before':>7} {'after':>7}")
    for t in got.targets:
        before = "-" if t.before_deg is None else f"{t.before_deg:7.2f}"
        after = "-" if t.after_deg is None else f"{t.after_deg:7.2f}"
        note = f"  {t.note}" if t.note else ""
        c.print(f"{t.name:<20} {t.faces:>3}/{t.frames:<3} {t.kept:>5} {before:>7} {after:>7}{note}")
    c.print(got.correction.describe())
    c.print(f"driver {driver_id}: error over the targets {got.rms_before_deg:.2f} deg RMS before, "
            f"{got.rms_after_deg:.2f} after (leave-one-target-out {got.loo_rms_deg:.2f}); {got.frames_used} frames "
            f"used, {got.frames_dropped} dropped as outliers")
    write_driver_yaml(got, out, source, targets)
    name = driver_id if out == driver_file(config.driver, driver_id) else out
    c.print(f"driver {driver_id}: wrote {out} (edge-app run --driver {name})")


@calibrate_app.command("cabin")
def cabin_command(
    source: str = typer.Option("camera:0", "--source", help="camera:N | VIDEO | synthetic (the synthetic driver)"),
    out: Path = typer.Option(..., "--out", help="the zone map YAML (zones: in the config)"),
    zones: str | None = typer.Option(None, "--zones", help="zones to prompt, comma list (default: every zone of the "
                                     "fallback map with a target point)"),
    fallback: Path | None = typer.Option(None, "--fallback", help="zone map for the zones not recorded (default: the "
                                         "config's zones, else calibration/zones_default.yaml)"),
    dwell_s: float = typer.Option(DEFAULT_DWELL_S, "--dwell-s", help="seconds per zone"),
    driver: str | None = typer.Option(None, "--driver", help="apply this driver's calibration (id or .yaml file)"),
    lead_in_s: float | None = typer.Option(None, "--lead-in-s", help=f"seconds before the first zone (default "
                                           f"{LEAD_IN_S:g} for a live camera, else 0)"),
    model: Path | None = typer.Option(None, "--model", help="model bundle or .onnx (default: models/default)"),
    config_path: Path | None = typer.Option(None, "--config", help="YAML settings (see calibration/edge_default.yaml)"),
    policy: str | None = typer.Option(None, "--policy", help="integrity policy: block | warn"),
    audit_db: Path | None = typer.Option(None, "--audit-db", help="SQLite audit database"),
    gui: bool = typer.Option(False, "--gui", help="prompt the zones in the overlay window"),
) -> None:
    """The cabin zone map from the driver looking at each zone when prompted."""
    from edge_app.calibrate.cabin import build_zone_map, cabin_protocol_for, summarise_zone, write_cabin_yaml
    from edge_app.calibrate.gaze_correction import load_gaze_correction, with_driver
    from edge_app.calibrate.gaze_session import check_dwell, session_source
    from edge_app.calibrate.yaml_out import check_yaml_output
    from edge_app.startup import load_edge_config
    from edge_app.zones import DEFAULT_ZONE_MAP, load_zone_map

    config = with_driver(load_edge_config(config_path, policy, audit_db), driver)
    fallback_path = fallback or config.zones or DEFAULT_ZONE_MAP
    fallback_map = load_zone_map(fallback_path)
    protocol = cabin_protocol_for(fallback_map, zones, check_dwell(dwell_s))
    check_yaml_output(out, "--out", "the zone map")
    _check_display(gui)
    err = _console()
    correction = load_gaze_correction(config)
    if correction is not None:
        err.print(f"cabin: gaze corrected for {correction.describe()}")
    src = session_source(source, protocol, config)
    try:
        pipeline, _ = _open_gaze_pipeline(config, model, err)
    except BaseException:
        src.close()  # a camera must not stay open after a refused or blocked start
        raise
    recorder = _session(pipeline, src, protocol, lead_in_s, gui, config, err, "cabin")
    recordings = [summarise_zone(r) for r in recorder.records]
    cabin = build_zone_map(fallback_map, recordings)
    c = Console(highlight=False, soft_wrap=True, markup=False)
    for z in recordings:
        if z.used:
            c.print(f"cabin: {z.name:<20} {z.kept}/{z.frames} frames, median ({z.median_deg[0]:6.1f}, "
                    f"{z.median_deg[1]:6.1f}) deg, spread {z.spread_deg:.2f} deg")
        else:
            c.print(f"cabin: {z.name:<20} not recorded ({z.note}): the fallback's box")
    for note in cabin.notes:
        c.print(f"cabin: {note}")
    write_cabin_yaml(cabin, out, source, str(fallback_path))
    c.print(f"cabin: wrote {out} (zones: {out} in the config)")
