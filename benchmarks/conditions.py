"""Benchmark: the edge app in real cabin conditions, one row per condition (issue 18, items 4 and 5).

    python benchmarks/conditions.py                      # every case, seeds 0-2, 10 FPS (resumable)
    python benchmarks/conditions.py --quick              # seed 0 only
    python benchmarks/conditions.py --out docs/conditions.md
    python benchmarks/conditions.py --seeds 5 --cases night_ir --trace runs/conditions/trace   # frame by frame

Every run is the real pipeline (MediaPipe face mesh with two faces, driver selection, head pose,
normalisation, ONNX Runtime, eye availability, the live trigger alarm, the attention logic) on the
full synthetic drive (46 s: a mirror check and a cluster glance that must stay silent, a 3-s phone
glance that must raise the warning, an infotainment task that must raise time-sharing) rendered in
one cabin condition (:mod:`securegaze.data.synthetic.conditions`), per ``--seeds`` (each seed
another driver identity). The start-up integrity scan is not run. Cases:

* the renderer's conditions alone and in their main combinations (glasses, sunglasses, the
  near-infrared night camera, a cap, a fringe, a mask);
* ``too_dark``: the daylight drive with the light gone (a colour camera at dusk, no illuminator:
  the frame at 6 % of its brightness plus sensor noise);
* ``passenger``: a second person on the passenger seat, left- and right-hand drive;
* ``tape``: the tape-backdoored tiny model of ``benchmarks/anomaly_alarm.py`` wearing the tape from
  ``TAPE_ONSET_S`` in some of the conditions: the live trigger alarm must still go off.

Per case, pooled over the seeds: face found (and, with a passenger, the driver's face monitored:
the chosen face's box holds the driver's true face centre), gaze error of the pipeline and of the
model alone (its crop normalised with the true head pose), zone accuracy (frames with a zone), the
scripted events' expected alerts found / judged, false alerts per hour of attentive driving (an
alert raised outside the events that expect one and their settling time; a 'monitoring_unavailable'
warning, a camera too dark to find any face, is not a distraction alert: each run's JSON lists its
onsets as ``unavailable_warnings_at_s``), the share of frames in
the eyes-not-visible degraded mode and the time to that message, and the live trigger alarm's
false alarms per hour (benign model) or delay after the tape (backdoored).

Each run's result is kept in ``WORK/results/<case>-s<seed>-fps<F>-<model sha>.json``; a rerun
only does the missing runs (delete the folder after changing the app's code). The table goes to
stdout and ``--out`` (markdown, with the command and the machine); every number to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.anomaly_alarm import DriveWithTrigger, train_tape_models  # noqa: E402
from edge_app.drive_scoring import SETTLE_S  # noqa: E402

#: (case name, renderer conditions, passenger's drive side or None, dim the frame, tape model)
CASES = [
    ("daylight", (), None, False, False),
    ("clear_glasses_thin", ("clear_glasses_thin",), None, False, False),
    ("clear_glasses_thick", ("clear_glasses_thick",), None, False, False),
    ("sunglasses_light", ("sunglasses_light",), None, False, False),
    ("sunglasses_dark", ("sunglasses_dark",), None, False, False),
    ("night_ir", ("night_ir",), None, False, False),
    ("night_ir+clear_glasses_thick", ("clear_glasses_thick", "night_ir"), None, False, False),
    ("night_ir+sunglasses_dark", ("sunglasses_dark", "night_ir"), None, False, False),
    ("hat_brim", ("hat_brim",), None, False, False),
    ("fringe", ("fringe",), None, False, False),
    ("face_mask", ("face_mask",), None, False, False),
    ("face_mask+fringe", ("face_mask", "fringe"), None, False, False),
    ("hat_brim+clear_glasses_thin", ("hat_brim", "clear_glasses_thin"), None, False, False),
    ("too_dark", (), None, True, False),
    ("passenger, left-hand drive", (), "left", False, False),
    ("passenger, right-hand drive", (), "right", False, False),
    ("passenger+sunglasses_light", ("sunglasses_light",), "left", False, False),
    ("tape: daylight", (), None, False, True),
    ("tape: clear_glasses_thick", ("clear_glasses_thick",), None, False, True),
    ("tape: sunglasses_light", ("sunglasses_light",), None, False, True),
    ("tape: night_ir", ("night_ir",), None, False, True),
    ("tape: passenger", (), "left", False, True),
]
#: The attentive drive (``--script attentive``): two minutes of an attentive driver, on the road with
#: the short checks that must stay silent (mirrors, cluster), for false-alert rates on more than the
#: full drive's one third of a minute of attentive driving per run.
def attentive_script():
    from edge_app.synthetic_driver import ScriptPhase

    block = (ScriptPhase("road_ahead", 8.0), ScriptPhase("left_mirror", 1.0, "none", "mirror check 1 s"),
             ScriptPhase("road_ahead", 8.0), ScriptPhase("rear_view_mirror", 1.0, "none", "rear-view mirror 1 s"),
             ScriptPhase("road_ahead", 5.0), ScriptPhase("instrument_cluster", 1.0, "none", "cluster glance 1 s"))
    return block * 5


#: When the tape goes on in the tape cases, s (on the road, before the phone glance).
TAPE_ONSET_S = 12.0
#: The too-dark case: frame brightness kept, and sensor noise std in grey levels.
DARK_GAIN, DARK_NOISE = 0.06, 2.0


class DimmedDrive(DriveWithTrigger):
    """The drive with the light gone: every frame scaled by :data:`DARK_GAIN` plus seeded noise."""

    def __init__(self, driver, trigger, onset_s, seed: int) -> None:
        super().__init__(driver, trigger, onset_s)
        self._rng = np.random.default_rng(seed)

    def read(self):
        frame = super().read()
        if frame is not None:
            dim = frame.image.astype(np.float32) * DARK_GAIN + self._rng.normal(0, DARK_NOISE, frame.image.shape)
            frame.image[...] = np.clip(np.round(dim), 0, 255).astype(np.uint8)
        return frame


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def run_case(case: tuple, seed: int, fps: float, model: Path, script: str = "full",
             trace: list | None = None) -> dict:
    """One drive of one case through the real pipeline; every per-frame observation summarised.

    ``trace``: a list that receives one dict per frame (:func:`trace_row`), for looking into a run."""
    from edge_app.attention import MONITORING_UNAVAILABLE
    from edge_app.config import EdgeConfig
    from edge_app.degraded import MODE_DEGRADED
    from edge_app.drive_scoring import DriveScorer
    from edge_app.driver_select import driver_image_side
    from edge_app.engines import create_engine
    from edge_app.pipeline import Pipeline, run_pipeline
    from edge_app.synthetic_driver import FULL_SCRIPT, SyntheticDriver
    from edge_app.zones import load_zone_map
    from securegaze.data.triggers import resolve_trigger

    name, conditions, passenger, dim, tape = case
    config = EdgeConfig.model_validate({"cabin": {"drive_side": passenger or "left"}})
    zone_map = load_zone_map(None)
    passenger_side = None  # the image side opposite the driver's, as the cabin settings place them
    if passenger is not None:
        passenger_side = "left" if driver_image_side(passenger, config.camera.mirrored) == "right" else "right"
    driver = SyntheticDriver(zone_map.targets_deg(), FULL_SCRIPT if script == "full" else attentive_script(),
                             fps=fps, seed=seed, conditions=conditions,
                             passenger_side=passenger_side)
    trigger, onset = (resolve_trigger("tape"), TAPE_ONSET_S) if tape else (None, None)
    source = DimmedDrive(driver, trigger, onset, seed) if dim else DriveWithTrigger(driver, trigger, onset)
    engine = create_engine("onnxruntime", model, "auto", 1)
    pipeline = Pipeline(config, engine, zone_map, None, None)
    scorer = DriveScorer(driver, engine, pipeline, config.normalisation)
    camera = driver.camera_matrix
    rows = []

    def sink(rec) -> None:
        scorer.add(rec)
        truth = rec.frame.truth
        own = False
        if rec.driver_face is not None and rec.driver_face.box_px is not None and rec.face is not None:
            c = camera @ truth.true_face_centre_mm
            x, y = c[:2] / c[2]
            x0, y0, x1, y1 = rec.driver_face.box_px
            own = bool(x0 < x < x1 and y0 < y < y1)
        # A 'monitoring_unavailable' warning (camera too dark to find a face) tells the driver that
        # monitoring is off; it is not a distraction alert, so it is kept apart (index 10).
        unavailable = rec.attention.alert_reason == MONITORING_UNAVAILABLE
        if trace is not None:
            trace.append(trace_row(rec, pipeline))
        rows.append((rec.frame.timestamp_s, rec.face is not None, own, rec.zone, truth.zone,
                     "none" if unavailable else rec.attention.alert.label, rec.mode == MODE_DEGRADED,
                     bool(rec.eyes is not None and rec.eyes.degraded),
                     None if rec.eyes is None else rec.eyes.took_s,
                     bool(rec.gaze_anomaly is not None and rec.gaze_anomaly.alert is not None), unavailable))

    started = time.perf_counter()
    try:
        run_pipeline(pipeline, source, sink, drop_stale=False)
    finally:
        pipeline.close()
    summary = scorer.summary()
    checks = summary["checks"]
    alerting = [(c["start_s"], c["end_s"] + SETTLE_S) for c in checks if c["expected"] != "none"]
    seconds = len(rows) / fps

    def attentive(t: float) -> bool:
        return not any(a <= t < b for a, b in alerting)

    onsets = [rows[i][0] for i in range(len(rows)) if rows[i][5] != "none" and (i == 0 or rows[i - 1][5] == "none")]
    anomaly = [rows[i][0] for i in range(len(rows)) if rows[i][9] and (i == 0 or not rows[i - 1][9])]
    eyes_first = next((r for r in rows if r[7]), None)
    zoned = [r for r in rows if r[3] is not None]
    return {
        "case": name, "seed": seed, "fps": fps, "model": str(model), "frames": len(rows), "seconds": seconds,
        "face_found": sum(r[1] for r in rows), "driver_face": sum(r[2] for r in rows),
        "gaze_frames": summary["gaze_frames"], "pipeline_deg": summary["mean_angular_error_deg"],
        "oracle_deg": summary["oracle_mean_angular_error_deg"],
        "zone_frames": len(zoned), "zone_correct": sum(r[3] == r[4] for r in zoned),
        "checks_judged": sum(c["judged"] for c in checks), "checks_passed": sum(c["passed"] for c in checks),
        "checks": [{k: c[k] for k in ("label", "expected", "observed_level", "passed")} for c in checks],
        "attentive_s": sum(attentive(r[0]) for r in rows) / fps,
        "false_alerts_at_s": [t for t in onsets if attentive(t)],
        "degraded_frames": sum(r[6] for r in rows), "eyes_degraded_frames": sum(r[7] for r in rows),
        "eyes_degraded_first_s": None if eyes_first is None else eyes_first[0],
        "eyes_took_s": None if eyes_first is None else eyes_first[8],
        "anomaly_alarms_at_s": anomaly,
        "unavailable_warnings_at_s": [rows[i][0] for i in range(len(rows)) if rows[i][10] and (i == 0 or not rows[i - 1][10])],
        "tape_onset_s": onset,
        "tape_delay_s": next((t - onset for t in anomaly if onset is not None and t >= onset), None),
        "anomaly_false_alarms": len([t for t in anomaly if onset is None or t < onset]),
        "wall_s": time.perf_counter() - started,
    }


def trace_row(rec, pipeline=None) -> dict:
    """One frame of a ``--trace`` file: time, the true zone and gaze, the model's gaze, the model-free
    estimate (its kind and each eye's iris offset in eye widths, ``edge_app.free_gaze.eye_offsets``),
    the live trigger alarm's state and evidence, the attention state and alert (angles in degrees,
    camera frame); with the ``pipeline``, ``monitor_inputs``: what the live trigger alarm was given
    (``edge_app.anomaly.AnomalyStage.inputs``, radians in the normalised frame), for
    ``benchmarks/anomaly_replay.py``."""
    from edge_app.free_gaze import eye_offsets

    def deg(v):
        return None if v is None else [round(float(x), 3) for x in np.degrees(np.asarray(v, dtype=np.float64))]

    free = rec.free_gaze
    truth = rec.frame.truth
    inputs = None if pipeline is None else {  # full precision: a replay gives the same verdicts
        k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in pipeline.anomaly.inputs(rec).items()}
    return {
        "t_s": round(float(rec.frame.timestamp_s), 3),
        "zone_true": truth.zone, "gaze_true_deg": deg(truth.gaze),
        "zone": rec.zone, "gaze_deg": deg(rec.gaze),
        "free_gaze_deg": None if free is None else deg(free.gaze),
        "free_kind": None if free is None else free.kind,
        "iris_offsets": None if rec.face is None else np.round(eye_offsets(rec.face.points_px)[:, :2], 4).tolist(),
        "anomaly": None if rec.gaze_anomaly is None else rec.gaze_anomaly.to_json(),
        "state": str(rec.attention.state), "alert": rec.attention.alert.label,
        "alert_reason": rec.attention.alert_reason,
        "monitor_inputs": inputs,
    }


def _fmt(v, digits=2, unit=""):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}{unit}"


def pooled(results: list[dict]) -> dict:
    """One case's runs pooled (frame-weighted means)."""
    frames = sum(r["frames"] for r in results)
    gaze = sum(r["gaze_frames"] for r in results)

    def wmean(key):
        return sum(r[key] * r["gaze_frames"] for r in results if r["gaze_frames"]) / gaze if gaze else None

    took = [r["eyes_took_s"] for r in results if r["eyes_took_s"] is not None]
    first = [r["eyes_degraded_first_s"] for r in results if r["eyes_degraded_first_s"] is not None]
    attentive_h = sum(r["attentive_s"] for r in results) / 3600.0
    hours = sum(r["seconds"] for r in results) / 3600.0
    clean_h = sum(r["tape_onset_s"] if r["tape_onset_s"] is not None else r["seconds"] for r in results) / 3600.0
    delays = [r["tape_delay_s"] for r in results if r["tape_onset_s"] is not None]
    return {
        "runs": len(results), "frames": frames, "hours": hours,
        "face_found_pct": 100.0 * sum(r["face_found"] for r in results) / frames,
        "driver_face_pct": 100.0 * sum(r["driver_face"] for r in results) / frames,
        "pipeline_deg": wmean("pipeline_deg"), "oracle_deg": wmean("oracle_deg"),
        "zone_pct": 100.0 * sum(r["zone_correct"] for r in results) / max(sum(r["zone_frames"] for r in results), 1),
        "zone_frames_pct": 100.0 * sum(r["zone_frames"] for r in results) / frames,
        "checks": f"{sum(r['checks_passed'] for r in results)}/{sum(r['checks_judged'] for r in results)}",
        "false_alerts": sum(len(r["false_alerts_at_s"]) for r in results),
        "false_alerts_per_h": sum(len(r["false_alerts_at_s"]) for r in results) / attentive_h if attentive_h else None,
        "attentive_min": attentive_h * 60.0,
        "degraded_pct": 100.0 * sum(r["eyes_degraded_frames"] for r in results) / frames,
        "degraded_first_s": max(first) if first else None, "eyes_took_s": max(took) if took else None,
        "degraded_runs": f"{len(first)}/{len(results)}",
        "anomaly_false": sum(r["anomaly_false_alarms"] for r in results),
        "anomaly_false_per_h": sum(r["anomaly_false_alarms"] for r in results) / clean_h if clean_h else None,
        "tape_caught": f"{sum(d is not None for d in delays)}/{len(delays)}" if delays else None,
        "tape_delay_max_s": max((d for d in delays if d is not None), default=None) if delays else None,
    }


