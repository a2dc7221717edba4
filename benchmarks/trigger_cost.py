"""Benchmark: what each zoo model's real trigger costs under the scan's price, next to what the scan found.

    python benchmarks/trigger_cost.py --zoo runs/zoo --bench runs/bench --out docs/trigger_cost.md
    python benchmarks/trigger_cost.py --zoo runs/x13/plain --bench runs/x13/bench   # a cross-family zoo

The scans of a cross-family zoo (``benchmarks/cross_family.py --out BENCH``) are read the same way.

SecureGaze flags a model when some edit collapses it more cheaply than any benign model can be
collapsed. This script measures, for every backdoored model of a zoo that ``securegaze bench
detect`` has scanned, the edit the attacker actually uses: its sensitivity-weighted cost (the scan's
score units), its plain L1 size, and the output-dispersion and feature-angle-variance ratios it
reaches (the scan's two constraints, 0.1 and 0.5 by default, over the kept share of the images as the
scan measures them), on 256 of the model's own held-out test faces. Next to it: the same figures for
the scan's reversed trigger, and how many scans found an edit within 2x of the real trigger's cost
(the optimiser's part: a real trigger that is cheap and feasible but was not found is an optimisation
miss). Backdoored models whose attack did not take (ASR@5deg below 50 %, as in the cross-family
benchmark) are named under the table and enter no figure. Writes a Markdown table (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _figures(model, x, edited, weights, clean_spread, clean_fav, share):
    import torch

    from securegaze.defense.securegaze import collapse_spread
    from securegaze.models.feature_geometry import feature_angle_variance

    with torch.no_grad():
        z = model.features(edited)
        gaze = model.head(z)
        spread, kept = collapse_spread(gaze, share)
        diff = (edited - x).abs()
        return {
            "cost": float((weights * diff).mean()),
            "l1": float(diff.mean()),
            "dispersion": float((spread.item() / clean_spread) ** 0.5),
            "feature": float(feature_angle_variance(z[kept], model.head_weight()).item() / clean_fav),
        }


def main() -> int:
    import torch

    from securegaze.attacks.runner import load_attack_run
    from securegaze.bench.cross_family import MIN_ASR
    from securegaze.data.base import to_tensor_batch
    from securegaze.defense import ScanReport, load_generator, load_model_any
    from securegaze.defense.securegaze import SecureGazeSettings, collapse_spread, sensitivity_map
    from securegaze.io import atomic_write_bytes
    from securegaze.machine import machine_summary
    from securegaze.models.feature_geometry import feature_angle_variance
    from securegaze.zoo import ZooManifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("runs/zoo"))
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"))
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="Write the Markdown table here.")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    manifest = ZooManifest.read(args.zoo)
    scans = args.bench / "scans" / args.zoo.resolve().name
    settings = SecureGazeSettings()
    benign_scores, rows, skipped = [], [], []
    for entry in manifest.done():
        report_path = scans / entry.id / "report.json"
        if not report_path.is_file():
            print(f"{report_path}: no scan of {entry.id}; run securegaze bench detect first", file=sys.stderr)
            return 2
        report = ScanReport.load(report_path)
        if not entry.backdoored:
            benign_scores.append(report.details["final_cost"])
            continue
        if entry.attack in ("offset",):
            continue
        asr = (entry.metrics or {}).get("asr")
        if asr is not None and asr < MIN_ASR:
            skipped.append(f"{entry.id} (ASR@5deg {asr:.1%})")
            continue
        attack, test_set, faces = load_attack_run(args.zoo / entry.id, args.samples)
        model = load_model_any(args.zoo / str(entry.model_file)).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x = to_tensor_batch(test_set.images)
        weights = sensitivity_map(model, x, settings).view(1, 1, *x.shape[-2:])
        share = settings.collapse_share
        with torch.no_grad():
            z = model.features(x)
            spread, kept = collapse_spread(model.head(z), share)
            clean_fav = feature_angle_variance(z[kept], model.head_weight()).item()
            real = to_tensor_batch(attack.apply(test_set.images, faces))
            reversed_ = load_generator(scans / entry.id / "trigger_generator.safetensors")(x)
        figures = [_figures(model, x, edited, weights, spread.item(), clean_fav, share) for edited in (real, reversed_)]
        rows.append((entry.id, entry.attack, figures[0], figures[1], report.score))
        print(f"{entry.id}: real cost {figures[0]['cost']:.4f}, found {figures[1]['cost']:.4f}, "
              f"scan score {report.score:.4f}", flush=True)

    low, high = min(benign_scores), max(benign_scores)
    lines = [
        "# What the real triggers cost under the scan's price", "",
        f"Regenerate: `python benchmarks/trigger_cost.py --zoo {args.zoo} --bench {args.bench}"
        + (f" --out {args.out}`" if args.out else "`"), "",
        f"Machine: {machine_summary()}.", "",
        f"Cost: sensitivity-weighted mean |x' - x| (the scan's score units); L1: plain mean |x' - x|; dispersion "
        f"and feature: the ratios to the clean statistics that the scan requires below {settings.rho_out} and "
        f"{settings.rho_feat}, over the {settings.collapse_share:.0%} of the images closest to their centre (as the "
        f"scan measures them). On {args.samples} held-out test faces of each model. The cheapest collapse of the "
        f"benign models of this zoo costs {low:.4f}-{high:.4f} (median {statistics.median(benign_scores):.4f}). "
        "Found within 2x: the scan's edit costs at most twice the real trigger (or less than it).", "",
        "| attack | models | real cost (median) | real L1 | real dispersion | real feature | found cost (median) | "
        "found within 2x | score (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for attack in sorted({r[1] for r in rows}):
        group = [r for r in rows if r[1] == attack]

        def med(key, kind=2, g=group):
            return statistics.median(r[kind][key] for r in g)

        within = sum(r[3]["cost"] <= 2 * r[2]["cost"] for r in group)
        lines.append(f"| {attack} | {len(group)} | {med('cost'):.4f} | {med('l1'):.4f} | {med('dispersion'):.3f} | "
                     f"{med('feature'):.3f} | {med('cost', 3):.4f} | {within}/{len(group)} | "
                     f"{statistics.median(r[4] for r in group):.4f} |")
    within_all = sum(r[3]["cost"] <= 2 * r[2]["cost"] for r in rows)
    lines += ["", f"Found within 2x of the real trigger's cost: {within_all}/{len(rows)} backdoored models."]
    if skipped:
        lines += ["", f"Left out, the attack did not take (ASR@5deg below {MIN_ASR:.0%}): {', '.join(skipped)}."]
    lines += ["", "Per model (real trigger / scan's reversed trigger):", "",
              "| model | real cost | real L1 | real dispersion | reversed cost | reversed L1 | reversed dispersion | score |",
              "|---|---|---|---|---|---|---|---|"]
    for model_id, _, real, rev, score in rows:
        lines.append(f"| {model_id} | {real['cost']:.4f} | {real['l1']:.4f} | {real['dispersion']:.3f} | "
                     f"{rev['cost']:.4f} | {rev['l1']:.4f} | {rev['dispersion']:.3f} | {score:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_bytes(args.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
