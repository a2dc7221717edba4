"""Benchmark: SecureGaze detection and mitigation on a zoo of small-CNN 64-px models (issue 4).

Targets: overall detection accuracy >= 95%, FPR <= 5%, AUROC >= 0.97, median scan <= 60 s per model
on a 2-core CPU; after mitigation ASR@5deg <= 5% with clean error up by <= 0.5 deg.

    python benchmarks/detection.py --runs runs --docs docs

Steps (each resumable: a re-run skips finished models and cached scans):

1. ``securegaze zoo build --out RUNS/zoo --k 5``: 5 benign and 5 backdoored models for each of the
   seven standard attacks (seeds 0..);
2. ``securegaze zoo build --out RUNS/zoo-calib --k 5 --attacks '' --seed 1``: 5 more benign models
   with other seeds, only to calibrate the threshold;
3. optionally (``--hard``) ``securegaze zoo build --out RUNS/zoo-hard --k 3 --attacks adaptive,offset``;
4. ``securegaze bench detect`` (with the ablation unless ``--no-ablation``), then
   ``securegaze bench mitigate``; the tables and the ROC plot go to DOCS.

The zoo builds take about an hour on 2 cores, the scans about 20 s each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> None:
    print("+ securegaze " + " ".join(args), flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "securegaze.cli", *args], cwd=ROOT, check=True)
    print(f"  ({time.monotonic() - started:.0f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="Where the zoos and the scans go.")
    parser.add_argument("--docs", type=Path, default=None, help="Write detection.md, detection_roc.png, mitigation.md here.")
    parser.add_argument("--k", type=int, default=5, help="Models per attack and benign models in each zoo.")
    parser.add_argument("--workers", type=int, default=2, help="Zoo training processes.")
    parser.add_argument("--hard", action="store_true", help="Also build and score the hard cases (adaptive, offset).")
    parser.add_argument("--no-ablation", action="store_true", help="Skip the scans without sensitivity weighting.")
    parser.add_argument("--ablation-per-attack", type=int, default=2,
                        help="Backdoored models per attack scanned again without the weighting.")
    parser.add_argument("--mitigate-per-attack", type=int, default=None, help="Mitigate at most this many per attack.")
    args = parser.parse_args()

    runs = args.runs
    _run(["zoo", "build", "--out", str(runs / "zoo"), "--k", str(args.k), "--attacks", "all",
          "--workers", str(args.workers)])
    _run(["zoo", "build", "--out", str(runs / "zoo-calib"), "--k", str(args.k), "--attacks", "", "--seed", "1",
          "--workers", str(args.workers)])
    detect = ["bench", "detect", "--zoo", str(runs / "zoo"), "--calibration", str(runs / "zoo-calib"),
              "--out", str(runs / "bench")]
    if args.hard:
        _run(["zoo", "build", "--out", str(runs / "zoo-hard"), "--k", "3", "--attacks", "adaptive,offset",
              "--workers", str(args.workers)])
        detect += ["--hard", str(runs / "zoo-hard")]
    if not args.no_ablation:
        detect += ["--ablation", "--ablation-per-attack", str(args.ablation_per_attack)]
    if args.docs:
        detect += ["--docs", str(args.docs)]
    _run(detect)
    mitigate = ["bench", "mitigate", "--zoo", str(runs / "zoo"), "--out", str(runs / "bench")]
    if args.mitigate_per_attack:
        mitigate += ["--per-attack", str(args.mitigate_per_attack)]
    if args.docs:
        mitigate += ["--docs", str(args.docs)]
    _run(mitigate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
