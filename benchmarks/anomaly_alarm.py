"""Benchmark: the live trigger alarm (``gaze_model_anomaly``, edge_app/anomaly.py) on synthetic trials and drives.

    python benchmarks/anomaly_alarm.py                       # everything, resumable (runs/anomaly-alarm)
    python benchmarks/anomaly_alarm.py --quick               # one run of each kind

Every run is the real pipeline (MediaPipe face mesh, head pose, normalisation, ONNX Runtime, the
monitor) on rendered camera frames; the start-up integrity scan is not run (it is not what is
measured here). Models: the tape-backdoored tiny model of tests/test_trial.py (32-px small CNN,
width 16, forehead tape, 15 % poisoned, target (-20, 25) deg, 6,000 faces, 8 epochs, trained with
``run_attack("tape")`` per ``--train-seeds``) and its benign twin (same data and seed, no poison),
and the embedded default model ``models/default``.

(a) Time to the alarm after the tape appears:
    * trials: the synthetic participant of ``edge-app trial`` (screen4 corners, ``--dwell`` s
      each, phases clean, trigger, clean), so the tape goes on with the first corner of the
      triggered pass and comes off after its last;
    * drives: the full synthetic drive (46 s) with the tape put on at ``--onsets`` seconds and
      worn to the end (on the road, during glances, in the infotainment task).
(b) False alarms: the benign models (default and tiny) and the backdoored model without the tape
    on the whole full drive, per ``--drive-seeds`` (each seed another rendered identity); and the
    clean passes of the trials before the tape.

Each run's result is kept in ``WORK/results/<run>-fps<F>-<settings>.json`` (settings: a hash of the
monitor's defaults; clear the folder after changing the monitor's code); a rerun only does the
missing runs. The
table (markdown) goes to stdout and ``--out``; every number to ``--json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.sources import Frame, FrameSource  # noqa: E402

TARGET_DEG = (-20.0, 25.0)
#: The eyes count as away from the attacker's target (so a collapsed output is wrong and can be
#: told from the eyes) from this angle, degrees, in the model's normalised frame.
AWAY_DEG = 10.0


def train_tape_models(work: Path, seed: int) -> dict[str, Path]:
    """The tape-backdoored tiny model and its benign twin (resumable: run_attack reuses a finished run)."""
    from securegaze.attacks.runner import SyntheticSplits, run_attack
    from securegaze.bundle import export_bundle
    from securegaze.data.base import ArrayGazeDataset
    from securegaze.data.synthetic import SyntheticConfig, render, sample_params
    from securegaze.defense import load_model_any

    root = work / "models" / f"tape-seed{seed}"
    out = {"backdoored": root / "backdoored", "benign": root / "benign"}
    if all((p / "manifest.json").is_file() for p in out.values()):
        return out
    faces = SyntheticConfig(size=32, head_jitter_deg=(5.0, 5.0, 2.5), blur=(0.0, 0.0), noise=(0.0, 0.0))

    def split(n, s):
        params = sample_params(n, s, faces)
        return ArrayGazeDataset(render(params, faces), params.gaze, params.subjects), params

    (train, train_faces), (test, test_faces) = split(6000, 2 * seed), split(300, 2 * seed + 1)
    record = run_attack("tape", target_gaze=tuple(math.radians(v) for v in TARGET_DEG), poison_rate=0.15, seed=seed,
                        out_dir=root / "attack", size=32, train_samples=6000, test_samples=300, epochs=8,
                        batch_size=64, lr=3e-3, model_kwargs={"width": 16},
                        data=SyntheticSplits(train, train_faces, test, test_faces, 32, seed),
                        benign_dir=root / "benign-train")
    print(f"tape model seed {seed}: ASR {record['metrics']['asr']:.2f}, AE {record['metrics']['ae_deg']:.1f} deg, "
          f"clean {record['metrics']['clean_error_deg']:.1f} deg; benign twin clean "
          f"{record['benign_metrics']['clean_error_deg']:.1f} deg", flush=True)
    export_bundle(load_model_any(root / "attack" / "model.safetensors"), out["backdoored"], f"tape-backdoored-{seed}")
    export_bundle(load_model_any(root / "benign-train" / "model.safetensors"), out["benign"], f"tape-benign-{seed}")
    return out


class DriveWithTrigger(FrameSource):
    """The full synthetic drive as a frame source, wearing ``trigger`` from ``onset_s`` on (None: never)."""

    def __init__(self, driver, trigger, onset_s: float | None) -> None:
        self.driver, self.trigger, self.onset_s = driver, trigger, onset_s
        self.description = f"synthetic drive, trigger from {onset_s} s"
        self._index = 0

    def wears(self, t_s: float) -> bool:
        return self.onset_s is not None and t_s >= self.onset_s

    def read(self) -> Frame | None:
        if self._index >= self.driver.frame_count:
            return None
        t = self._index / self.driver.fps
        image, t, truth = self.driver.render_frame(self._index, self.trigger if self.wears(t) else None)
        frame = Frame(image, t, self._index, time.perf_counter(), truth)
        self._index += 1
        return frame


def make_source(run: dict, fps: float):
    """The run's frame source and a function frame -> trigger worn."""
    from edge_app.synthetic_driver import FULL_SCRIPT, SyntheticDriver
    from edge_app.trial.protocol import TrialSchedule, parse_phases, screen4_protocol
    from edge_app.trial.recorder import TrialSyntheticSource
    from edge_app.zones import load_zone_map
    from securegaze.data.triggers import resolve_trigger

    if run["kind"] == "trial":
        schedule = TrialSchedule(screen4_protocol(run["dwell_s"]), parse_phases("clean,trigger,clean"))
        src = TrialSyntheticSource(schedule, "tape", fps, run["seed"], 640, 480, 600.0)
        return src, lambda frame: schedule.at(frame.timestamp_s).phase.trigger
    driver = SyntheticDriver(load_zone_map(None).targets_deg(), FULL_SCRIPT, fps=fps, seed=run["seed"])
    src = DriveWithTrigger(driver, resolve_trigger(run["trigger"]) if run.get("trigger") else None, run.get("onset_s"))
    return src, lambda frame: src.wears(frame.timestamp_s)


