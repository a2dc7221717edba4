"""Benchmark: candidate changes to the SecureGaze score, side by side with the default, on a zoo.

    python benchmarks/scan_variants.py --zoo runs/x13/plain --variants default,refs3,robust --threads 1

A research tool for the next scanner version, not part of a scan. For every finished model of the zoo
(attacks that did not take, ASR@5deg below 50 %, are left out) it reverses the trigger with the
default settings on clean faces in the zoo's own style (the clean draw of the cross-family benchmark)
and reports the score of each variant:

* ``default``: the scanner's score (since 3.0: cheapest collapse / a uniform gaze shift);
* ``collapse``: scanner 2.2's score (``reference_kind`` collapse: cheapest collapse / a collapse onto a
  reference gaze, with the window reference);
* ``refs3``: 2.2's first collapse against three reference collapses in directions at least 90 deg
  apart (the most central first), scored against their minimum (``refs3min``) and their median
  (``refs3med``): does a benign model's uneven cost landscape, not a backdoor, make a low ratio?
* ``robust``: the scan with ``input_jitter`` on (securegaze/defense/securegaze/jitter.py): the model
  sees every image through a small random change (shift up to ``--shift`` of the side, scale within
  ``--scale``, Gaussian noise ``--noise``; fixed changes in the checks; ``--whole-pixels``: whole-pixel
  shifts without scale change), so a collapse must survive
  what a learned trigger survives and faint adversarial noise on the background does not;
* ``unweighted``: the default score with a uniform pixel price (no sensitivity map) for both runs:
  does a trigger on the eyes (glasses), which the map prices highest, stand out against a shift that
  must redraw the irises at the same price?
* ``nowindow``: the collapse reference with ``window_reference`` off (scanner 2.1's reference): how much
  of a backdoored model's ratio the like-with-like window reference gives back.

Prints one row per model (score per variant, the found target against the attacker's) and the lowest
benign score against the highest backdoored one per variant (separation, no threshold involved).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("default", "collapse", "refs3", "robust", "unweighted", "nowindow")


def extra_references(model, x, found, settings, count: int = 2) -> list[float]:
    """Costs of ``count`` more reference collapses, in directions at least 90 deg from each other and
    from the scan's own reference (inf where one never met the constraints)."""
    import numpy as np

    from securegaze.defense.securegaze.reversal import REFERENCE_DIRECTIONS, FrozenModel, reverse_trigger
    from securegaze.geometry import angular_error_deg

    distance = settings.reference_distance * math.sqrt(found.clean_trace)
    angles = 2 * np.pi * np.arange(REFERENCE_DIRECTIONS) / REFERENCE_DIRECTIONS
    candidates = np.asarray(found.target_gaze)[None] + distance * np.stack([np.cos(angles), np.sin(angles)], 1)
    clean = found.clean_gaze
    order = np.argsort([angular_error_deg(clean, np.broadcast_to(c, clean.shape)).mean() for c in candidates])
    quarter = REFERENCE_DIRECTIONS // 4
    chosen = [int(order[0])]  # the scan's own reference direction
    for i in order[1:]:
        if all(min(abs(int(i) - j), REFERENCE_DIRECTIONS - abs(int(i) - j)) >= quarter for j in chosen):
            chosen.append(int(i))
        if len(chosen) == count + 1:
            break
    costs = []
    with FrozenModel(model):
        for i in chosen[1:]:
            run = reverse_trigger(model, x, settings, centre=(float(candidates[i][0]), float(candidates[i][1])),
                                  weights=found.weights, stage="reference")
            costs.append(run.cost if run.constraints_met else math.inf)
    return costs


def main() -> int:
    import torch

    from securegaze.bench.cross_family import scorable_models
    from securegaze.defense import load_model_any
    from securegaze.defense.securegaze import SecureGazeDetector
    from securegaze.errors import InputFileError
    from securegaze.geometry import angular_error_deg
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--variants", default="default,refs3,robust", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="the clean draw (as benchmarks/cross_family.py)")
    parser.add_argument("--shift", type=float, default=0.025, help="robust: largest shift, fraction of the side")
    parser.add_argument("--scale", type=float, default=0.03, help="robust: largest relative scale change")
    parser.add_argument("--noise", type=float, default=0.01, help="robust: Gaussian noise, [0, 1] units")
    parser.add_argument("--whole-pixels", action="store_true", help="robust: whole-pixel shifts, no scale change")
    parser.add_argument("--models", default="", help="comma-separated model ids (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        print(f"--variants: unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(VARIANTS)}",
              file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    try:
        _, entries, x = scorable_models(args.zoo, args.models, args.samples, args.seed)
    except InputFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    detector = SecureGazeDetector(seed=args.seed)
    collapse = SecureGazeDetector(seed=args.seed, reference_kind="collapse")
    columns = [c for v in variants for c in (("refs3min", "refs3med") if v == "refs3" else (v,))]
    print("| model | attack | " + " | ".join(columns) + " | target error deg | seconds |")
    print("|---" * (len(columns) + 4) + "|")
    rows = []
    for entry in entries:
        model = load_model_any(args.zoo / str(entry.model_file)).eval()
        started, scores, error = time.monotonic(), {}, None
        if "default" in variants:
            found = detector.reverse(model, x)
            scores["default"] = found.score
            if entry.target_gaze is not None:
                error = float(angular_error_deg(found.target_gaze, entry.target_gaze))
        if "collapse" in variants or "refs3" in variants:
            found = collapse.reverse(model, x)
            scores["collapse"] = found.score
            if "refs3" in variants and found.reference is not None:
                refs = [found.reference.cost, *extra_references(model, x, found, detector.config)]
                scores["refs3min"] = found.cost / max(min(refs), 1e-12)
                scores["refs3med"] = found.cost / max(statistics.median(refs), 1e-12)
        if "robust" in variants:
            robust = SecureGazeDetector(seed=args.seed, reference_kind="collapse", input_jitter=True, jitter_shift_frac=args.shift,
                                        jitter_scale=args.scale, jitter_noise=args.noise,
                                        jitter_whole_pixels=args.whole_pixels)
            scores["robust"] = robust.reverse(model, x).score
        if "unweighted" in variants:
            scores["unweighted"] = SecureGazeDetector(seed=args.seed, sensitivity_weighting=False).reverse(model, x).score
        if "nowindow" in variants:
            scores["nowindow"] = SecureGazeDetector(seed=args.seed, reference_kind="collapse",
                                                    window_reference=False).reverse(model, x).score
        rows.append((entry, scores))
        cells = " | ".join(f"{scores[c]:.4f}" if c in scores else "-" for c in columns)
        print(f"| {entry.id} | {entry.attack} | {cells} | {'-' if error is None else f'{error:.1f}'} | "
              f"{time.monotonic() - started:.0f} |", flush=True)
    print()
    for column in columns:
        benign = [s[column] for e, s in rows if not e.backdoored and column in s]
        backdoored = [s[column] for e, s in rows if e.backdoored and column in s]
        if benign and backdoored:
            caught = sum(b < min(benign) for b in backdoored)
            print(f"{column}: lowest benign {min(benign):.4f}, backdoored below it {caught}/{len(backdoored)}")
    print(f"machine: {machine_summary()}; zoo {args.zoo}, {args.samples} clean faces, "
          f"seed {args.seed}; robust: shift {args.shift} of the side"
          f"{' (whole pixels)' if args.whole_pixels else f', scale {args.scale}'}, noise {args.noise}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
