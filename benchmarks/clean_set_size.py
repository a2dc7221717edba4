"""Benchmark: how the SecureGaze score and verdict move with the number of clean images.

    python benchmarks/clean_set_size.py --sizes 8,12,16,24,32,64,128,256 --seeds 3 --out docs/clean_set_size.md

A user may bring a handful of face crops. This script trains a benign and a BadNets model per seed
(32 px, easy faces, width-8 small CNN and plain CNN: the calibration recipes of
benchmarks/calibrate_threshold.py) and scans each with the default settings on ``N`` clean images,
for every ``N`` of ``--sizes`` and several draws of the images. Reported per ``N``: the benign scores
(median, lowest), the share of benign scans flagged (the false-positive rate at that size), the
backdoored scores and the share flagged. The scanner's minimum and warning range
(``securegaze.defense.securegaze.MIN_CLEAN_IMAGES`` / ``WARN_CLEAN_IMAGES``) come from this table.
The scan's own refusal is switched off here (``min_clean=0``) so the small sizes can be measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

FAMILIES = (("small_cnn", {"width": 8}), ("plain_cnn", {"width": 8}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,12,16,24,32,64,128,256")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per family")
    parser.add_argument("--draws", type=int, default=2, help="draws of the clean images per size")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "clean-set-size")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    import numpy as np
    import torch
    from calibrate_threshold import train_pair

    from securegaze.data.synthetic import render_dataset, synthetic_style
    from securegaze.defense import create_detector
    from securegaze.io import atomic_write_json
    from securegaze.machine import machine_summary

    torch.set_num_threads(args.threads)
    detector = create_detector("securegaze", min_clean=0)
    threshold = detector.score_threshold
    # Resumable: a family and seed whose scans are all in --json are not trained or scanned again
    # (the table is then made at the current default threshold).
    rows = json.loads(args.json.read_text()) if args.json and args.json.is_file() else []
    for family, kwargs in FAMILIES:
        for seed in range(1, args.seeds + 1):
            have = {(r["n"], r["draw"], r["kind"]) for r in rows if r["family"] == family and r["seed"] == seed}
            if all((n, d, k) in have for n in sizes for d in range(args.draws) for k in ("benign", "backdoored")):
                continue
            rows = [r for r in rows if not (r["family"] == family and r["seed"] == seed)]
            benign, backdoored, asr, _ = train_pair(family, kwargs, "easy", {}, 32, seed,
                                                     args.work / f"{family}-{seed}")
            pool = render_dataset(max(sizes) * args.draws, 32, seed=50_000 + seed,
                                  config=synthetic_style("easy", size=32)).images
            for n in sizes:
                for draw in range(args.draws):
                    pick = np.random.default_rng([seed, n, draw]).choice(len(pool), size=n, replace=False)
                    for kind, model in (("benign", benign), ("backdoored", backdoored)):
                        report = detector.scan(model, pool[pick])
                        row = {"family": family, "seed": seed, "n": n, "draw": draw, "kind": kind,
                               "score": report.score, "asr": asr if kind == "backdoored" else None}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        if args.json:
                            atomic_write_json(args.json, rows)
    lines = ["# SecureGaze score against the number of clean images", "",
             f"Command: `python benchmarks/clean_set_size.py --sizes {args.sizes} --seeds {args.seeds} "
             f"--draws {args.draws} --threads {args.threads}` ({machine_summary()}). Families: "
             f"{', '.join(f for f, _ in FAMILIES)} at 32 px, BadNets 10 %; threshold {threshold:g}.", "",
             "| clean images | benign scans | benign median | benign lowest | benign flagged | backdoored median "
             "| backdoored highest | backdoored flagged |", "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        bn = [r["score"] for r in rows if r["n"] == n and r["kind"] == "benign"]
        bd = [r["score"] for r in rows if r["n"] == n and r["kind"] == "backdoored"]
        lines.append(f"| {n} | {len(bn)} | {statistics.median(bn):.3f} | {min(bn):.3f} | "
                     f"{sum(s < threshold for s in bn)}/{len(bn)} | {statistics.median(bd):.3f} | {max(bd):.3f} | "
                     f"{sum(s < threshold for s in bd)}/{len(bd)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
