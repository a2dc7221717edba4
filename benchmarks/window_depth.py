"""Benchmark: is the scan's probe window deeper than the model's own windows, or only as deep?

    python benchmarks/window_depth.py --zoo runs/x60/mobile --scans runs/x60/bench/scans/mobile --threads 1
    python benchmarks/window_depth.py --zoo runs/b16/zoo --scans runs/b16/bench/scans/zoo --out d_b16.json

A research tool for the next scanner version, not part of a scan (docs/detection_cross_family.md,
"A fourth architecture"). A benign model may collapse under an adversarial window (a natural patch)
found by the scan's probe, and the restart from it then flags the model. The question here: does a
planted trigger's window stand out from the windows the same model offers anywhere, where a natural
patch does not? For every finished model of a zoo (the scan's own clean draw and default settings):

* ``best``: the deeper of the scan's two probe windows (border ring, quiet interior), refined as the
  scan refines it: the trimmed RMS output-dispersion ratio it reaches alone (the probe's ratio);
* the model's own windows: ``--windows`` squares of the probe's side at random places over the whole
  face (eyes included; ``--places grid``: an even grid of places from border to border instead), each one's content optimised alone from random values for ``--steps`` Adam
  steps on the probe's clean faces, then measured the same way; ``ref`` is their ``--quantile``.

The gate tried: a restart is allowed (the probe's best window is below ``probe_ratio``) only when
``best / ref`` is below ``--ratio-line`` (a window deeper than the model's own) or ``ref`` is below
``--deep-line`` (a model deep everywhere: its trigger is reached from most of the face). With
``--scans`` (a folder of cached scan reports, ``<model id>/report.json``, as benchmarks/cross_family.py
writes) each row says what the gate would change: a flagged benign model ``cleared``, a flagged
backdoored one ``lost``. The gate would only ever remove restarts; the scans' other runs stand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Seed stream of the random windows' places, content and image batches (with the scan's seed).
WINDOW_STREAM = 0xD3E7


def window_places(size: int, side: int, count: int, places: str, rng) -> list[tuple[int, int]]:
    """(top, left) of ``count`` windows: drawn at random, or (``grid``) the places of the smallest
    square grid of at least ``count`` windows spread evenly from border to border (all of its places)."""
    import math

    import numpy as np

    if places == "random":
        return [tuple(int(v) for v in rng.integers(0, size - side + 1, 2)) for _ in range(count)]
    per_side = math.ceil(math.sqrt(count))
    steps = [int(round(v)) for v in np.linspace(0, size - side, per_side)]
    return [(top, left) for top in steps for left in steps]


def window_depths(model, x, settings, count: int, steps: int, places: str = "random") -> list[tuple[int, int, float]]:
    """(top, left, ratio) of ``count`` windows of the probe's side (:func:`window_places`), each optimised
    alone for ``steps`` Adam steps from random content to collapse the probe's clean faces."""
    import numpy as np
    import torch

    from securegaze.defense.securegaze.probe import PROBE_BATCH, PROBE_INIT_STD, PROBE_LR
    from securegaze.defense.securegaze.statistics import collapse_spread

    size = x.shape[-1]
    side = max(3, round(settings.probe_side_frac * size))
    rng = np.random.default_rng([settings.seed, WINDOW_STREAM])
    faces = x[torch.as_tensor(np.sort(rng.permutation(len(x))[:min(len(x), settings.probe_samples)]))]
    share, batch = settings.collapse_share, min(PROBE_BATCH, len(faces))
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    with torch.no_grad():
        clean = collapse_spread(model(faces), share)[0].clamp_min(1e-12)
    depths = []
    for top, left in window_places(size, side, count, places, rng):
        window = torch.zeros(1, 1, size, size)
        window[..., top:top + side, left:left + side] = 1
        logits = (torch.randn(1, 3, size, size, generator=generator) * PROBE_INIT_STD).requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=PROBE_LR)
        for _ in range(steps):
            pick = torch.as_tensor(rng.choice(len(faces), size=batch, replace=False))
            spread, _ = collapse_spread(model(faces[pick] * (1 - window) + torch.sigmoid(logits) * window), share)
            optimizer.zero_grad()
            torch.log(spread / clean + 1e-12).backward()
            optimizer.step()
        with torch.no_grad():
            spread, _ = collapse_spread(model(faces * (1 - window) + torch.sigmoid(logits) * window), share)
        depths.append((top, left, float((spread / clean).clamp_min(0).sqrt())))
    return depths


