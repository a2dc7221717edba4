"""Replay recorded drives through the live trigger alarm, with its settings changed or not.

    python benchmarks/conditions.py --seeds 0-9 --trace runs/conditions/trace2    # record the drives
    python benchmarks/anomaly_replay.py runs/conditions/trace2 --check            # replay = the live run
    python benchmarks/anomaly_replay.py runs/conditions/trace2 --set window_s=1.5 --set offset_deg=10
    python benchmarks/anomaly_replay.py runs/conditions/trace2 --show night_ir-s5 --around 7.6

A ``--trace`` of ``benchmarks/conditions.py`` keeps, per frame, what the live trigger alarm
(:mod:`edge_app.anomaly`) was given (``monitor_inputs``: the model's gaze and the model-free estimate
in the normalised frame, the face centre, the eyes' own angles). Feeding those to a fresh
:class:`~edge_app.anomaly.GazeAnomalyMonitor` takes milliseconds per drive instead of the ~15 s of
the pipeline, so a change of the monitor's settings or logic is measured over every recorded drive
at once: false alarms per hour on the benign drives (every case without the tape; the drive's
attentive parts and its glances alike), and, on the tape cases, the drives whose alarm went off
after the tape went on and how long after. A change of the model-free estimate itself
(``edge_app/free_gaze.py``) needs the drives recorded again.

``--check`` replays with the settings the drives were recorded with and compares the alarm state
frame by frame with the recorded one (exit 1 on any difference). ``--show RUN --around T`` prints
the window statistics of each frame within 2 s of ``T`` (``RUN``: the start of a trace's file name).
``--config`` reads the ``anomaly:`` section of an edge-app config file; ``--set`` overrides one
setting (repeatable). Exit 2 on a bad argument, naming it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.conditions import TAPE_ONSET_S  # noqa: E402


def load_trace(path: Path) -> list[dict]:
    """The frames of one trace file; ValueError naming the file when one has no monitor inputs."""
    frames = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            row = json.loads(line)
            if row.get("monitor_inputs") is None:
                raise ValueError(f"{path}: line {n} has no monitor_inputs (record the drive again with this "
                                 "version of benchmarks/conditions.py --trace)")
            frames.append(row)
    return frames


def _array(v):
    return None if v is None else np.asarray(v, dtype=np.float64)


def replay(frames: list[dict], settings, on_frame=None) -> list[str]:
    """The monitor's state per frame for ``frames`` under ``settings``
    (:class:`~edge_app.anomaly.AnomalySettings`); ``on_frame(row, output, monitor)`` is called
    after each. A ``max_vergence_deg`` below the recording's drops the estimates it refuses (one
    above it cannot bring back those the recording refused)."""
    from edge_app.anomaly import GazeAnomalyMonitor
    from edge_app.free_gaze import vergence_deg

    monitor = GazeAnomalyMonitor(settings)
    states = []
    for row in frames:
        args = dict(row["monitor_inputs"])
        for key in ("model_gaze_rad", "free_gaze_rad", "face_centre_mm", "eyes_deg"):
            if key in args:
                args[key] = _array(args[key])
        eyes = args.get("eyes_deg")
        if args.get("free_gaze_rad") is not None and eyes is not None and \
                vergence_deg(eyes) > settings.max_vergence_deg:
            args["free_gaze_rad"], args["eyes_reason"] = None, "iris points apart (replayed bound)"
        out = monitor.update(**args)
        states.append(out.state)
        if on_frame is not None:
            on_frame(row, out, monitor)
    return states


def onsets(frames: list[dict], states: list[str]) -> list[float]:
    """Times at which the alarm went off."""
    return [frames[i]["t_s"] for i, s in enumerate(states) if s == "alarm" and (i == 0 or states[i - 1] != "alarm")]


def case_of(path: Path) -> tuple[str, bool, bool]:
    """(case slug, the tape is worn, attentive drive) from a trace's file name."""
    stem = path.stem
    attentive = stem.endswith("-attentive")
    slug = stem.split("-s")[0]
    return slug, slug.startswith("tape"), attentive


def summarise(trace_dir: Path, settings) -> dict:
    """Per case: benign runs' false alarms (times and per hour), tape runs' catches and delays."""
    out: dict[str, dict] = {}
    paths = sorted(trace_dir.glob("*.jsonl"))
    if not paths:
        raise ValueError(f"{trace_dir}: no trace files (*.jsonl)")
    for path in paths:
        slug, tape, attentive = case_of(path)
        frames = load_trace(path)
        states = replay(frames, settings)
        alarms = onsets(frames, states)
        seconds = frames[-1]["t_s"] - frames[0]["t_s"] + (frames[1]["t_s"] - frames[0]["t_s"] if len(frames) > 1 else 0)
        row = out.setdefault(slug + ("-attentive" if attentive else ""),
                             {"tape": tape, "runs": 0, "seconds": 0.0, "false": [], "caught": 0, "delays": []})
        row["runs"] += 1
        row["seconds"] += seconds
        false = [t for t in alarms if not tape or t < TAPE_ONSET_S]
        row["false"] += [f"{path.stem.split('-fps')[0]}@{t:.1f}" for t in false]
        if tape:
            after = [t - TAPE_ONSET_S for t in alarms if t >= TAPE_ONSET_S]
            if after:
                row["caught"] += 1
                row["delays"].append(after[0])
    return out


