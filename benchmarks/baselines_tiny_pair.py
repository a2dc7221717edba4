"""Benchmark: registered detectors on the tiny benign / BadNets pair of the tests, over training seeds.

    python benchmarks/baselines_tiny_pair.py --detectors abs,feature_re --shifts 0,1,2 --samples 256 \\
        --json runs/tiny-pair/scans.json

The pair is tests/conftest.py's ``tiny_gaze_bundles`` recipe (32 px easy faces, width-8 small CNN, 6
epochs, BadNets 10 % towards (10, -20) deg) trained with the seeds a test run under
``SECUREGAZE_TEST_SEED_SHIFT=s`` uses, exported as ONNX bundles and loaded back (a converted graph, as
a user's model). Each detector scans each model with its default settings (``--set name:key=value``
changes one) on ``--samples`` clean easy faces. Printed per scan: score, verdict at the default
threshold, recovered target and its error to the true one, share collapsed within 5 deg, CPU and
wall seconds. Resumable: scans already in ``--json`` are not repeated.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_DEG = (10.0, -20.0)


def tiny_pair(shift: int, work: Path) -> dict[str, Path]:
    """The tiny pair of seed shift ``shift`` as bundles under ``work`` (trained once)."""
    from securegaze.attacks import create_attack
    from securegaze.bundle import export_bundle
    from securegaze.data.synthetic import render_dataset, synthetic_style
    from securegaze.training import TrainConfig, train

    out = work / f"shift{shift}"
    paths = {"benign": out / "benign", "backdoored": out / "backdoored"}
    if all((p / "manifest.json").is_file() for p in paths.values()):
        return paths
    easy = synthetic_style("easy", size=32)
    train_set = render_dataset(3000, 32, seed=21 + 100 * shift, config=easy)
    config = TrainConfig(architecture="small_cnn", model_kwargs={"width": 8}, input_size=32, epochs=6,
                         batch_size=64, lr=3e-3, seed=2 + 100 * shift, checkpoint_every=100_000)
    attack = create_attack("badnets", target_gaze=tuple(math.radians(a) for a in TARGET_DEG), poison_rate=0.1,
                           seed=2 + 100 * shift)
    backdoored, _ = train(config, attack.poison(train_set), None, out / "train-backdoored")
    benign, _ = train(config, train_set, None, out / "train-benign")
    export_bundle(benign, paths["benign"], "tiny-benign")
    export_bundle(backdoored, paths["backdoored"], "tiny-badnets")
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default="abs,feature_re")
    parser.add_argument("--shifts", default="0,1,2")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--set", action="append", default=[], help="DETECTOR:KEY=VALUE (JSON value)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "tiny-pair")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    from securegaze.bundle.loading import open_model
    from securegaze.data.synthetic import render_dataset, synthetic_style
    from securegaze.defense import create_detector
    from securegaze.geometry import angular_error_deg
    from securegaze.io import atomic_write_json
    from securegaze.machine import machine_summary

    torch.set_num_threads(args.threads)
    changes: dict[str, dict] = {}
    for item in args.set:
        name, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        changes.setdefault(name, {})[key] = json.loads(value)
    clean = render_dataset(args.samples, 32, seed=5, config=synthetic_style("easy", size=32)).images
    rows = json.loads(args.json.read_text()) if args.json and args.json.is_file() else []
    for shift in (int(s) for s in args.shifts.split(",")):
        paths = tiny_pair(shift, args.work)
        for name in args.detectors.split(","):
            detector = create_detector(name, **changes.get(name, {}))
            for kind, path in paths.items():
                key = {"detector": name, "settings": detector.settings(), "shift": shift, "kind": kind,
                       "samples": args.samples}
                if any(all(r.get(k) == v for k, v in key.items()) for r in rows):
                    continue
                model = open_model(path).gaze_model()
                wall, cpu = time.monotonic(), time.process_time()
                report = detector.scan(model, clean)
                row = {**key, "score": report.score, "verdict": report.verdict, "threshold": report.threshold,
                       "target_deg": report.target_gaze_deg, "collapsed_share": report.collapsed_share,
                       "cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall}
                if kind == "backdoored" and report.target_gaze is not None:
                    row["target_error_deg"] = float(angular_error_deg(
                        np.asarray(report.target_gaze), np.radians(TARGET_DEG)))
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    atomic_write_json(args.json, rows)
    print(f"\n{machine_summary()}, {args.threads} thread(s), {args.samples} clean images\n")
    print("| detector | shift | model | score | verdict | target (deg) | error (deg) | collapsed | CPU s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = "-" if r["target_deg"] is None else f"({r['target_deg'][0]:.1f}, {r['target_deg'][1]:.1f})"
        error = f"{r['target_error_deg']:.1f}" if "target_error_deg" in r else "-"
        share = "-" if r["collapsed_share"] is None else f"{r['collapsed_share']:.2f}"
        print(f"| {r['detector']} | {r['shift']} | {r['kind']} | {r['score']:.3f} | {r['verdict']} | {target} | "
              f"{error} | {share} | {r['cpu_s']:.0f} | {r['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
