"""Do a scan's reversed edit and the real trigger move a model's features the same way?

For each named model of a zoo whose scans the detection benchmark wrote: the mean feature shift of the
scan's reversed edit over the clean faces (as found, and 3x deeper) against the real trigger's mean
shift over the model's test faces (cosine), and what replacing that one direction by its clean mean
in the head's input does to the real trigger's ASR@5deg and to the clean error, with no fine-tuning
(docs/baselines.md, "Mitigation version 5"). Per image, the real trigger's shift is not all along
that mean: the share of its energy in the reversed direction, and in the clean features' top 8
principal directions (where the gaze lives, and which no head can be blind to), is printed too
(docs/baselines.md, "Mitigation version 6").

    python benchmarks/feature_directions.py --zoo runs/b15/zoo --bench runs/b15/bench31 glasses-02 tape-02
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from securegaze.attacks.metrics import attack_metrics
from securegaze.attacks.runner import load_attack_run
from securegaze.bench.detection import zoo_clean_images
from securegaze.defense.inputs import clean_tensor
from securegaze.defense.model_loading import load_model_any
from securegaze.defense.securegaze import load_generator
from securegaze.zoo import ZooManifest


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / a.norm() / b.norm())


def energy_share(rows: torch.Tensor, basis: torch.Tensor) -> float:
    """Share of the rows' summed squared length that lies in the span of the orthonormal columns ``basis``."""
    return float(((rows @ basis) ** 2).sum() / (rows ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--bench", type=Path, required=True, help="where 'securegaze bench detect' wrote its scans")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest = ZooManifest.read(args.zoo)
    clean = zoo_clean_images(manifest.spec, args.samples, 0)
    for name in args.models:
        entry = next((e for e in manifest.entries if e.id == name), None)
        if entry is None:
            raise SystemExit(f"{args.zoo}: no model {name!r} in the zoo's manifest")
        scan_dir = args.bench / "scans" / args.zoo.resolve().name / name
        generator = load_generator(scan_dir / "trigger_generator.safetensors")
        attack, test_set, faces = load_attack_run(args.zoo / name, None)
        model = load_model_any(args.zoo / str(entry.model_file)).eval()
        x = clean_tensor(clean, model.input_size, "feature_directions")
        test_clean = clean_tensor(test_set.images, model.input_size, "feature_directions")
        test_triggered = clean_tensor(attack.apply(test_set.images, faces), model.input_size, "feature_directions")
        targets = attack.targets_for(test_set.gaze)
        with torch.no_grad():
            z_clean = model.features(x)
            mu = z_clean.mean(0)
            reversed_shift = {depth: model.features(generator(x, depth)).mean(0) - mu for depth in (1.0, 3.0)}
            z_test, z_trig = model.features(test_clean), model.features(test_triggered)
            real_shift = z_trig.mean(0) - z_test.mean(0)
            print(f"{name}: cosine(reversed, real) {cosine(reversed_shift[1.0], real_shift):.2f}, 3x deeper "
                  f"{cosine(reversed_shift[3.0], real_shift):.2f}; |real shift| {float(real_shift.norm()):.2f}, "
                  f"|reversed| {float(reversed_shift[1.0].norm()):.2f}", flush=True)
            per_image = z_trig - z_test
            centred = z_clean - mu
            top8 = torch.linalg.svd(centred, full_matrices=False)[2][:8].T
            u1 = (reversed_shift[1.0] / reversed_shift[1.0].norm())[:, None]
            print(f"  per image: real shift energy along the reversed direction {energy_share(per_image, u1):.2f} "
                  f"(clean feature variance there {energy_share(centred, u1):.2f}), in the clean top-8 principal "
                  f"directions {energy_share(per_image, top8):.2f} (clean variance {energy_share(centred, top8):.2f})",
                  flush=True)
            before = attack_metrics(model.head(z_test).numpy(), model.head(z_trig).numpy(), test_set.gaze, targets, 5.0)
            for label, shift in (("reversed", reversed_shift[1.0]), ("reversed 3x", reversed_shift[3.0]),
                                 ("real", real_shift)):
                u = shift / shift.norm()

                def blind(z, u=u, mu=mu):
                    return z - ((z - mu) @ u)[:, None] * u[None]

                after = attack_metrics(model.head(blind(z_test)).numpy(), model.head(blind(z_trig)).numpy(),
                                       test_set.gaze, targets, 5.0)
                print(f"  head blind to the {label} shift: ASR@5deg {before.asr:.3f} -> {after.asr:.3f}, "
                      f"clean error {before.clean_error_deg:.2f} -> {after.clean_error_deg:.2f} deg", flush=True)


if __name__ == "__main__":
    main()