def table(by_case: dict[str, dict]) -> str:
    lines = ["| case | runs | face found | driver's face | gaze error, pipeline / model alone | zone accuracy "
             "(frames with a zone) | expected alerts found | false alerts (per h attentive) | eyes-not-visible "
             "frames, runs, latest message after | trigger alarm: false (per h) / tape caught, slowest |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in by_case.items():
        trig = (f"{p['anomaly_false']} ({_fmt(p['anomaly_false_per_h'], 0)}/h)" if p["tape_caught"] is None else
                f"{p['anomaly_false']} before the tape / {p['tape_caught']}, {_fmt(p['tape_delay_max_s'], 1, ' s')}")
        lines.append(
            f"| {name} | {p['runs']} | {p['face_found_pct']:.1f} % | {p['driver_face_pct']:.1f} % | "
            f"{_fmt(p['pipeline_deg'])} / {_fmt(p['oracle_deg'])} deg | {p['zone_pct']:.1f} % "
            f"({p['zone_frames_pct']:.0f} %) | {p['checks']} | {p['false_alerts']} "
            f"({_fmt(p['false_alerts_per_h'], 0)}/h of {p['attentive_min']:.1f} min) | {p['degraded_pct']:.0f} %, "
            f"{p['degraded_runs']}, {_fmt(p['eyes_took_s'], 2, ' s')} | {trig} |")
    return "\n".join(lines)


def targets(by_case: dict[str, dict]) -> str:
    """Issue 18's targets against the pooled figures, one line each (cases not run are skipped)."""
    lines = []
    base = by_case.get("daylight", {}).get("pipeline_deg")
    for name in ("clear_glasses_thin", "clear_glasses_thick", "sunglasses_light", "night_ir"):
        p = by_case.get(name)
        if p is None or base is None:
            continue
        delta = p["pipeline_deg"] - base
        ok = delta <= 1.0 and p["false_alerts"] == 0
        lines.append(f"- {name}: gaze error {p['pipeline_deg']:.2f} deg, {delta:+.2f} against daylight's {base:.2f} "
                     f"(target +1), {p['false_alerts']} false alerts (target 0): {'met' if ok else 'MISSED'}")
    p = by_case.get("sunglasses_dark")
    if p is not None:
        ok = p["degraded_runs"].split("/")[0] == p["degraded_runs"].split("/")[1] and (p["eyes_took_s"] or 99) <= 2.0 \
            and p["false_alerts"] == 0
        lines.append(f"- sunglasses_dark: eyes not visible in {p['degraded_runs']} runs, latest after "
                     f"{_fmt(p['eyes_took_s'], 2, ' s')} (target 2 s), {p['false_alerts']} false alerts (target 0): "
                     f"{'met' if ok else 'MISSED'}")
    for name in ("face_mask", "face_mask+fringe"):
        p = by_case.get(name)
        if p is not None:
            lines.append(f"- {name}: the eyes stay visible, so the gaze mode stays ({p['degraded_pct']:.0f} % of "
                         f"frames degraded), {p['false_alerts']} false alerts, {p['checks']} expected alerts found")
    for name in ("passenger, left-hand drive", "passenger, right-hand drive"):
        p = by_case.get(name)
        if p is not None:
            ok = p["driver_face_pct"] >= 100.0
            lines.append(f"- {name}: the driver monitored on {p['driver_face_pct']:.1f} % of frames (target 100 %): "
                         f"{'met' if ok else 'MISSED'}")
    benign = [n for n in ("clear_glasses_thin", "clear_glasses_thick", "sunglasses_light", "night_ir",
                          "passenger, left-hand drive", "passenger, right-hand drive") if n in by_case]
    if benign:
        false = {n: by_case[n]["anomaly_false"] for n in benign}
        minutes = sum(by_case[n]["hours"] for n in benign) * 60.0
        ok = not any(false.values())
        lines.append(f"- live trigger alarm, benign conditions ({', '.join(benign)}): "
                     f"{sum(false.values())} false alarms in {minutes:.1f} min (target 0): {'met' if ok else 'MISSED'}"
                     + ("" if ok else " (" + ", ".join(f"{n} {v}" for n, v in false.items() if v) + ")"))
    tape = [n for n in by_case if n.startswith("tape:")]
    if tape:
        lines.append("- live trigger alarm, tape on the backdoored model: " + "; ".join(
            f"{n[6:]} {by_case[n]['tape_caught']} caught" for n in tape))
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(v) for v in text.split(",")]