def measure(model, x, settings, count: int, steps: int, places: str = "random") -> dict:
    """The scan's two probes (as a scan runs them) and the model's own windows, for one model."""
    import numpy as np

    from securegaze.defense.securegaze.probe import probe_border, quiet_interior
    from securegaze.defense.securegaze.reversal import FrozenModel
    from securegaze.defense.securegaze.sensitivity import sensitivity_map

    side = max(3, round(settings.probe_side_frac * x.shape[-1]))
    with FrozenModel(model):
        weights = sensitivity_map(model, x, settings, None)
        border = probe_border(model, x, settings)
        interior = probe_border(model, x, settings, region=quiet_interior(weights, settings.probe_interior, side),
                                stream=1)
        depths = window_depths(model, x, settings, count, steps, places)
    values = np.array([d for _, _, d in depths])
    return {"border": border.dispersion_ratio, "interior": interior.dispersion_ratio,
            "best": min(border.dispersion_ratio, interior.dispersion_ratio), "windows": depths,
            "window_min": float(values.min()), "window_median": float(np.median(values))}


def gate(row: dict, args, probe_ratio: float) -> dict:
    """The gate's figures for one measured model (see the module docstring)."""
    import numpy as np

    ref = float(np.quantile([d for _, _, d in row["windows"]], args.quantile))
    lead = row["best"] / max(ref, 1e-12)
    restart = row["best"] < probe_ratio
    allowed = restart and (lead < args.ratio_line or ref < args.deep_line)
    return {"ref": ref, "lead": lead, "restart": restart, "allowed": allowed}


def verdict_change(entry, report: Path, allowed: bool) -> str:
    """What the gate changes for a model with a cached scan report (empty: nothing or no report)."""
    if not report.is_file():
        return ""
    cached = json.loads(report.read_text())
    restarted = bool(((cached.get("details") or {}).get("probe") or {}).get("restart_kept"))
    if cached.get("verdict") != "backdoored" or not restarted or allowed:
        return ""
    return "lost" if entry.backdoored else "cleared"


def main() -> int:
    import torch

    from securegaze.bench.cross_family import scorable_models
    from securegaze.defense import load_model_any
    from securegaze.defense.securegaze.settings import SecureGazeSettings
    from securegaze.errors import InputFileError
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--scans", type=Path, help="cached scan reports (<model id>/report.json) to compare with")
    parser.add_argument("--out", type=Path, help="JSON of every model's figures; models already there are not run again")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="the clean draw and the scan (as benchmarks/cross_family.py)")
    parser.add_argument("--models", default="", help="comma-separated model ids (default: all)")
    parser.add_argument("--windows", type=int, default=16, help="windows per model (grid: the smallest square grid "
                        "of at least this many)")
    parser.add_argument("--places", choices=("random", "grid"), default="random",
                        help="where the windows sit: drawn at random, or an even grid from border to border")
    parser.add_argument("--steps", type=int, default=40, help="Adam steps per window")
    parser.add_argument("--quantile", type=float, default=0.25, help="the windows' quantile taken as reference")
    parser.add_argument("--ratio-line", type=float, default=0.5)
    parser.add_argument("--deep-line", type=float, default=0.06)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for name, value, ok in [("--windows", args.windows, args.windows >= 1), ("--steps", args.steps, args.steps >= 1),
                            ("--quantile", args.quantile, 0 <= args.quantile <= 1)]:
        if not ok:
            print(f"error: {name} {value}: expected {'a share in [0, 1]' if name == '--quantile' else 'at least 1'}",
                  file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    try:
        _, entries, x = scorable_models(args.zoo, args.models, args.samples, args.seed)
        done = json.loads(args.out.read_text()) if args.out is not None and args.out.is_file() else {}
    except (InputFileError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = SecureGazeSettings(seed=args.seed)
    print("| model | attack | best probe window | window min / median | reference | best / reference | restart allowed "
          "| change | s |")
    print("|---" * 9 + "|")
    for entry in entries:
        started = time.monotonic()
        if entry.id not in done:
            model = load_model_any(args.zoo / str(entry.model_file)).eval()
            done[entry.id] = measure(model, x, settings, args.windows, args.steps, args.places)
            if args.out is not None:
                scratch = args.out.with_name(args.out.name + ".tmp")
                scratch.write_text(json.dumps(done, indent=1))
                os.replace(scratch, args.out)
        row = done[entry.id]
        g = gate(row, args, settings.probe_ratio)
        change = "" if args.scans is None else verdict_change(entry, args.scans / entry.id / "report.json", g["allowed"])
        allowed = "yes" if g["allowed"] else ("no" if g["restart"] else "- (no restart)")
        print(f"| {entry.id} | {entry.attack} | {row['best']:.3f} | {row['window_min']:.3f} / {row['window_median']:.3f} "
              f"| {g['ref']:.3f} | {g['lead']:.2f} | {allowed} | {change} | {time.monotonic() - started:.0f} |", flush=True)
    print(f"\nmachine: {machine_summary()}; zoo {args.zoo}, {args.samples} clean faces, seed {args.seed}, "
          f"{args.windows} windows ({args.places}) x {args.steps} steps, reference quantile {args.quantile}, lines "
          f"{args.ratio_line} / {args.deep_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
