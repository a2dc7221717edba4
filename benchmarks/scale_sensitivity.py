"""Benchmark: how the gaze model's error moves with the face's size in its crop.

    python benchmarks/scale_sensitivity.py [--model models/default] [--faces 1000] [--seeds 0-1] [--fps 3]

Two measurements, both mean angular error in degrees:

* renderer: ``--faces`` held-out test faces of the model's renderer style (``face_centred``), every
  face drawn at one fixed ``head_scale`` per column (1.0 is the standard size; the default model
  trains on 0.90-1.25);
* drive: the synthetic driver (identities ``--seeds``, full drive at ``--fps``) normalised as the
  oracle of ``edge-app run --source synthetic --benchmark`` is (true head pose and face centre), but
  with the distance to the face multiplied by each factor: a factor above 1 shows the face larger,
  as solvePnP's over-estimated distance does. Per zone and identity: one identity's zone mean is a
  jagged function of the factor (the crop's exact sampling of a few-pixel iris), which is why
  ``benchmarks/pipeline_stages.py`` pools identities.

Prints the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALES = (0.90, 1.0, 1.08, 1.15, 1.25, 1.35)
FACTORS = (0.85, 0.90, 0.95, 1.0, 1.05, 1.10, 1.15)


def renderer_row(model: str, faces: int) -> str:
    from securegaze.bundle import load_bundle
    from securegaze.data.sources import SPLIT_SEED_OFFSET
    from securegaze.data.synthetic import render, sample_params, synthetic_style
    from securegaze.evaluation import error_summary

    bundle = load_bundle(model)
    config = synthetic_style("face_centred", size=bundle.input_size)
    params = sample_params(faces, SPLIT_SEED_OFFSET["test"], config)
    cells = []
    for scale in SCALES:
        fixed = dataclasses.replace(params, head_scale=np.full_like(params.head_scale, scale))
        cells.append(f"{error_summary(bundle.predict(render(fixed, config)), fixed.gaze)['mean_deg']:.2f}")
    return ("| head_scale | " + " | ".join(f"{s:g}" for s in SCALES) + " |\n" + "|---" * (len(SCALES) + 1)
            + "|\n| mean error, deg | " + " | ".join(cells) + " |")


def drive_rows(model: str, seed: int, fps: float) -> dict[str, np.ndarray]:
    import cv2

    from edge_app.engines import create_engine
    from edge_app.head_pose import CameraIntrinsics
    from edge_app.normalisation import plan_normalisation, warp_face
    from edge_app.synthetic_driver import SCRIPTS, SyntheticDriver
    from edge_app.zones import load_zone_map
    from securegaze.geometry import angular_error_deg

    engine = create_engine("onnxruntime", str(Path(model) / "model.onnx") if Path(model).is_dir() else model,
                           "auto", 1)
    driver = SyntheticDriver(load_zone_map().targets_deg(), SCRIPTS["full"], fps=fps, seed=seed)
    k = CameraIntrinsics.approximate(driver.width, driver.height).matrix
    rows: dict[str, list] = defaultdict(list)
    for i in range(driver.frame_count):
        frame, _, truth = driver.render_frame(i)
        errors = []
        for factor in FACTORS:
            norm = plan_normalisation(truth.true_face_centre_mm * factor, truth.head_rotation, k, engine.input_size)
            crop = cv2.cvtColor(warp_face(frame, norm), cv2.COLOR_BGR2RGB)
            gaze = norm.gaze_to_camera(engine.infer(crop[None])[0])
            errors.append(float(angular_error_deg(gaze, np.asarray(truth.gaze))))
        rows[truth.zone].append(errors)
    return {zone: np.asarray(v) for zone, v in rows.items()}


def main(argv=None) -> int:
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="a bundle folder")
    parser.add_argument("--faces", type=int, default=1000)
    parser.add_argument("--seeds", default="0-1", help="the synthetic driver's identities, a range (0-1) or one")
    parser.add_argument("--fps", type=float, default=3.0)
    args = parser.parse_args(argv)
    print(f"renderer, {args.faces} test faces of the face_centred style, model {args.model}:")
    print(renderer_row(args.model, args.faces))
    lo, _, hi = args.seeds.partition("-")
    for seed in range(int(lo), int(hi or lo) + 1):
        rows = drive_rows(args.model, seed, args.fps)
        print(f"\ndrive, driver seed {seed} at {args.fps:g} FPS: oracle with the distance x factor")
        print("| zone | frames | " + " | ".join(f"x{f:g}" for f in FACTORS) + " |")
        print("|---" * (len(FACTORS) + 2) + "|")
        for zone, v in sorted(rows.items(), key=lambda kv: -len(kv[1])):
            print(f"| {zone} | {len(v)} | " + " | ".join(f"{x:.2f}" for x in v.mean(0)) + " |")
    print(f"\nmachine: {machine_summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
