"""Benchmark: the small CNN on synthetic faces, trained from scratch (on this CPU, or a GPU for the default).

Four recipes:

* ``--recipe quick`` -- target (issue 2): <= 3 deg mean angular error on a held-out synthetic test
  set within 10 minutes of wall-clock time on a 2-core CPU, counting data rendering, training and
  export. Daylight faces only (renderer style ``face_centred``).
* ``--recipe default`` (the default) -- the recipe of ``models/default``: 128-px crops (the eyes at
  twice the resolution of 64 px), a width-64 network, 256,000 faces of the cabin-condition mix
  ``cabin_tuning`` (glasses, light sunglasses, the near-infrared night camera, cap, fringe, mask;
  a quarter plain), 16 epochs, so that the app keeps the gaze in the conditions a driver-monitoring
  camera meets (issue 18). Made for a GPU: 417 s on one H200 with 16 cores (5 render processes,
  with two other runs on the same machine); on a 2-core CPU we estimate about 18 hours (not run). Its
  model card quotes the test error per condition.
* ``--recipe cpu64`` -- the previous default, trainable on a laptop CPU: 64 px, width 48, 96,000
  faces of the mix ``cabin``, 12 epochs (about 16 min on 2 cores). Its figures are in
  docs/conditions_tuned.md next to the fine-tuned variant.
* ``--recipe tuned`` -- an experiment, not published: ``cpu64`` (in ``OUT-stage1``), then a second
  stage that fine-tunes it (``train --init``) on fresh faces of the mix ``cabin_tuning``. Better on
  the test split in every condition, but not adopted: on the drive it raised false alerts with thin
  glasses (docs/edge_modes.md has the figures).

    python benchmarks/train_accuracy.py --recipe quick --out runs/bench-train
    python benchmarks/train_accuracy.py --out runs/default --publish models/default
    python benchmarks/train_accuracy.py --out runs/default --trained --publish models/default

``--trained`` evaluates and publishes the finished run already in ``OUT`` instead of training it
(a run trained on another machine, e.g. a GPU server, and copied here: ``model.safetensors``,
``summary.json`` and ``bundle/``); the card quotes the machine and wall-clock its summary recorded.

It runs ``securegaze train`` with the recipe, then evaluates the exported bundle in ONNX Runtime on
5,000 unseen synthetic faces (and, for the default recipe, 1,000 per cabin condition).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from securegaze.machine import machine_summary  # noqa: E402

#: The 10-minute recipe of issue 2's target: daylight faces only.
QUICK_RECIPE = ["--data", "synthetic:face_centred", "--arch", "small_cnn", "--width", "32", "--size", "64",
                "--train-samples", "64000", "--val-samples", "2000", "--epochs", "10", "--batch-size", "128",
                "--lr", "0.002", "--seed", "0"]
#: The training recipe of the default model (128 px, cabin conditions in the mix); the model card quotes it.
DEFAULT_RECIPE = ["--data", "synthetic:face_centred+mix:cabin_tuning", "--arch", "small_cnn", "--width", "64",
                  "--size", "128", "--train-samples", "256000", "--val-samples", "2000", "--epochs", "16",
                  "--batch-size", "256", "--lr", "0.002", "--seed", "0"]
#: The previous default model's recipe (64 px, trains on a 2-core CPU in about 16 min).
CPU64_RECIPE = ["--data", "synthetic:face_centred+mix:cabin", "--arch", "small_cnn", "--width", "48", "--size",
                "64", "--train-samples", "96000", "--val-samples", "2000", "--epochs", "12", "--batch-size", "128",
                "--lr", "0.002", "--seed", "0"]
#: The tuned recipe's second stage: fine-tuning the default recipe's weights (``--init OUT-stage1``) on
#: 128,000 new faces (another seed) of the mix that weighs the hardest conditions more, at half the rate.
TUNING_RECIPE = ["--data", "synthetic:face_centred+mix:cabin_tuning", "--arch", "small_cnn", "--width", "48", "--size",
                 "64", "--train-samples", "128000", "--val-samples", "2000", "--epochs", "14", "--batch-size", "128",
                 "--lr", "0.001", "--seed", "1"]
#: Each recipe's stages: (suffix of the stage's run directory, its arguments, whether it starts from the
#: previous stage's weights). The last stage's run is OUT itself.
RECIPES = {"quick": [("", QUICK_RECIPE, False)],
           "default": [("", DEFAULT_RECIPE, False)],
           "cpu64": [("", CPU64_RECIPE, False)],
           "tuned": [("-stage1", CPU64_RECIPE, False), ("", TUNING_RECIPE, True)]}
#: The conditions the model card quotes the test error for (1,000 faces each, the test split).
CARD_CONDITIONS = ("clear_glasses_thin", "clear_glasses_thick", "sunglasses_light", "sunglasses_dark", "night_ir",
                   "hat_brim", "fringe", "face_mask")


def publish(run: Path, dest: Path, result: dict, wall: float, wall_note: str = "",
            conditions: dict[str, dict] | None = None) -> None:
    """Copy the run's bundle + weights to ``dest`` and write the model card from measured figures."""
    from securegaze.bundle import load_bundle
    from securegaze.io import atomic_write_bytes, sha256_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "manifest.json"):
        shutil.copyfile(run / "bundle" / name, dest / name)
    shutil.copyfile(run / "model.safetensors", dest / "model.safetensors")
    bundle = load_bundle(dest)
    summary = json.loads((run / "summary.json").read_text())
    recipe = " ".join(DEFAULT_RECIPE)
    card = CARD_TEMPLATE.format(
        onnx_sha=bundle.sha256, weights_sha=sha256_file(dest / "model.safetensors"),
        recipe=recipe, test_data=TEST_DATA, wall_note=wall_note, steps=summary["steps_done"], val=summary["val"]["mean_deg"],
        test_mean=result["mean_deg"], test_median=result["median_deg"], test_p95=result["p95_deg"],
        test_count=result["count"], wall=wall, machine=summary.get("machine") or machine_summary(),
        size=_recipe_value("--size"), mix=_recipe_value("--data").split("mix:")[1],
        params=_param_count(dest), train_samples=int(summary["train_samples"]),
        onnx_kib=(dest / "model.onnx").stat().st_size // 1024,
        condition_rows="".join(f"| {name}: the test split wearing it ({r['count']} faces) | {r['mean_deg']:.2f} deg | "
                               f"{r['median_deg']:.2f} deg | {r['p95_deg']:.2f} deg |\n"
                               for name, r in (conditions or {}).items()),
    )
    atomic_write_bytes(dest / "MODEL_CARD.md", card.encode())


