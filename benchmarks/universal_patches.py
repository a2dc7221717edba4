"""Benchmark: is a probe window that collapses a model a planted trigger or a universal adversarial patch?

    python benchmarks/universal_patches.py --zoo runs/x40/mobile --threads 2
    python benchmarks/universal_patches.py --zoo runs/b15/zoo --models badnets-00,tape-00 --threads 1

A research tool for the next scanner version, not part of a scan. Small MobileNets trained on the
synthetic faces collapse under a colourful window on the image border (a universal adversarial patch)
as cheaply as a backdoored model collapses under its trigger, so the scanner flags them
(docs/detection_cross_family.md). For every finished model of a zoo whose default scan keeps an edit
that started from a probe window (a restart), this script runs three tests that might tell the two
apart, each on the scan's own clean draw (as benchmarks/cross_family.py) and with the scan's price:

* ``steer``: the window's place, its content optimised from random values to collapse the faces onto
  the scan's own target, and onto four gazes one clean RMS dispersion from it (the diagonals): can the
  window steer the model anywhere (an adversarial handle) or only to its own gaze (a trigger)? The
  figure is the trimmed RMS distance to the asked gaze over the clean spread (the probe's ratio);
* ``rival``: the probe once more over the same kind of region (border ring, or quiet interior) with
  the window and one window's width around it left out. A second place that collapses the model alone
  (ratio below ``probe_ratio``) gets its own restart; the score is then also given against the cheaper
  of the shift reference and that collapse. One trigger, one place, unless the network pools over
  positions;
* ``shift``: the window's content optimised to *shift* every face's output by the reference's offset
  (like with like for the scanner's uniform-shift reference), then a reference run started from it;
  the score against the cheaper reference.

Prints one Markdown row per model; models without a restart get the scan's score only.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Directions of the steering test around the found target (radians): the four diagonals.
STEER_ANGLES = tuple(math.pi / 4 + k * math.pi / 2 for k in range(4))


def window_mask(probe, size: int):
    """(1, 1, S, S) 0/1 mask of the probe's window (an interior window: only its probed pixels)."""
    import torch

    mask = torch.zeros(1, 1, size, size)
    mask[..., probe.top:probe.top + probe.side, probe.left:probe.left + probe.side] = (
        1.0 if probe.mask is None else probe.mask)
    return mask


def shift_window(model, x, probe, offset, settings):
    """The window's content optimised from random values so that every face's output moves by
    ``offset`` ((pitch, yaw) radians); returns (a ProbeResult at the window's place, its ratio)."""
    import numpy as np
    import torch

    from securegaze.defense.securegaze.probe import (
        PROBE_BATCH,
        PROBE_INIT_STD,
        PROBE_LR,
        PROBE_STREAM,
        ProbeResult,
    )
    from securegaze.defense.securegaze.statistics import collapse_spread, shift_spread

    size = x.shape[-1]
    rng = np.random.default_rng([settings.seed, PROBE_STREAM, 3])
    count = min(len(x), settings.probe_samples)
    subset = x[torch.as_tensor(np.sort(rng.permutation(len(x))[:count]))]
    window = window_mask(probe, size)
    with torch.no_grad():
        clean = model(subset)
    wanted = clean + torch.as_tensor(offset, dtype=clean.dtype)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    logits = (torch.randn(1, 3, size, size, generator=generator) * PROBE_INIT_STD).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=PROBE_LR)
    for _ in range(settings.probe_steps + settings.probe_refine_steps):
        pick = torch.as_tensor(rng.choice(count, size=min(PROBE_BATCH, count), replace=False))
        spread, _ = shift_spread(model(subset[pick] * (1 - window) + torch.sigmoid(logits) * window), wanted[pick],
                                 settings.collapse_share)
        optimizer.zero_grad()
        torch.log(spread + 1e-12).backward()
        optimizer.step()
    with torch.no_grad():
        content = torch.sigmoid(logits)
        reached, _ = shift_spread(model(subset * (1 - window) + content * window), wanted, settings.collapse_share)
        spread, _ = collapse_spread(clean, settings.collapse_share)
        ratio = math.sqrt(max(reached.item(), 0.0) / max(spread.item(), 1e-12))
    side, top, left = probe.side, probe.top, probe.left
    return ProbeResult(side, top, left, ratio, float("nan"), content[0, :, top:top + side, left:left + side].clone(),
                       mask=probe.mask), ratio


