"""Speed of the edge pipeline at 640x480 with the default model: per-stage p50/p95, FPS, p95 latency.

    python benchmarks/edge_speed.py [--seconds 30] [--frames 90] [--threads 1]

Frames of the synthetic driver are rendered first and held in memory, then replayed through the
full pipeline (MediaPipe face mesh with iris, solvePnP, normalisation, ONNX Runtime on the CPU,
One Euro filter, zones, attention) from a capture thread, as a camera would feed it: the renderer
is not part of the app and must not limit the measurement. The integrity check is not timed (it
runs once at start). Targets (issue 5): >= 30 FPS end to end and p95 frame latency <= 33 ms on a
2-core CPU. Prints the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="source time to replay, s")
    parser.add_argument("--frames", type=int, default=90, help="distinct synthetic frames rendered first")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the replayed source")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--live", action="store_true",
                        help="pace the source at --fps and drop stale frames, as a camera does")
    args = parser.parse_args()

    from edge_app.config import EdgeConfig
    from edge_app.engines import OnnxRuntimeEngine
    from edge_app.pipeline import Pipeline, run_pipeline
    from edge_app.sources import MemorySource
    from edge_app.synthetic_driver import FULL_SCRIPT, SyntheticDriver
    from edge_app.zones import load_zone_map
    from securegaze.machine import machine_summary

    zones = load_zone_map()
    driver = SyntheticDriver(zones.targets_deg(), FULL_SCRIPT, 640, 480, fps=args.fps, seed=0)
    step = max(1, driver.frame_count // args.frames)
    t0 = time.perf_counter()
    images = [driver.render_frame(i)[0] for i in range(0, driver.frame_count, step)][: args.frames]
    print(f"rendered {len(images)} frames of 640x480 in {time.perf_counter() - t0:.1f} s", flush=True)

    config = EdgeConfig()
    engine = OnnxRuntimeEngine(args.model, providers=["cpu"], threads=args.threads)
    pipeline = Pipeline(config, engine, zones)

    class Paced(MemorySource):
        """Delivers frames no faster than a camera at --fps would."""

        def read(self):
            target = self._start + self._index / self.fps
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            return super().read()

    if args.live:
        source = Paced(images, args.fps, args.seconds, live=True)
        source._start = time.perf_counter()
    else:
        source = MemorySource(images, args.fps, args.seconds)
    summary = run_pipeline(pipeline, source, drop_stale=args.live, queue_size=2, warmup_frames=10)
    pipeline.close()

    print(f"machine: {machine_summary()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"ONNX Runtime threads {args.threads}")
    print(f"model: {args.model} ({engine.input_size} px, {engine.providers[0]}); frames 640x480; "
          f"{summary.frames} processed, {summary.dropped} dropped, mode {'live' if args.live else 'as fast as possible'}")
    print(f"{'stage':<12} {'p50 ms':>8} {'p95 ms':>8}")
    for stage, st in summary.latency.items():
        if stage != "capture":
            print(f"{stage:<12} {st['p50']:8.2f} {st['p95']:8.2f}")
    e2e = summary.latency.get("end_to_end", {}).get("p95", float("nan"))
    proc = summary.latency.get("total", {}).get("p95", float("nan"))
    print(f"end-to-end FPS {summary.fps:.1f} (target >= 30); p95 frame latency {e2e:.1f} ms from capture, "
          f"{proc:.1f} ms processing (target <= 33)")
    print(f"faces found in {sum(v for k, v in summary.states.items() if k != 'NO_FACE')} of {summary.frames} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
