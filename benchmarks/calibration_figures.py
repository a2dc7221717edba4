"""The figures of docs/calibration.md: camera intrinsics recovered from rendered board views, and the
synthetic driver's error before and after its gaze calibration, over seeds.

    python benchmarks/calibration_figures.py [--seeds 0-4] [--fps 5] [--offset 2,-4] [--save-views DIR]

Camera: per seed, 14 views of the default ChArUco board and of an 8x6 chessboard are rendered with
known intrinsics (640x480, fx = fy = 600 px, centre (322, 236), k1 = -0.08, k2 = 0.02;
edge_app.calibrate.board.synthetic_views) and calibrated as ``edge-app calibrate camera`` does
(the same functions); ``--save-views DIR`` writes seed 0's ChArUco views as PNGs, so
``edge-app calibrate camera --source DIR/charuco --out camera.yaml`` reproduces its row.

Driver: per seed (the synthetic driver's identity), the driver without and with the personal offset
is calibrated as ``edge-app calibrate driver --source synthetic`` does (6 cabin targets x 2 s at
``--fps``), then the short drive (``edge-app run --source synthetic:short``) is scored against the
ground truth without and with each driver's correction: mean angular error, camera frame, degrees.
The gaze model runs without the start-up integrity check (not what is measured). Prints the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

K = np.array([[600.0, 0.0, 322.0], [0.0, 600.0, 236.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.08, 0.02, 0.0, 0.0, 0.0])


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def camera_rows(seeds: list[int], save: Path | None) -> None:
    import cv2

    from edge_app.calibrate.board import DEFAULT_BOARD, BoardSpec, synthetic_views
    from edge_app.calibrate.camera import calibrate_views, collect_views
    from edge_app.sources import MemorySource

    print("\ncamera: board, seed, views, fx error %, fy error %, centre error px, k1 (true -0.08), RMS px")
    for spec in (DEFAULT_BOARD, "chessboard:8x6:25"):
        board = BoardSpec.parse(spec)
        errors = []
        for seed in seeds:
            images = synthetic_views(board, K, DIST, (640, 480), 14, seed=seed)
            if save is not None and seed == seeds[0] and board.kind == "charuco":
                (save / "charuco").mkdir(parents=True, exist_ok=True)
                for i, image in enumerate(images):
                    cv2.imwrite(str(save / "charuco" / f"view_{i:02d}.png"), image)
            cal = calibrate_views(collect_views(MemorySource(images), board))
            k = cal.matrix
            fx, fy = 100 * (k[0, 0] / K[0, 0] - 1), 100 * (k[1, 1] / K[1, 1] - 1)
            centre = float(np.hypot(k[0, 2] - K[0, 2], k[1, 2] - K[1, 2]))
            errors.append(max(abs(fx), abs(fy)))
            print(f"camera: {spec}, {seed}, {len(cal.used)}, {fx:+.2f}, {fy:+.2f}, {centre:.2f}, "
                  f"{cal.distortion[0]:+.4f}, {cal.rms_px:.3f}", flush=True)
        print(f"camera: {spec}: largest focal error {max(errors):.2f} % over {len(seeds)} seeds (limit 2 %)")


def driver_rows(seeds: list[int], fps: float, offset: tuple[float, float], model: str) -> None:
    from edge_app.calibrate.driver import driver_protocol, fit_correction
    from edge_app.calibrate.gaze_session import GazeRecorder, record_session, session_source
    from edge_app.config import EdgeConfig
    from edge_app.engines import create_engine
    from edge_app.pipeline import Pipeline, run_pipeline
    from edge_app.sources import open_source
    from edge_app.zones import load_zone_map
    from securegaze.geometry import angular_error_deg

    zones = load_zone_map()
    engine = create_engine("onnxruntime", model, ["cpu"], 1)

    def config(seed, off):
        return EdgeConfig.model_validate({"synthetic": {"fps": fps, "seed": seed, "personal_offset_deg": list(off)}})

    def drive(cfg):
        """(normalised gaze, normalisation, true camera gaze) of every frame with a gaze of the short drive."""
        frames = []

        def sink(rec):
            if rec.gaze_normalised is not None:
                frames.append((np.array(rec.gaze_normalised), rec.normalisation, np.array(rec.frame.truth.gaze)))

        run_pipeline(Pipeline(cfg, engine, zones), open_source("synthetic:short", cfg), sink)
        return frames

    def error(frames, correction=None):
        return float(np.mean([angular_error_deg(n.gaze_to_camera(g if correction is None else correction.apply(g)), t)
                              for g, n, t in frames]))

    print(f"\ndriver: personal offset {list(offset)} deg; short drive mean error, deg (6 cabin targets x 2 s at "
          f"{fps:g} fps)")
    print("driver: seed, no offset, no offset calibrated, offset, offset calibrated [kind], margin to "
          "no offset + 0.5, offset calibrated - no offset calibrated")
    margins, gaps = [], []
    for seed in seeds:
        row = {}
        for name, off in (("zero", (0.0, 0.0)), ("offset", offset)):
            cfg = config(seed, off)
            protocol = driver_protocol("cabin", zones, 2.0)
            recorder = GazeRecorder(protocol)
            record_session(Pipeline(cfg, engine, zones), session_source("synthetic", protocol, cfg), recorder)
            fit = fit_correction(recorder.records, f"seed{seed}", "auto")
            frames = drive(cfg)
            row[name] = (error(frames), error(frames, fit.correction), fit.correction.kind)
        margin = row["zero"][0] + 0.5 - row["offset"][1]
        gap = row["offset"][1] - row["zero"][1]
        margins.append(margin)
        gaps.append(gap)
        print(f"driver: {seed}, {row['zero'][0]:.2f}, {row['zero'][1]:.2f} [{row['zero'][2]}], {row['offset'][0]:.2f}, "
              f"{row['offset'][1]:.2f} [{row['offset'][2]}], {margin:+.2f}, {gap:+.2f}", flush=True)
    print(f"driver: smallest margin {min(margins):+.2f} deg (the test needs > 0); offset calibrated - no offset "
          f"calibrated {min(gaps):+.2f} .. {max(gaps):+.2f} deg over {len(seeds)} seeds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4", help="seed range, e.g. 0-4")
    parser.add_argument("--fps", type=float, default=5.0, help="synthetic driver frame rate")
    parser.add_argument("--offset", default="2,-4", help="personal offset pitch,yaw deg")
    parser.add_argument("--save-views", type=Path, default=None, help="write seed 0's ChArUco views here")
    parser.add_argument("--skip", choices=("camera", "driver"), default=None)
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    args = parser.parse_args()

    from securegaze.machine import machine_summary

    started = time.perf_counter()
    seeds = _seeds(args.seeds)
    if args.skip != "camera":
        camera_rows(seeds, args.save_views)
    if args.skip != "driver":
        offset = tuple(float(v) for v in args.offset.split(","))
        driver_rows(seeds, args.fps, offset, args.model)
    print(f"\nmachine: {machine_summary()}\ntotal wall-clock: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