def rival_region(probe, weights, settings):
    """Where a rival window may sit: the probe's kind of region less the window and one width around it."""
    from securegaze.defense.securegaze.probe import border_ring, quiet_interior

    size, side = weights.shape[-1], probe.side
    region = border_ring(size, side) if probe.mask is None else quiet_interior(weights, settings.probe_interior, side)
    region[..., max(0, probe.top - side):probe.top + 2 * side, max(0, probe.left - side):probe.left + 2 * side] = 0
    return region


def tests(model, x, found, settings) -> dict:
    """The three tests of the module docstring on a restarted scan."""
    import numpy as np

    from securegaze.defense.securegaze.probe import probe_border, steer_window
    from securegaze.defense.securegaze.reversal import FrozenModel, reference_centre, reverse_trigger
    from securegaze.geometry import angular_error_deg

    size = x.shape[-1]
    target = np.asarray(found.target_gaze)
    distance = settings.reference_distance * math.sqrt(found.clean_trace)
    row = {}
    with FrozenModel(model):
        row["steer_own"] = steer_window(model, x, found.probe, tuple(map(float, target)), settings).dispersion_ratio
        others = [target + distance * np.array([math.cos(a), math.sin(a)]) for a in STEER_ANGLES]
        row["steer_other"] = min(steer_window(model, x, found.probe, (float(c[0]), float(c[1])), settings).dispersion_ratio
                                 for c in others)
        rival = probe_border(model, x, settings, region=rival_region(found.probe, found.weights, settings), stream=2)
        row["rival_ratio"], row["rival_place"] = rival.dispersion_ratio, (rival.top, rival.left)
        if rival.dispersion_ratio < settings.probe_ratio:
            run = reverse_trigger(model, x, settings, weights=found.weights, stage="rival",
                                  static_init=rival.static_map(size))
            if run.constraints_met:
                row["rival_cost"] = run.cost
                row["rival_apart_deg"] = float(angular_error_deg(run.target_gaze, found.target_gaze))
                row["rival_score"] = found.cost / min(found.reference.cost, run.cost)
        centre = reference_centre(found.target_gaze, found.clean_gaze, distance)
        offset = (centre[0] - found.target_gaze[0], centre[1] - found.target_gaze[1])
        steered, row["shift_ratio"] = shift_window(model, x, found.probe, offset, settings)
        run = reverse_trigger(model, x, settings, shift=offset, weights=found.weights, stage="reference",
                              static_init=steered.static_map(size))
        row["shift_ref"] = run.cost if run.constraints_met else math.inf
        row["shift_score"] = found.cost / min(found.reference.cost, row["shift_ref"])
    return row


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
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="the clean draw and the scan (as benchmarks/cross_family.py)")
    parser.add_argument("--models", default="", help="comma-separated model ids (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        _, entries, x = scorable_models(args.zoo, args.models, args.samples, args.seed)
    except InputFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    detector = SecureGazeDetector(seed=args.seed)
    print("| model | attack | score | window (ratio) | target error deg | steer own / other | rival ratio (place) | "
          "rival cost / kept | rival apart deg | score with rival | shift ratio | score with window shift | s |")
    print("|---" * 13 + "|")
    for entry in entries:
        model = load_model_any(args.zoo / str(entry.model_file)).eval()
        started = time.monotonic()
        found = detector.reverse(model, x)
        error = "-" if entry.target_gaze is None else f"{float(angular_error_deg(found.target_gaze, entry.target_gaze)):.1f}"
        cells = ["-"] * 8
        if found.restarted and found.reference is not None:
            row = tests(model, x, found, detector.config)
            p = found.probe
            cells = [f"({p.top},{p.left}){' interior' if p.mask is not None else ''} {p.dispersion_ratio:.3f}",
                     f"{row['steer_own']:.3f} / {row['steer_other']:.3f}",
                     f"{row['rival_ratio']:.3f} {row['rival_place']}",
                     f"{row['rival_cost']:.4f} / {found.cost:.4f}" if "rival_cost" in row else "-",
                     f"{row['rival_apart_deg']:.1f}" if "rival_apart_deg" in row else "-",
                     f"{row['rival_score']:.4f}" if "rival_score" in row else f"{found.score:.4f}",
                     f"{row['shift_ratio']:.3f}", f"{row['shift_score']:.4f}"]
        print(f"| {entry.id} | {entry.attack} | {found.score:.4f} | {cells[0]} | {error} | " + " | ".join(cells[1:])
              + f" | {time.monotonic() - started:.0f} |", flush=True)
    print(f"\nmachine: {machine_summary()}; zoo {args.zoo}, {args.samples} clean faces, "
          f"seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