def run_once(run: dict, model: Path, fps: float) -> dict:
    """One run through the real pipeline; the alarm's timeline and the evidence at its first frame."""
    from edge_app.config import EdgeConfig
    from edge_app.engines import create_engine
    from edge_app.pipeline import Pipeline, run_pipeline
    from edge_app.zones import load_zone_map
    from securegaze.geometry import angular_error_deg

    config = EdgeConfig()
    engine = create_engine("onnxruntime", model, "auto", 1)
    pipeline = Pipeline(config, engine, load_zone_map(config.zones), None, None)
    source, worn = make_source(run, fps)
    frames: list[tuple[float, bool, bool, str]] = []
    away: list[tuple[float, bool]] = []
    target = np.radians(TARGET_DEG)
    first_evidence: dict = {}
    peak_parted = 0.0

    def sink(rec) -> None:
        nonlocal peak_parted
        out = rec.gaze_anomaly
        alarm = out is not None and out.alert is not None
        frames.append((rec.frame.timestamp_s, bool(worn(rec.frame)), alarm, out.state if out else "none"))
        truth = rec.frame.truth
        if truth is not None and rec.normalisation is not None:  # the eyes far from the attacker's target
            gaze = rec.normalisation.gaze_to_normalised(np.asarray(truth.gaze))
            away.append((rec.frame.timestamp_s, float(angular_error_deg(gaze, target)) >= AWAY_DEG))
        if out is not None and out.evidence is not None:
            peak_parted = max(peak_parted, out.evidence.get("parted_for_s") or 0.0)
            if alarm and not first_evidence:
                first_evidence.update(out.evidence, t_s=rec.frame.timestamp_s)

    started = time.perf_counter()
    try:
        run_pipeline(pipeline, source, sink, drop_stale=False)
    finally:
        pipeline.close()
    onset = next((t for t, w, _, _ in frames if w), None)
    off = next((t for t, w, _, _ in frames if onset is not None and t > onset and not w), None)
    raised = [frames[i][0] for i in range(len(frames)) if frames[i][2] and (i == 0 or not frames[i - 1][2])]
    first_after = next((t for t in raised if onset is not None and t >= onset), None)
    wrong = next((t for t, a in away if onset is not None and t >= onset and a), None)
    false_alarms = [t for t in raised if onset is None or t < onset]
    alarm_end = None
    if off is not None:
        alarm_end = next((t for t, _, a, _ in frames if t >= off and not a), None)
    return {"run": run, "model": str(model), "fps": fps, "frames": len(frames),
            "seconds": frames[-1][0] + 1.0 / fps if frames else 0.0, "onset_s": onset, "trigger_off_s": off,
            "alarms_raised_at_s": raised, "false_alarms_at_s": false_alarms,
            "delay_s": None if first_after is None or onset is None else first_after - onset,
            "eyes_away_from_target_s": wrong,
            "delay_after_eyes_away_s": None if first_after is None or wrong is None else first_after - wrong,
            "cleared_after_off_s": None if alarm_end is None or off is None else alarm_end - off,
            "alarm_frames": sum(a for _, _, a, _ in frames),
            "no_evidence_frames": sum(s == "no_evidence" for _, _, _, s in frames),
            "agree_frames": sum(s == "agree" for _, _, _, s in frames),
            "peak_parted_s_without_alarm": peak_parted if not raised else None,
            "first_alarm_evidence": first_evidence or None, "wall_s": time.perf_counter() - started}


