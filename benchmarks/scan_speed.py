"""Benchmark: wall time of one SecureGaze scan of a 64-px model on this CPU (target: <= 30 s median on 2 cores).

    python benchmarks/scan_speed.py --zoo runs/zoo --models 6
    python benchmarks/scan_speed.py --zoo runs/zoo --models 6 --set warp=false   # without the warp branch

Scans the first ``--models`` finished models of a zoo (benign and backdoored alternately) with the
scanner's default settings and 256 synthetic clean faces in the zoo's own renderer style, one after
the other in this process, and prints each scan's time (with the runs it took: a restart from the
border probe and the reference run), the median and the machine. Run it on an otherwise idle machine: the times
of ``securegaze bench detect`` include whatever else shared the cores while it ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from securegaze.bench.detection import zoo_clean_images
    from securegaze.defense import create_detector, load_model_any
    from securegaze.machine import machine_summary
    from securegaze.zoo import ZooManifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a scanner setting (repeatable; VALUE as JSON), e.g. --set warp=false")
    args = parser.parse_args()
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"--set {item!r}: expected KEY=VALUE with a JSON value (true, 0.5, \"text\")")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")

    torch.set_num_threads(args.threads)
    manifest = ZooManifest.read(args.zoo)
    done = manifest.done()
    benign = [e for e in done if not e.backdoored]
    backdoored = [e for e in done if e.backdoored]
    order = [e for pair in zip(benign, backdoored[:: max(1, len(backdoored) // max(1, len(benign)))], strict=False)
             for e in pair][: args.models]
    clean = zoo_clean_images(manifest.spec, args.samples, 0)
    detector = create_detector("securegaze", seed=0, **settings)
    times = []
    for entry in order:
        model = load_model_any(args.zoo / str(entry.model_file))
        started = time.monotonic()
        report = detector.scan(model, clean)
        times.append(time.monotonic() - started)
        restart = (report.details.get("probe") or {}).get("restart_kept")
        print(f"{entry.id}: {times[-1]:.1f} s (score {report.score:.4f}, {report.verdict}; "
              f"probe restart kept: {restart})", flush=True)
    print(f"machine: {machine_summary()}")
    print(f"median scan time over {len(times)} models: {statistics.median(times):.1f} s (target <= 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
