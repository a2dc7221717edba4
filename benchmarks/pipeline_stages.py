"""Benchmark: what each stage before the gaze model costs on the synthetic drive, per cabin zone.

    python benchmarks/pipeline_stages.py [--model models/default/model.onnx] [--seeds 0-4] [--fps 10] [--script full]

Every frame of the drive is normalised four ways and the gaze model is run on each crop; the table
gives the mean angular error (camera frame, degrees) against the driver's true gaze:

* ``pipeline``: the app's normalisation from the face mesh's landmarks and solvePnP's head pose;
* ``oracle``: the same normalisation with the face's true head pose and face centre (the renderer
  knows them): the model alone, as ``edge-app run --source synthetic --benchmark`` prints it;
* ``oracle + pnp distance``: the oracle with solvePnP's distance to the face (the crop's scale);
* ``oracle + pnp rotation``: the oracle with solvePnP's head rotation (the roll the crop removes).

``magnification`` is how much larger solvePnP's distance shows the face than the true one. The face
mesh runs in video mode, as in the app. One table per driver identity (``--seeds``) and one over all
of them (frames pooled): one identity's zone means swing by 1-2 deg either way with the crop's exact
framing, so a stage's cost is read from the pooled table. Prints the machine.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAYS = ("pipeline", "oracle", "oracle + pnp distance", "oracle + pnp rotation")


def measure(model: str, seed: int, fps: float, script: str) -> dict[str, np.ndarray]:
    import cv2

    from edge_app.engines import create_engine
    from edge_app.face import FaceMeshStage
    from edge_app.head_pose import CameraIntrinsics, estimate_head_pose
    from edge_app.normalisation import plan_normalisation, warp_face
    from edge_app.synthetic_driver import SCRIPTS, SyntheticDriver
    from edge_app.zones import load_zone_map
    from securegaze.geometry import angular_error_deg

    engine = create_engine("onnxruntime", model, "auto", 1)
    driver = SyntheticDriver(load_zone_map().targets_deg(), SCRIPTS[script], fps=fps, seed=seed)
    cam = CameraIntrinsics.approximate(driver.width, driver.height)
    k = cam.matrix
    rows: dict[str, list] = defaultdict(list)

    def error(frame, norm, truth) -> float:
        crop = cv2.cvtColor(warp_face(frame, norm), cv2.COLOR_BGR2RGB)
        return float(angular_error_deg(norm.gaze_to_camera(engine.infer(crop[None])[0]), np.asarray(truth.gaze)))

    with FaceMeshStage(static_image_mode=False) as stage:
        for i in range(driver.frame_count):
            frame, _, truth = driver.render_frame(i)
            face = stage.detect(frame)
            if face is None:
                continue
            pose = estimate_head_pose(face.points_px, cam)
            size = engine.input_size
            ratio = float(np.linalg.norm(pose.face_centre_mm) / np.linalg.norm(truth.true_face_centre_mm))
            norms = (plan_normalisation(pose.face_centre_mm, pose.rotation, k, size),
                     plan_normalisation(truth.true_face_centre_mm, truth.head_rotation, k, size),
                     plan_normalisation(truth.true_face_centre_mm * ratio, truth.head_rotation, k, size),
                     plan_normalisation(truth.true_face_centre_mm, pose.rotation, k, size))
            rows[truth.zone].append([error(frame, n, truth) for n in norms] + [ratio])
    return {zone: np.asarray(v) for zone, v in rows.items()}


def table(rows: dict[str, np.ndarray]) -> str:
    lines = ["| zone | frames | " + " | ".join(WAYS) + " | magnification |", "|---" * (len(WAYS) + 3) + "|"]
    for zone, v in sorted(rows.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"| {zone} | {len(v)} | " + " | ".join(f"{v[:, j].mean():.2f}" for j in range(len(WAYS)))
                     + f" | {v[:, -1].mean():.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default" / "model.onnx"))
    parser.add_argument("--seeds", default="0-4", help="the synthetic driver's identities, a range (0-4) or one")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--script", default="full", choices=("full", "short"))
    args = parser.parse_args(argv)
    lo, _, hi = args.seeds.partition("-")
    pooled: dict[str, list[np.ndarray]] = defaultdict(list)
    for seed in range(int(lo), int(hi or lo) + 1):
        rows = measure(args.model, seed, args.fps, args.script)
        print(f"model {args.model}, driver seed {seed}, {args.script} drive at {args.fps:g} FPS; "
              f"mean angular error, deg, camera frame")
        print(table(rows))
        for zone, v in rows.items():
            pooled[zone].append(v)
    print(f"\nall seeds {args.seeds} pooled:")
    print(table({zone: np.concatenate(v) for zone, v in pooled.items()}))
    print(f"machine: {machine_summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