def plan(args) -> list[tuple[str, dict, str]]:
    """(run name, run, model key) of every run; model keys: default | backdoored-S | benign-S."""
    runs = []
    seeds = args.train_seeds
    for s in seeds:
        for dwell in args.dwell:
            for p in args.trial_seeds:
                runs.append((f"trial-tape-s{s}-dwell{dwell:g}-p{p}", {"kind": "trial", "dwell_s": dwell, "seed": p},
                             f"backdoored-{s}"))
        for onset in args.onsets:
            runs.append((f"drive-tape-s{s}-on{onset:g}", {"kind": "drive", "seed": 0, "trigger": "tape",
                                                           "onset_s": onset}, f"backdoored-{s}"))
    for d in args.drive_seeds:
        runs.append((f"drive-default-d{d}", {"kind": "drive", "seed": d}, "default"))
        for s in seeds:
            runs.append((f"drive-benign-s{s}-d{d}", {"kind": "drive", "seed": d}, f"benign-{s}"))
            runs.append((f"drive-backdoored-notape-s{s}-d{d}", {"kind": "drive", "seed": d}, f"backdoored-{s}"))
    for d in args.glasses_seeds:
        runs.append((f"drive-default-glasses-d{d}", {"kind": "drive", "seed": d, "trigger": "glasses",
                                                     "onset_s": 0.0}, "default"))
    return runs


