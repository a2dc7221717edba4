"""Degraded mode (head pose only) on the synthetic driver's scripted drives: which distractions it catches.

    python benchmarks/degraded_mode.py [--fps 10] [--scripts short,full] [--head-follow 0.3,0.6]
                                       [--seeds 0] [--gaze] [--json degraded.json]

For each drive (script x the share of each gaze shift the head makes x the driver's seed) the
default model is blocked by a verdict written into a temporary audit database (the subject is what
the app does with a blocked model, not the scan), so the pipeline runs exactly as ``edge-app run``
does for a blocked model: real MediaPipe, head pose, the head-pose monitor with the default
settings. Per scripted event: what was expected, what degraded mode raised, when (seconds after the
glance began), and how long the head was off the road (against the glance's scripted length).
``--gaze`` runs the same drives with the model trusted (gaze mode) for comparison. Prints the
machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_drive(script: str, head_follow: float, seed: int, fps: float, gaze: bool, model: Path, db: Path) -> dict:
    """One drive in degraded mode (or gaze mode with ``gaze``): its checks, alert events and head times."""
    from edge_app.config import EdgeConfig
    from edge_app.drive_scoring import DriveScorer
    from edge_app.engines import create_engine
    from edge_app.integrity import IntegrityChecker
    from edge_app.pipeline import Pipeline, run_pipeline
    from edge_app.run_report import RunTally
    from edge_app.sources import open_source
    from edge_app.zones import load_zone_map

    config = EdgeConfig.model_validate({"synthetic": {"script": script, "fps": fps, "seed": seed,
                                                      "head_follow": head_follow},
                                        "integrity": {"audit_db": str(db)}})
    zones = load_zone_map()
    source = open_source("synthetic", config)
    result = IntegrityChecker(config.integrity).check(model)
    assert result.blocked
    engine = create_engine("onnxruntime", model, ["cpu"], 1) if gaze else None
    pipeline = Pipeline(config, engine, zones, integrity=None if gaze else result)
    scorer = DriveScorer(source.driver, engine, pipeline, config.normalisation)
    tally = RunTally()
    head_off: dict[int, float] = {}
    last_t = [None]

    def sink(rec) -> None:
        tally.add(rec)
        scorer.add(rec)
        t = rec.frame.timestamp_s
        dt = 0.0 if last_t[0] is None else t - last_t[0]
        last_t[0] = t
        if rec.head is not None and rec.head.off_road:
            k = rec.frame.truth.phase_index
            head_off[k] = head_off.get(k, 0.0) + dt

    t0 = time.perf_counter()
    try:
        run_pipeline(pipeline, source, sink)
    finally:
        pipeline.close()
    wall = time.perf_counter() - t0
    driver = source.driver
    events = tally.to_dict()["alert_events"]
    checks = []
    for c in scorer.results():
        phases = [k for k, p in enumerate(driver.script) if p.name == c.label and p.zone != "road_ahead"]
        glance_s = sum(driver.script[k].duration_s for k in phases)
        first = next((e["start_s"] - c.start_s for e in events
                      if c.start_s <= e["start_s"] < c.end_s + 1.0), None)
        checks.append({"label": c.label, "expected": c.expected, "observed": c.observed_level,
                       "reasons": list(c.observed_reasons), "passed": c.passed,
                       "first_alert_after_s": None if first is None else round(first, 2),
                       "glance_s": round(glance_s, 2),
                       "head_off_road_s": round(sum(head_off.get(k, 0.0) for k in phases), 2)})
    false_alerts = [e for e in events
                    if not any(c.start_s <= e["start_s"] < c.end_s + 1.0 for c in scorer.results())]
    return {"script": script, "head_follow": head_follow, "seed": seed, "fps": fps,
            "mode": "gaze" if gaze else "degraded_head_pose", "frames": tally.frames,
            "face_frames": tally.face_frames, "checks": checks, "alert_events": events,
            "alerts_outside_events": false_alerts, "wall_s": round(wall, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the synthetic driver")
    parser.add_argument("--scripts", default="short,full")
    parser.add_argument("--head-follow", default="0.3,0.6", help="shares of each gaze shift made by the head")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--gaze", action="store_true", help="also run the drives with the model trusted")
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args()

    import shutil

    from edge_app.config import EdgeConfig
    from edge_app.integrity import IntegrityChecker
    from securegaze.machine import machine_summary

    print(machine_summary(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        shutil.copytree(args.model, model)  # the check writes nothing next to the real bundle
        db = Path(tmp) / "audit.sqlite3"
        settings = EdgeConfig.model_validate({"integrity": {"audit_db": str(db)}}).integrity
        IntegrityChecker(settings).record_verdict(model, "backdoored", 0.0, 0.15,
                                                  "forged by benchmarks/degraded_mode.py")
        for script in args.scripts.split(","):
            for follow in (float(v) for v in args.head_follow.split(",")):
                for seed in (int(v) for v in args.seeds.split(",")):
                    for gaze in ((False, True) if args.gaze else (False,)):
                        row = run_drive(script, follow, seed, args.fps, gaze, model, db)
                        rows.append(row)
                        print(f"\n{script} drive, head_follow {follow}, seed {seed}, {args.fps:g} fps, "
                              f"{row['mode']}: {row['face_frames']}/{row['frames']} faces, {row['wall_s']} s",
                              flush=True)
                        for c in row["checks"]:
                            when = "-" if c["first_alert_after_s"] is None else f"{c['first_alert_after_s']:.2f} s"
                            print(f"  {'ok  ' if c['passed'] else 'MISS'} {c['label']}: expected {c['expected']}, "
                                  f"got {c['observed']} {c['reasons'] or ''} (first alert {when} into it; head off "
                                  f"road {c['head_off_road_s']:.2f} s of a {c['glance_s']:.2f}-s glance)")
                        print(f"  alerts outside the scripted events: {len(row['alerts_outside_events'])}")
    if args.json is not None:
        from securegaze.io import atomic_write_json

        atomic_write_json(args.json, {"rows": rows, "machine": machine_summary()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