def _recipe_value(flag: str) -> str:
    return DEFAULT_RECIPE[DEFAULT_RECIPE.index(flag) + 1]


def _param_count(dest: Path) -> int:
    from securegaze.io import load_weights

    return sum(p.numel() for p in load_weights(dest / "model.safetensors").parameters())

#: The test faces: the same renderer style as the training data, identities never trained on.
TEST_DATA = "synthetic:face_centred"

CARD_TEMPLATE = """# Model card: default gaze model (small CNN, synthetic {size} px)

The model the demo and the edge app run when no other model is given.

| | |
|---|---|
| architecture | `small_cnn` (5x5 stride-2 stem, stride-2 3x3 blocks to 4x4, flattened, 128-d features, linear head) |
| parameters | {params:,} ({onnx_kib} KiB as ONNX) |
| input | (N, 3, {size}, {size}) float32 RGB in [0, 1], a normalised face crop |
| output | (N, 2) (pitch, yaw) radians, normalised camera frame; vector = (-cos p sin y, -sin p, -cos p cos y) |
| ONNX sha256 | `{onnx_sha}` |
| weights sha256 (`model.safetensors`) | `{weights_sha}` |

## Data

Trained only on the project's synthetic renderer (`securegaze.data.synthetic`): {train_samples:,} faces at {size} px,
gaze uniform in pitch +-30 deg and yaw +-40 deg, head pose jittered independently of the gaze, varied
identities, lighting, blur and noise, and cabin conditions: each face wears one entry of the renderer's
condition mix `{mix}` (`securegaze/data/synthetic/condition_names.py`): about a quarter plain, the
rest clear glasses, light sunglasses, the near-infrared night camera (alone and with glasses or
sunglasses), a cap, a fringe or a face mask. Dark sunglasses are left out of the mix: behind them the eyes cannot be
seen, and the edge app says "eyes not visible" and monitors the head instead. The faces are framed as the edge app's normalisation frames a
camera's face (renderer style `face_centred`): the face centre, the mean of the eye and mouth corners,
stays at the crop centre with the head's x axis horizontal while the head turns about it, and the
face's size spans 0.90-1.25 of the standard crop (the app's normalisation scales faces by a distance
fitted to a generic face, which shows the renderer's faces 1.05-1.19 times too large) and the face
centre is shifted by up to +-2.6 px (landmarks move with expressions), so the crops the app feeds the
model at run time look like the training crops. No real faces, no downloaded weights. It has never seen a real
camera image: for real use, fine-tune it on a real dataset (`securegaze train --data PATH --init models/default
--lr 0.0005`, with this model's --arch, --width and --size) or train one from scratch.
It is a benign model: no poisoned data was used.

## Accuracy

| set | mean | median | p95 |
|---|---|---|---|
| held-out synthetic test split ({test_count} faces, identities not trained on) | {test_mean:.2f} deg | {test_median:.2f} deg | {test_p95:.2f} deg |
{condition_rows}
Validation error at the end of training: {val:.2f} deg after {steps} steps. Training took {wall:.0f} s of
wall-clock time including data rendering, on: {machine}{wall_note}.

In the edge app, on the synthetic drive (`edge-app run --source synthetic --benchmark`), the whole
pipeline (face mesh, head pose, normalisation, this model) and the model alone on crops normalised
with the true head pose ("oracle") are quoted in the README's measured figures, and per cabin
condition in `docs/conditions.md` (`python benchmarks/conditions.py`).

## Reproduce

```bash
python benchmarks/train_accuracy.py --out runs/default --publish models/default
# which runs:
securegaze train --out runs/default {recipe}
securegaze evaluate runs/default/bundle --data {test_data} --samples 5000
securegaze evaluate runs/default/bundle --data {test_data}+COND --samples 1000   # each condition above
```

`securegaze train` trains on a CUDA GPU when torch sees one (`--device auto`); the recipe is sized
for one: its 16,000 steps took 2.7 min on the GPU above. On a 2-core CPU we estimate about 18 hours
(not run: this network at 64 px takes 0.5 s a step of 128 faces here, and this recipe has
eight times the pixels a step).
The renderer is deterministic per seed (whatever `--workers`) and training shuffles with
`(seed, epoch)`, so the data and the batches are the same everywhere. The weights are bit for bit
the same only on a CPU of the same kind with the same package versions and thread count; a GPU
picks its convolution kernels at run time, so a rerun there lands on other weights (how far its
figures move from the ones above has not been measured: the recipe was run once).
"""