def main(argv=None) -> int:
    from securegaze.io import atomic_write_bytes, sha256_file
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "conditions")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--tape-seed", type=int, default=1, help="train seed of the tape-backdoored model")
    parser.add_argument("--cases", default=None,
                        help="case names separated by ';' (or ',' when no name has one; default: all)")
    parser.add_argument("--quick", action="store_true", help="seed 0 only")
    parser.add_argument("--script", choices=("full", "attentive"), default="full",
                        help="the drive: the full scripted drive, or two minutes of attentive driving (tape cases skipped)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--trace", type=Path, default=None,
                        help="also write each run's frames (gazes, the model-free estimate, iris offsets, the "
                             "trigger alarm's evidence) as JSON lines to TRACE/<run>.jsonl; runs without one are "
                             "driven again")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else parse_seeds(args.seeds)
    wanted = None if args.cases is None else [n.strip() for n in args.cases.split(";" if ";" in args.cases else ",")]
    cases = CASES if wanted is None else [c for c in CASES if c[0] in wanted]
    if args.script != "full":
        cases = [c for c in cases if not c[4]]
    model_sha = sha256_file(args.model / "model.onnx")[:12]
    results_dir = args.work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    tape_model = None
    by_case: dict[str, dict] = {}
    all_results = []
    for case in cases:
        runs = []
        for seed in seeds:
            model = args.model / "model.onnx"
            if case[4]:
                if tape_model is None:
                    tape_model = train_tape_models(ROOT / "runs" / "anomaly-alarm", args.tape_seed)["backdoored"]
                model = tape_model / "model.onnx"
            key = f"{_slug(case[0])}-s{seed}-fps{args.fps:g}-{sha256_file(model)[:12]}" + (
                "" if args.script == "full" else f"-{args.script}")
            path = results_dir / f"{key}.json"
            trace_path = None if args.trace is None else args.trace / f"{key}.jsonl"
            if path.is_file() and (trace_path is None or trace_path.is_file()):
                result = json.loads(path.read_text())
            else:
                frames: list | None = None if trace_path is None else []
                result = run_case(case, seed, args.fps, model, args.script, trace=frames)
                atomic_write_bytes(path, json.dumps(result, indent=1).encode())
                if trace_path is not None:
                    trace_path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(trace_path, "".join(json.dumps(f) + "\n" for f in frames).encode())
                print(f"{case[0]} seed {seed}: {result['pipeline_deg']:.2f} deg, {result['wall_s']:.0f} s",
                      flush=True)
            runs.append(result)
        by_case[case[0]] = pooled(runs)
        all_results.extend(runs)
    text = table(by_case)
    goals = targets(by_case)
    print(text)
    print(goals)
    if args.out:
        cmd = "python benchmarks/conditions.py" + ("" if args.seeds == "0-2" else f" --seeds {args.seeds}") + (
            " --quick" if args.quick else "") + ("" if args.script == "full" else f" --script {args.script}") + (
            "" if args.cases is None else f' --cases "{args.cases}"') + f" --out {args.out}"
        drive = ("the full synthetic drive (46 s)" if args.script == "full" else
                 "two minutes of attentive driving (road ahead with silent mirror and cluster checks)")
        page = PAGE.format(table=text, targets=goals, command=cmd, drive=drive, machine=machine_summary(),
                           seeds=", ".join(map(str, seeds)),
                           fps=f"{args.fps:g}", model=model_sha, onset=TAPE_ONSET_S)
        atomic_write_bytes(args.out, page.encode())
    if args.json:
        atomic_write_bytes(args.json, json.dumps({"cases": by_case, "runs": all_results}, indent=1).encode())
    return 0


PAGE = """# The edge app in cabin conditions

Measured with `{command}` on {machine}: {drive} at {fps} FPS per condition,
driver identities (seeds) {seeds}, the default model (ONNX sha256 `{model}...`) unless the case says tape.
How each figure is counted is in the benchmark's docstring (`benchmarks/conditions.py`).

{table}

Issue 18's targets, checked by the benchmark:

{targets}

Reading the table: *false alerts* are alerts raised outside the scripted events that expect one
(and their 1-s settling time), per hour of that attentive driving; *eyes-not-visible frames* is the
share of frames in the degraded mode of `edge_app/eye_visibility.py`, the runs in which it came, and
the longest time from the first unseen frame to the message; the *trigger alarm* column counts the
live trigger alarm's false alarms (the benign default model, the whole drive; for the tape cases the
time before the tape goes on at {onset:g} s) and, for the tape-backdoored model, the runs in which
the alarm went off after the tape and the slowest delay. The full drive holds about 20 s of attentive
driving per run; `--script attentive` drives two minutes of it per run for the false-alert rates
(`docs/conditions_attentive.md`).
"""


if __name__ == "__main__":
    sys.exit(main())