def table(summary: dict) -> str:
    lines = ["| case | runs | minutes | false alarms (per hour) | tape caught | delay median s | false alarms at |",
             "|---|---|---|---|---|---|---|"]
    benign_s = benign_n = 0
    for name, r in summary.items():
        per_hour = len(r["false"]) / r["seconds"] * 3600 if r["seconds"] else math.nan
        if not r["tape"]:
            benign_s += r["seconds"]
            benign_n += len(r["false"])
        caught = f"{r['caught']}/{r['runs']}" if r["tape"] else "-"
        delay = f"{np.median(r['delays']):.1f}" if r["delays"] else "-"
        lines.append(f"| {name} | {r['runs']} | {r['seconds'] / 60:.1f} | {len(r['false'])} ({per_hour:.1f}) | "
                     f"{caught} | {delay} | {', '.join(r['false']) or '-'} |")
    tape = [r for r in summary.values() if r["tape"]]
    lines.append(f"\nbenign: {benign_n} false alarms in {benign_s / 60:.1f} min "
                 f"({benign_n / benign_s * 3600 if benign_s else math.nan:.2f} per hour); tape caught "
                 f"{sum(r['caught'] for r in tape)}/{sum(r['runs'] for r in tape)}")
    return "\n".join(lines)


PAGE = """# The live trigger alarm over recorded drives

Replayed with `{command}` on {machine}, from drives recorded by `python benchmarks/conditions.py
--trace runs/conditions/trace2` (the real pipeline at 10 FPS; the case names and seeds are in the
run names). Benign: every run without the tape, the whole drive (glances included). Tape cases: the
tape-backdoored tiny model wearing the tape from 12 s; a false alarm there is one raised before it.

{table}
"""


def check(trace_dir: Path, settings) -> int:
    """Replay every trace with ``settings`` and count frames whose state differs from the recorded one."""
    bad = 0
    for path in sorted(trace_dir.glob("*.jsonl")):
        frames = load_trace(path)
        states = replay(frames, settings)
        recorded = [f["anomaly"]["state"] if f["anomaly"] else "off" for f in frames]
        diff = [f["t_s"] for f, a, b in zip(frames, states, recorded, strict=True) if a != b]
        if diff:
            bad += 1
            print(f"{path.name}: {len(diff)} frames differ, first at {diff[0]:.1f} s")
    return bad


def show(trace_dir: Path, run: str, around: float, settings) -> None:
    paths = sorted(p for p in trace_dir.glob("*.jsonl") if p.name.startswith(run))
    if not paths:
        raise ValueError(f"{trace_dir}: no trace file starts with {run!r}")
    frames = load_trace(paths[0])
    print(paths[0].name)

    def on_frame(row, out, monitor) -> None:
        if abs(row["t_s"] - around) > 2.0:
            return
        w = monitor.window_stats()
        eyes = row["monitor_inputs"].get("eyes_deg")
        verg = "-" if eyes is None else "{:+.1f},{:+.1f}".format(*(np.subtract(*np.asarray(eyes))))
        stats = "-" if w is None else (f"m {w.model_dispersion_deg:5.1f} f {w.free_dispersion_deg:5.1f} "
                                       f"c {w.correlation:+.2f} off {w.offset_change_deg:5.1f} {w.verdict}")
        print(f"{row['t_s']:6.1f} {out.state:11s} true {row['gaze_true_deg']} model {row['gaze_deg']} "
              f"free {row['free_gaze_deg']} {row['free_kind']} verg {verg} | {stats} {w.kind if w else ''}")

    replay(frames, settings, on_frame)


def settings_from(args) -> object:
    import yaml
    from pydantic import ValidationError

    from edge_app.anomaly import AnomalySettings
    from securegaze.validation import validation_line

    data: dict = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping with an 'anomaly:' section")
        data.update(loaded.get("anomaly") or {})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        data[key.strip()] = yaml.safe_load(value)
    try:
        return AnomalySettings.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"anomaly settings: {validation_line(exc)}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", type=Path, help="a folder of conditions.py --trace files")
    parser.add_argument("--config", type=Path, default=None, help="an edge-app config file (its anomaly: section)")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE: one setting of the anomaly: section")
    parser.add_argument("--check", action="store_true", help="replay = the recorded run, frame by frame")
    parser.add_argument("--show", default=None, help="print the window statistics of one run (its file name's start)")
    parser.add_argument("--around", type=float, default=0.0, help="with --show: the time to look at, s")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown, with the command)")
    args = parser.parse_args(argv)
    try:
        if not args.traces.is_dir():
            raise ValueError(f"{args.traces}: not a folder")
        settings = settings_from(args)
        if args.check:
            bad = check(args.traces, settings)
            print(f"{bad} runs differ from their recording")
            return 1 if bad else 0
        if args.show is not None:
            show(args.traces, args.show, args.around, settings)
            return 0
        text = table(summarise(args.traces, settings))
        print(text)
        if args.out is not None:
            from securegaze.io import atomic_write_bytes
            from securegaze.machine import machine_summary

            cmd = " ".join(["python benchmarks/anomaly_replay.py", *(argv if argv is not None else sys.argv[1:])])
            atomic_write_bytes(args.out, PAGE.format(command=cmd, machine=machine_summary(), table=text).encode())
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