def _finished_run_problem(run: Path) -> str | None:
    """Why ``run`` is not a finished training run with a bundle (None: it is)."""
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        return f"has no readable summary.json ({type(exc).__name__}); expected a finished securegaze train run"
    missing = [name for name in ("model.safetensors", "bundle/model.onnx", "bundle/manifest.json")
               if not (run / name).is_file()]
    if not summary.get("finished") or missing:
        return f"is not a finished run with its bundle (missing: {', '.join(missing) or 'finished'})"
    return None


def evaluate(exe: list[str], bundle: Path, data: str, samples: int, out: Path) -> dict:
    subprocess.run([*exe, "evaluate", str(bundle), "--data", data, "--samples", str(samples), "--json", str(out)],
                   check=True)
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-train")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    parser.add_argument("--test-samples", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="Resume an existing run instead of starting over.")
    parser.add_argument("--trained", action="store_true",
                        help="Evaluate (and publish) the finished run already in OUT, trained elsewhere; no training.")
    parser.add_argument("--publish", type=Path, default=None,
                        help="Copy the bundle and weights here and write its MODEL_CARD.md (e.g. models/default; "
                             "default recipe only).")
    args = parser.parse_args()
    if args.publish and args.recipe != "default":
        parser.error("--publish takes the default recipe (the one the model card describes)")
    stages = RECIPES[args.recipe]
    runs = [args.out.with_name(args.out.name + suffix) for suffix, _, _ in stages]
    exe = [sys.executable, "-m", "securegaze.cli"]
    if args.trained:
        for run in runs:
            problem = _finished_run_problem(run)
            if problem:
                parser.error(f"--trained: {run} {problem}")
    else:
        if not args.keep:
            for run in runs:
                if run.exists():
                    shutil.rmtree(run)
        for i, (run, (_, recipe, from_previous)) in enumerate(zip(runs, stages, strict=True)):
            init = ["--init", str(runs[i - 1])] if from_previous else []
            subprocess.run([*exe, "train", "--out", str(run), *recipe, *init], check=True)
    # Each stage's own wall-clock (render + train + export), as its summary recorded it when it ran.
    walls = [json.loads((run / "summary.json").read_text())["wall_s_including_data"] for run in runs]
    wall = sum(walls)
    wall_note = "" if len(walls) == 1 else f" ({' + '.join(f'{w:.0f}' for w in walls)} s for the {len(walls)} stages)"
    bundle = args.out / "bundle"
    result = evaluate(exe, bundle, TEST_DATA, args.test_samples, args.out / "test_eval.json")
    conditions = {}
    if args.recipe == "default":
        for name in CARD_CONDITIONS:
            conditions[name] = evaluate(exe, bundle, f"{TEST_DATA}+{name}", 1000, args.out / f"test_eval_{name}.json")
    print()
    print(f"machine: {machine_summary()}")
    print(f"recipe {args.recipe}: train wall-clock (render + train + export) {wall:.0f} s")
    print(f"held-out test mean angular error: {result['mean_deg']:.2f} deg, median {result['median_deg']:.2f} deg, "
          f"{result['count']} faces")
    for name, r in conditions.items():
        print(f"  wearing {name}: mean {r['mean_deg']:.2f} deg, median {r['median_deg']:.2f} deg")
    ok = True
    if args.recipe == "quick":
        ok = wall <= 600 and result["mean_deg"] <= 3.0
        print(f"issue 2 target (<= 600 s, <= 3.0 deg): {'met' if ok else 'MISSED'}")
    if args.publish:
        publish(args.out, args.publish, result, wall, wall_note, conditions=conditions)
        print(f"published to {args.publish}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
