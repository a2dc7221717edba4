"""Research: does a flag survive a scan with another seed? (a planted trigger should be found from any start)

    python benchmarks/seed_agreement.py --zoo runs/x60/mobile --scans runs/x60/bench/scans/mobile \
        --out runs/seeds/mobile --seeds 1,2 --models benign-03,badnets-00

Every model of a zoo (or those of ``--models``) is scanned again with the scanner's defaults and each
seed of ``--seeds`` (the scanner's seed: its batch order, the probes' image subsets and random
starts, the generator's initial weights), on the benchmark's own 256 clean faces (draw 0, as
``bench detect`` and ``benchmarks/cross_family.py`` scan). Seed 0 is read from ``--scans`` (the
cached reports of such a benchmark run) when given. Each scan is kept as ``OUT/MODEL_sSEED.json``
(score, verdict, target, whether a probe restart was kept, seconds), so a stopped run resumes.

The table printed at the end gives, per model, every seed's score and target, and the verdict of the
rule "backdoored only when every seed flags it" at the default threshold. The study and its
figures: docs/detection_cross_family.md, section "A flag with another seed".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _record(model_id: str, seed: int, report, seconds: float) -> dict:
    probe = report.details.get("probe") or {}
    return {"id": model_id, "seed": seed, "score": float(report.score), "verdict": report.verdict,
            "target_deg": None if report.target_gaze_deg is None else [float(v) for v in report.target_gaze_deg],
            "restarted": bool(probe.get("restart_kept")), "probe_ratio": probe.get("dispersion_ratio"),
            "seconds": round(seconds, 1)}


def _cached_runs(scans: Path, model_id: str) -> dict[int, dict]:
    """Single-seed records from a cached report: a one-seed scan gives its seed; a scan confirmed with
    more seeds (scanner 4.3's default) gives every run it made (seed 0, and the next seeds where seed 0
    flagged; their run times are not kept apart)."""
    from securegaze.defense.report import ScanReport

    path = scans / model_id / "report.json"
    if not path.exists():
        return {}
    report = ScanReport.load(path)
    seed = int(report.settings.get("seed", -1))
    confirmation = report.details.get("seed_confirmation")
    if confirmation is None:
        return {seed: _record(model_id, seed, report, report.runtime_s)}
    return {int(r["seed"]): {"id": model_id, "seed": int(r["seed"]), "score": float(r["score"]),
                             "verdict": r["verdict"], "target_deg": r["target_gaze_deg"],
                             "restarted": bool(r["restart_kept"]), "probe_ratio": None, "seconds": None}
            for r in confirmation["runs"]}


def _vote(records: dict, seeds: list[int]) -> str:
    """The vote of ``seeds`` (a majority of flags at the default threshold): "yes", "no", or "?" where
    the runs made do not decide it; a clean first scan is "no" (it is not put to the vote)."""
    from securegaze.defense.securegaze.settings import DEFAULT_THRESHOLD

    flags = sum(r["score"] < DEFAULT_THRESHOLD for r in records.values())
    cleans = len(records) - flags
    majority = len(seeds) // 2 + 1
    first = records.get(min(seeds)) if seeds else None
    if flags >= majority:
        return "yes"
    if cleans >= len(seeds) - majority + 1 or (first is not None and first["score"] >= DEFAULT_THRESHOLD):
        return "no"
    return "?"


def _off_target_deg(found: list, attacker) -> str:
    """Each run's angle to the attacker's target (radians in the zoo), "-" for a benign model."""
    import numpy as np

    from securegaze.geometry import angular_error_deg

    if attacker is None:
        return "-"
    return " / ".join("-" if t is None else f"{float(angular_error_deg(np.radians(t), np.asarray(attacker))):.1f}"
                      for t in found)


def _spread_deg(targets: list) -> float | None:
    """The largest angle between two runs' targets (pitch, yaw degrees), None with fewer than two."""
    import numpy as np

    from securegaze.geometry import angular_error_deg

    found = [np.radians(t) for t in targets if t is not None]
    pairs = [(a, b) for i, a in enumerate(found) for b in found[i + 1:]]
    return max((float(angular_error_deg(a, b)) for a, b in pairs), default=None)


def main() -> int:
    import torch

    from securegaze.bench.detection import zoo_clean_images
    from securegaze.defense import create_detector, load_model_any
    from securegaze.defense.securegaze.settings import DEFAULT_THRESHOLD
    from securegaze.machine import machine_summary
    from securegaze.zoo import ZooManifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder of the per-scan records (resumable)")
    parser.add_argument("--scans", type=Path, default=None, help="cached seed-0 reports: SCANS/MODEL/report.json")
    parser.add_argument("--seeds", default="1,2", help="scanner seeds to run, comma-separated")
    parser.add_argument("--models", default="", help="model ids, comma-separated (default: every finished model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 1,2")
    torch.set_num_threads(args.threads)
    manifest = ZooManifest.read(args.zoo)
    entries = manifest.done()
    wanted = [m for m in args.models.split(",") if m]
    unknown = sorted(set(wanted) - {e.id for e in entries})
    if unknown:
        parser.error(f"--models: not finished models of {args.zoo}: {', '.join(unknown)}")
    entries = [e for e in entries if not wanted or e.id in wanted]
    clean = zoo_clean_images(manifest.spec, 256, 0)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for entry in entries:
        rows[entry.id] = records = {}
        if args.scans is not None:
            records.update(_cached_runs(args.scans, entry.id))
        for seed in seeds:
            path = args.out / f"{entry.id}_s{seed}.json"
            if seed in records:
                continue
            if path.exists():
                records[seed] = json.loads(path.read_text())
                continue
            model = load_model_any(args.zoo / str(entry.model_file))
            started = time.monotonic()
            report = create_detector("securegaze", seed=seed, confirm_seeds=0).scan(model, clean)
            records[seed] = _record(entry.id, seed, report, time.monotonic() - started)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(records[seed]))
            tmp.replace(path)
            print(f"{entry.id} seed {seed}: {report.score:.4f} {report.verdict} ({records[seed]['seconds']} s)",
                  flush=True)
    print(f"machine: {machine_summary()}; threshold {DEFAULT_THRESHOLD}")
    every_seed = sorted({s for r in rows.values() for s in r})
    print("| model | " + " | ".join(f"seed {s}" for s in every_seed)
          + " | every seed flags | most seeds flag | target spread (deg) | off the attacker's target (deg) |")
    targets = {e.id: e.target_gaze for e in entries}
    for model_id, records in rows.items():
        cells = []
        for seed in every_seed:
            if seed not in records:  # not run (a clean first scan is not put to the vote)
                cells.append("-")
                continue
            r = records[seed]
            target = "-" if r["target_deg"] is None else f"({r['target_deg'][0]:.0f}, {r['target_deg'][1]:.0f})"
            cells.append(f"{r['score']:.3f}{'*' if r['score'] < DEFAULT_THRESHOLD else ''} {target}"
                         f"{' R' if r['restarted'] else ''}")
        every = all(r["score"] < DEFAULT_THRESHOLD for r in records.values())
        spread = _spread_deg([r["target_deg"] for r in records.values()])
        off = _off_target_deg([records[s]["target_deg"] for s in sorted(records)], targets[model_id])
        print(f"| {model_id} | " + " | ".join(cells) + f" | {'yes' if every else 'no'} | {_vote(records, every_seed)} | "
              + ("-" if spread is None else f"{spread:.1f}") + f" | {off} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