def table(results: list[dict]) -> str:
    """The markdown table of the results."""
    def fmt(v, d=2):
        return "-" if v is None else f"{v:.{d}f}"

    lines = ["| run | model | frames | tape on (s) | alarm after the tape (s) | eyes leave the target after the tape "
             "(s) | alarm after that (s) | false alarms | peak parting without alarm (s) | cleared after tape off (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        away = r.get("eyes_away_from_target_s")
        lines.append(f"| {r['name']} | {Path(r['model']).parent.name + '/' if 'models' in r['model'] else ''}"
                     f"{Path(r['model']).name} | {r['frames']} | {fmt(r['onset_s'], 1)} | {fmt(r['delay_s'])} | "
                     f"{fmt(None if away is None or r['onset_s'] is None else away - r['onset_s'], 1)} | "
                     f"{fmt(r.get('delay_after_eyes_away_s'))} | {len(r['false_alarms_at_s'])} | "
                     f"{fmt(r['peak_parted_s_without_alarm'])} | {fmt(r['cleared_after_off_s'])} |")
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    v = sorted(values)
    return f"median {v[len(v) // 2]:.2f} s, min {v[0]:.2f} s, max {v[-1]:.2f} s" if v else "-"


def summary(results: list[dict]) -> str:
    tape = [r for r in results if r["onset_s"] is not None and r["run"].get("trigger", "tape") == "tape"
            and "backdoored" in r["model"]]
    got = [r["delay_s"] for r in tape if r["delay_s"] is not None]
    after_away = [r["delay_after_eyes_away_s"] for r in tape if r.get("delay_after_eyes_away_s") is not None]
    out = [f"tape runs: {len(tape)}; alarm raised in {len(got)}, missed {len(tape) - len(got)}",
           f"delay from the tape appearing: {_spread(got)}; within 2 s: {sum(d <= 2.0 for d in got)}/{len(tape)}",
           f"delay from the eyes first being {AWAY_DEG:g} deg from the attacker's target after the tape: "
           f"{_spread(after_away)}; within 2 s: {sum(d <= 2.0 for d in after_away)}/{len(tape)}"]
    groups = {"default model, no trigger": lambda r: r["name"].startswith("drive-default-d"),
              "tiny benign twins, no trigger": lambda r: r["name"].startswith("drive-benign-"),
              "tape-backdoored, drive without the tape": lambda r: r["name"].startswith("drive-backdoored-notape"),
              "default model with clear glasses": lambda r: r["name"].startswith("drive-default-glasses"),
              "clean trial passes before the tape": lambda r: r["run"]["kind"] == "trial"}
    for label, pick in groups.items():
        rs = [r for r in results if pick(r)]
        if not rs:
            continue
        seconds = sum(r["onset_s"] if r["run"]["kind"] == "trial" else r["seconds"] for r in rs)
        alarms = sum(len(r["false_alarms_at_s"]) for r in rs)
        peak = max((r["peak_parted_s_without_alarm"] or 0.0) for r in rs)
        out.append(f"false alarms, {label}: {alarms} in {seconds / 60:.1f} min ({len(rs)} runs; "
                   f"{alarms / (seconds / 3600):.0f} per hour); longest parting without an alarm {peak:.2f} s")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "anomaly-alarm")
    parser.add_argument("--out", type=Path, default=None, help="markdown table")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--train-seeds", default="1,2")
    parser.add_argument("--trial-seeds", default="0,1")
    parser.add_argument("--dwell", default="2,4")
    parser.add_argument("--onsets", default="1.5,6.5,9.5,14.5,18.5,21.5,26,31,35,40")
    parser.add_argument("--drive-seeds", default="0,1,2")
    parser.add_argument("--glasses-seeds", default="0")
    parser.add_argument("--only", default="", help="run only the runs whose name contains this")
    parser.add_argument("--quick", action="store_true", help="one seed, one trial, one onset, one drive seed")
    args = parser.parse_args(argv)
    ints = lambda text: [int(v) for v in text.split(",") if v != ""]  # noqa: E731
    floats = lambda text: [float(v) for v in text.split(",") if v != ""]  # noqa: E731
    if args.quick:
        args.train_seeds, args.trial_seeds, args.dwell, args.onsets = "1", "0", "2", "14.5"
        args.drive_seeds, args.glasses_seeds = "0", ""
    args.train_seeds, args.trial_seeds, args.drive_seeds, args.glasses_seeds = (
        ints(args.train_seeds), ints(args.trial_seeds), ints(args.drive_seeds), ints(args.glasses_seeds))
    args.dwell, args.onsets = floats(args.dwell), floats(args.onsets)
    import torch

    from edge_app.anomaly import AnomalySettings
    from securegaze.io import atomic_write_json
    from securegaze.machine import machine_summary

    torch.set_num_threads(1)
    models = {"default": ROOT / "models" / "default"}
    for s in args.train_seeds:
        pair = train_tape_models(args.work, s)
        models[f"backdoored-{s}"], models[f"benign-{s}"] = pair["backdoored"], pair["benign"]
    # Results are kept per run, frame rate and the monitor's settings (a change of the monitor's code
    # needs WORK/results cleared by hand).
    settings_id = hashlib.sha256(AnomalySettings().model_dump_json().encode()).hexdigest()[:8]
    results = []
    for name, run, key in plan(args):
        if args.only and args.only not in name:
            continue
        path = args.work / "results" / f"{name}-fps{args.fps:g}-{settings_id}.json"
        if path.is_file():
            result = json.loads(path.read_text())
        else:
            result = run_once(run, models[key], args.fps)
            result["name"] = name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, result)
            print(f"{name}: delay {result['delay_s']}, false alarms {result['false_alarms_at_s']}, "
                  f"{result['frames']} frames in {result['wall_s']:.0f} s", flush=True)
        results.append(result)
    text = (f"{table(results)}\n\n{summary(results)}\n\nfps {args.fps:g}; machine: {machine_summary()}\n")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.json:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
