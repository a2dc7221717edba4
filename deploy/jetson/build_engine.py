"""Build the FP16 TensorRT engine of a gaze model bundle for a Jetson (or any NVIDIA GPU).

    python deploy/jetson/build_engine.py models/default --cache-dir /var/lib/securegaze-edge/engines

The engine is cached as ``<cache-dir>/gaze-<onnx sha256 prefix>-trt<version>-<precision>.engine``
with ``<same>.json`` beside it recording the sha256 of the source ONNX (so the integrity scan of
that ONNX vouches for the engine), the TensorRT version, the precision and the input size. A
second run with the same model, TensorRT and precision finds the cached engine and returns at
once; ``--rebuild`` forces a build. The first build takes minutes on a Jetson; progress is printed.

Then point the app at it (``engine.kind: tensorrt``, ``engine.tensorrt_engine: PATH``), see
deploy/jetson/README.md. Exit codes: 0 built or found, 2 a user error (no TensorRT or GPU, a bad
model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    from edge_app.engines import PRECISIONS, build_tensorrt_engine
    from securegaze.errors import SecureGazeError

    parser = argparse.ArgumentParser(description="Build (or find cached) the TensorRT engine of a gaze bundle.")
    parser.add_argument("model", help="bundle directory, manifest.json or .onnx")
    parser.add_argument("--cache-dir", default="/var/lib/securegaze-edge/engines", help="engine cache folder")
    parser.add_argument("--precision", default="fp16", choices=PRECISIONS)
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch the engine accepts")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace, MiB")
    parser.add_argument("--rebuild", action="store_true", help="build even if a cached engine exists")
    args = parser.parse_args(argv)
    try:
        path = build_tensorrt_engine(args.model, args.cache_dir, args.precision, args.max_batch,
                                     args.workspace_mb, args.rebuild, progress=lambda msg: print(msg, flush=True))
    except SecureGazeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"engine: {path}")
    print("config:\n  engine:\n    kind: tensorrt\n    tensorrt_engine: " + str(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
