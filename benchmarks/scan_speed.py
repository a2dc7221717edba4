"""Benchmark: wall time of one SecureGaze scan of a 64-px model on this CPU (target: <= 30 s median on 2 cores).

    python benchmarks/scan_speed.py --zoo runs/zoo --models 6
    python benchmarks/scan_speed.py --zoo runs/zoo --models 6 --set warp=false   # without the warp branch
    python benchmarks/scan_speed.py --torchvision resnet18:112 --clean FOLDER     # a larger third-party model

With ``--onnx FILE`` (repeatable) or ``--torchvision NAME:SIZE`` (repeatable: torchvision's NAME with
random weights and a 2-output head, exported at SIZE px to an ONNX file as a user's model comes) the
files are scanned as ``securegaze scan FILE --clean CLEAN`` scans them instead, one after the other,
each time printed with its stages' seconds: how the scan's time grows with the input and the model.

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
    parser.add_argument("--onnx", type=Path, action="append", default=[], help="scan this model file instead")
    parser.add_argument("--torchvision", action="append", default=[], metavar="NAME:SIZE",
                        help="export torchvision's NAME (random weights, 2 outputs) at SIZE px and scan it")
    parser.add_argument("--clean", default="synthetic", help="clean faces of --onnx / --torchvision scans")
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
    if args.onnx or args.torchvision:
        return _files(args, settings)
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


def _files(args, settings: dict) -> int:
    """Scan model files as ``securegaze scan`` does; print each time and its stages."""
    import tempfile

    import torch
    import torchvision

    from securegaze.machine import machine_summary
    from securegaze.scan_runs import ScanRun

    work = Path(tempfile.mkdtemp(prefix="scan_speed_"))
    files = list(args.onnx)
    for item in args.torchvision:
        name, _, size = item.partition(":")
        if not size.isdigit() or not hasattr(torchvision.models, name):
            raise SystemExit(f"--torchvision {item!r}: expected NAME:SIZE with a torchvision model name, e.g. resnet18:112")
        torch.manual_seed(0)
        net = getattr(torchvision.models, name)(num_classes=2).eval()
        path = work / f"{name}_{size}.onnx"
        torch.onnx.export(net, (torch.rand(1, 3, int(size), int(size)),), path, input_names=["input"],
                          output_names=["gaze"], dynamic_axes={"input": {0: "n"}, "gaze": {0: "n"}},
                          opset_version=17, dynamo=False)
        files.append(path)
    times = []
    for path in files:
        run = ScanRun.prepare(path, args.clean, args.samples, 0, settings=settings)
        started = time.monotonic()
        report = run.run(work / path.stem)
        times.append(time.monotonic() - started)
        stages = ", ".join(f"{k} {v:.0f}" for k, v in report.details.get("stage_seconds", {}).items())
        print(f"{path.name}: {run.model.input_size} px, {sum(p.numel() for p in run.model.parameters()) / 1e6:.1f} M "
              f"parameters: {times[-1]:.1f} s (stages, s, some side by side: {stages}; {report.verdict})", flush=True)
    print(f"machine: {machine_summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
