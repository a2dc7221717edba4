"""Benchmark: how small a universal perturbation, bounded per pixel, collapses each model of a zoo.

    python benchmarks/linf_collapse.py --zoo runs/x50/plain --zoo runs/x50/small --cache runs/x50/linf.json
    python benchmarks/linf_collapse.py --zoo runs/x50/small --models benign-00,sig-00 --eps 0.02,0.04,0.06
    python benchmarks/linf_collapse.py --zoo runs/x50/plain --recipes 3 --per-image --cache runs/x50/linf.json

A research tool, not part of a scan. SecureGaze prices an edit by its (sensitivity-weighted) mean
absolute change, an L1 size; a trigger spread thinly over the whole image, like the SIG sinusoid,
is dear under that price. This script asks the same question under the other common price, the
largest change of any pixel (L-infinity): for each bound ``eps`` in ``--eps`` it trains one additive
perturbation ``delta = eps * tanh(w)`` (3 x S x S, the same for every image) that collapses the
model's outputs, with the scan's two constraint statistics as the loss (log of the trimmed output
dispersion ratio plus log of the feature-angle variance ratio, :func:`collapse_spread` over the
kept ``collapse_share``), Adam, ``--steps`` steps of 32 images, on the benchmark's own clean draw
of the zoo's style (as ``benchmarks/cross_family.py``). Reported per model: the dispersion ratio
reached at each bound, and ``eps*``, the bound at which it crosses the scan's ``rho_out`` (log-linear
between the two grid points around it). For a backdoored model, next to it, the real trigger on 256
of its held-out test faces: its L-infinity size (per image the largest |x' - x|, median over
images), its plain L1 size and the dispersion ratio it reaches, and the same change at fractions of
its strength (``REAL_SCALES``): ``real eps*``, the L-infinity size at which the attacker's own edit,
weakened, still collapses the model (log-linear between the fractions around rho_out).

A real trigger larger than the bound at which its own model already collapses is never what a
search that prefers smaller edits under that price returns; whether the model still gives way at a
smaller bound than its benign twins is what ``eps*`` shows (docs/detection_cross_family.md, "SIG
under another price"). With ``--shift``, also the bound at which one perturbation makes the scan's
uniform-shift reference. With ``--per-image``, also the bound at which one perturbation *per face*
collapses the outputs, and U = eps* / per-image eps* (how much dearer one shared edit is than an
edit per face; a reference from the model itself, whose benign level holds across families where
eps*'s does not: docs/detection_cross_family.md, "One edit for every face, or one for each"), with
decisions on U: each family on a threshold fitted to the others' benign models, and, with
``--recipes SEEDS``, on one fitted to the threshold-calibration recipes of calibrate_threshold.py
(trained here as there). ``--annealed``: a one-pass estimate (a growing bound), kept for the record
of why the grid is used. Results are cached in ``--cache`` (JSON, by zoo, model and settings;
resumable). Writes a Markdown report (``--out``) and prints it.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_EPS = "0.02,0.03,0.04,0.06,0.1"
#: The real trigger's change x' - x is also applied at these fractions of its strength (1: as the
#: attacker applies it), to find the smallest L-inf size of the real trigger that still collapses.
REAL_SCALES = (0.125, 0.25, 0.5, 1.0)
#: ``--per-image``: bounds for one perturbation per image (collapse with no universality asked is
#: far cheaper), on the first ``PER_IMAGE_FACES`` clean faces.
PER_IMAGE_EPS = (0.0025, 0.005, 0.01, 0.02, 0.04)
PER_IMAGE_FACES = 64


def _universal_perturbation(model, x, eps: float, steps: int, lr: float, seed: int, loss_of,
                            per_image: bool = False):
    """One additive perturbation ``eps * tanh(w)`` (the same for every image, L-inf size ``eps``)
    trained with Adam for ``steps`` steps of 32 images to minimise ``loss_of(features, batch index)``;
    returns the perturbed ``x``. With ``per_image``, every image of ``x`` has its own perturbation
    (same bound) and each step takes the whole of ``x``."""
    import numpy as np
    import torch

    w = torch.zeros(len(x) if per_image else 1, *x.shape[1:], requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=lr)
    rng = np.random.default_rng([seed, 0x1F])
    batch = len(x) if per_image else min(32, len(x))
    for _ in range(steps):
        idx = torch.as_tensor(np.sort(rng.choice(len(x), batch, replace=False)))
        delta = eps * torch.tanh(w[idx] if per_image else w)
        loss = loss_of(model.features((x[idx] + delta).clamp(0.0, 1.0)), idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (x + eps * torch.tanh(w.detach())).clamp(0.0, 1.0)


def _collapse_objective(model, x, share: float):
    """The scan's collapse objective on ``x`` (:func:`collapse_objective`), with a loss that takes the
    batch's indices too (as the shift's does)."""
    from securegaze.defense.securegaze.universality import collapse_objective

    loss_of, clean_spread, clean_fav = collapse_objective(model, x, share)
    return (lambda z, _idx: loss_of(z)), clean_spread, clean_fav


def universal_collapse(model, x, eps: float, steps: int, share: float, seed: int = 0,
                       per_image: bool = False) -> tuple[float, float]:
    """(trimmed dispersion ratio, feature-angle variance ratio) that one additive perturbation of
    L-infinity size ``eps`` reaches on ``x`` after ``steps`` Adam steps (both ratios to the clean ones).
    With ``per_image``, one perturbation per image: the model's own price of collapse with no
    universality asked, the reference that ``--per-image`` divides eps* by."""
    import torch

    from securegaze.defense.securegaze import collapse_spread
    from securegaze.models.feature_geometry import feature_angle_variance

    loss_of, clean_spread, clean_fav = _collapse_objective(model, x, share)
    edited = _universal_perturbation(model, x, eps, steps, 0.05, seed, loss_of, per_image)
    with torch.no_grad():
        z = model.features(edited)
        spread, kept = collapse_spread(model.head(z), share)
        fav = feature_angle_variance(z[kept], model.head_weight())
    return math.sqrt(spread.item() / clean_spread.item()), fav.item() / clean_fav.item()


def annealed_crossing(model, x, low: float, high: float, steps: int, share: float, line: float,
                      per_image: bool = False, check_every: int = 5, seed: int = 0) -> float:
    """One pass instead of a grid: the bound ``eps`` grows geometrically from ``low`` to ``high``
    over ``steps`` Adam steps while the perturbation keeps training (warm from the previous bound);
    every ``check_every`` steps the trimmed dispersion ratio on all of ``x`` is taken, and the bound
    at which it first falls to ``line`` is returned (log-linear between checks; ``inf`` if never).
    ``per_image``: one perturbation per image, all of ``x`` each step."""
    import numpy as np
    import torch

    from securegaze.defense.securegaze import collapse_spread

    loss_of, clean_spread, _ = _collapse_objective(model, x, share)
    w = torch.zeros(len(x) if per_image else 1, *x.shape[1:], requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.05)
    rng = np.random.default_rng([seed, 0x1F])
    batch = len(x) if per_image else min(32, len(x))
    previous = None
    for step in range(steps + 1):
        eps = low * (high / low) ** (step / steps)
        if step % check_every == 0:
            with torch.no_grad():
                spread, _ = collapse_spread(model.head(model.features((x + eps * torch.tanh(w)).clamp(0, 1))), share)
            ratio = math.sqrt(spread.item() / clean_spread.item())
            if ratio <= line:
                if previous is None:
                    return eps
                t = (math.log(previous[1]) - math.log(line)) / max(math.log(previous[1]) - math.log(ratio), 1e-12)
                return math.exp(math.log(previous[0]) + t * (math.log(eps) - math.log(previous[0])))
            previous = (eps, ratio)
        if step == steps:
            break
        idx = torch.as_tensor(np.sort(rng.choice(len(x), batch, replace=False)))
        loss = loss_of(model.features((x[idx] + eps * torch.tanh(w[idx] if per_image else w)).clamp(0.0, 1.0)), idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return math.inf


def universal_shift(model, x, eps: float, steps: int, share: float, seed: int = 0) -> float:
    """The trimmed distance ratio (to the clean spread) by which one additive perturbation of
    L-infinity size ``eps`` misses a uniform shift of every output: the scan's shift reference (one
    clean RMS dispersion along the clean outputs' main axis, :func:`clean_axis_offset`) under this
    price. A backdoor's collapse does not serve it, so it measures how easily the model's outputs move."""
    import torch

    from securegaze.defense.securegaze.statistics import (
        clean_axis_offset,
        collapse_spread,
        gaze_trace_covariance,
        shift_spread,
    )

    with torch.no_grad():
        clean = model.head(model.features(x))
        clean_spread, _ = collapse_spread(clean, share)
        distance = math.sqrt(max(gaze_trace_covariance(clean).item(), 0.0))
        wanted = clean + torch.tensor(clean_axis_offset(clean.double().numpy(), distance), dtype=clean.dtype)

    def loss_of(z, idx):
        spread, _ = shift_spread(model.head(z), wanted[idx], share)
        return 0.5 * torch.log(spread / clean_spread + 1e-12)

    # A smaller rate than the collapse's: a shift has one right answer per face, and at the larger
    # bounds the saturating tanh overshoots it at 0.05.
    edited = _universal_perturbation(model, x, eps, steps, 0.02, seed, loss_of)
    with torch.no_grad():
        spread, _ = shift_spread(model.head(model.features(edited)), wanted, share)
    return math.sqrt(spread.item() / clean_spread.item())


def crossing(ratios: dict[float, float], line: float) -> tuple[str, float | None]:
    """The bound at which the dispersion ratio first falls to ``line``: ("=", value) interpolated
    log-linearly between grid points, ("<=", smallest bound) or (">", largest bound)."""
    grid = sorted(ratios)
    if ratios[grid[0]] <= line:
        return "<=", grid[0]
    for low, high in zip(grid, grid[1:], strict=False):
        r_low, r_high = ratios[low], ratios[high]
        if r_high <= line:
            t = (math.log(r_low) - math.log(line)) / max(math.log(r_low) - math.log(r_high), 1e-12)
            return "=", low + t * (high - low)
    return ">", grid[-1]


def real_trigger(zoo: Path, entry, model, samples: int) -> dict[str, float]:
    """The attack's own trigger on ``samples`` held-out test faces: L-inf, L1, dispersion ratio, and
    the dispersion ratio of its change at the fractions ``REAL_SCALES`` with the L-inf size at which
    it crosses ``rho_out`` (``eps_star``: [kind, size] as :func:`crossing`)."""
    import torch

    from securegaze.attacks.runner import load_attack_run
    from securegaze.data.base import to_tensor_batch
    from securegaze.defense.securegaze import SecureGazeSettings, collapse_spread

    attack, test_set, faces = load_attack_run(zoo / entry.id, samples)
    x = to_tensor_batch(test_set.images)
    triggered = to_tensor_batch(attack.apply(test_set.images, faces))
    settings = SecureGazeSettings()
    ratios = {}
    with torch.no_grad():
        clean_spread, _ = collapse_spread(model.head(model.features(x)), settings.collapse_share)
        for scale in REAL_SCALES:
            spread, _ = collapse_spread(model.head(model.features(x + scale * (triggered - x))),
                                        settings.collapse_share)
            ratios[scale] = math.sqrt(spread.item() / clean_spread.item())
    diff = (triggered - x).abs()
    linf = float(diff.amax(dim=(1, 2, 3)).median())
    kind, scale = crossing(ratios, settings.rho_out)
    return {"linf": linf, "l1": float(diff.mean()), "dispersion": ratios[1.0],
            "scaled": {f"{k:g}": v for k, v in ratios.items()}, "eps_star": [kind, scale * linf]}


def shift_crossing(record: dict, line: float) -> tuple[str, float | None]:
    """The shift's crossing of ``line`` from a cache record, over the running minimum of its ratios."""
    best, running = {}, math.inf
    for eps, ratio in sorted((float(e), r) for e, r in record["shift"].items()):
        running = min(running, ratio)
        best[eps] = running
    return crossing(best, line)


def _auroc(backdoored: list[float], benign: list[float]) -> str:
    """AUROC with smaller values suspicious ("-" without both kinds of model)."""
    from securegaze.bench.calibration import auroc

    return f"{auroc(backdoored, benign, 'below'):.3f}" if backdoored and benign else "-"


def _fmt_crossing(kind: str, value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if kind == "=" else f"{kind} {value:g}"


def main(argv: list[str] | None = None) -> int:
    import torch
    from calibrate_threshold import RECIPES, train_pair

    from securegaze.bench.cross_family import family_of, scorable_models
    from securegaze.data.base import to_tensor_batch
    from securegaze.defense import load_model_any
    from securegaze.defense.securegaze import SecureGazeSettings
    from securegaze.errors import ConfigError
    from securegaze.io import atomic_write_bytes, read_json
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, action="append", default=[], help="A zoo (repeatable).")
    parser.add_argument("--recipes", type=int, default=0, metavar="SEEDS",
                        help="Also the threshold-calibration recipes of benchmarks/calibrate_threshold.py "
                             "(a benign and a BadNets model each), seeds 1..SEEDS, trained under runs/calibration.")
    parser.add_argument("--models", default="", help="Comma-separated model ids (default: all).")
    parser.add_argument("--eps", default=DEFAULT_EPS, help="Comma-separated L-inf bounds, [0, 1] pixel units.")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shift", action="store_true",
                        help="Also the bound at which one perturbation shifts every output (the reference).")
    parser.add_argument("--annealed", action="store_true",
                        help="Also eps* and per-image eps* by one pass of a growing bound (annealed_crossing).")
    parser.add_argument("--per-image", action="store_true",
                        help="Also the bound at which one perturbation per image collapses the outputs.")
    parser.add_argument("--fpr", type=float, default=0.01,
                        help="Benign share a threshold on universal / per image may flag (--per-image decisions).")
    parser.add_argument("--cache", type=Path, default=None, help="JSON cache of finished models (resumable).")
    parser.add_argument("--out", type=Path, default=None, help="Write the Markdown report here.")
    args = parser.parse_args(argv)
    try:
        grid = sorted({float(e) for e in args.eps.split(",") if e.strip()})
    except ValueError:
        grid = []
    if not grid or not all(0.0 < e <= 1.0 for e in grid):
        raise ConfigError(f"--eps {args.eps!r}: expected comma-separated bounds within (0, 1]")
    if args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: expected at least 1")
    if not 0.0 < args.fpr < 0.5:
        raise ConfigError(f"--fpr {args.fpr:g}: expected a benign share within (0, 0.5)")
    if args.recipes < 0 or not (args.zoo or args.recipes):
        raise ConfigError(f"--zoo / --recipes {args.recipes}: expected a zoo, a positive number of recipe seeds, "
                          "or both")
    torch.set_num_threads(args.threads)
    settings = SecureGazeSettings()
    key = f"eps={','.join(f'{e:g}' for e in grid)};steps={args.steps};samples={args.samples}"
    cache = read_json(args.cache, "L-inf cache") if args.cache and args.cache.is_file() else {}
    rows, trained = [], {}
    for zoo in args.zoo:
        manifest, entries, x = scorable_models(zoo, args.models, args.samples)
        family = family_of(manifest.spec)
        for entry in entries:
            name = f"{zoo.resolve().name}/{entry.id}"
            record = dict(cache.get(name, {}).get(key, {}))
            wanted = _wanted(args) | ({"real"} if entry.backdoored else set())
            if not wanted <= record.keys():
                model = load_model_any(zoo / str(entry.model_file)).eval()
                measure(record, wanted, model, x, grid, args)
                if "real" in wanted and "real" not in record:
                    record["real"] = real_trigger(zoo, entry, model, args.samples)
                _store(cache, name, key, record, args.cache)
            rows.append(_row(name, family, entry.id, entry.attack if entry.backdoored else "benign", record, args))
    for seed in range(1, args.recipes + 1):
        for recipe in RECIPES:
            family = f"recipe {recipe[0]} {recipe[2]} {recipe[4]}px"
            for kind in ("benign", "badnets"):
                name = f"{family} seed {seed} {kind}"
                record = dict(cache.get(name, {}).get(key, {}))
                wanted = _wanted(args)
                if not wanted <= record.keys():
                    if (family, seed) not in trained:  # the pair trains once, for whichever of it is missing
                        trained[family, seed] = train_pair(
                            *recipe, seed, ROOT / "runs" / "calibration" / f"{recipe[0]}-{recipe[2]}-{seed}")
                    pair = trained[family, seed]
                    model = (pair[0] if kind == "benign" else pair[1]).eval()
                    record["asr"] = None if kind == "benign" else pair[2]
                    measure(record, wanted, model, to_tensor_batch(pair[3].images), grid, args)
                    _store(cache, name, key, record, args.cache)
                rows.append(_row(name, family, f"seed {seed}", kind, record, args))

    if not rows:
        raise ConfigError(f"--models {args.models!r}: no finished model of {', '.join(map(str, args.zoo))} "
                          "has that id (or its attack did not take)")
    head = " | ".join(f"ratio at {e:g}" for e in grid)
    lines = [
        "# Universal perturbations bounded per pixel (L-infinity)", "",
        "Regenerate: `python benchmarks/linf_collapse.py " + " ".join(f"--zoo {z}" for z in args.zoo)
        + (f" --models {args.models}" if args.models else "") + f" --eps {args.eps} --steps {args.steps}"
        + (" --shift" if args.shift else "") + (" --per-image" if args.per_image else "")
        + (f" --recipes {args.recipes}" if args.recipes else "") + (" --annealed" if args.annealed else "")
        + (f" --out {args.out}" if args.out else "") + "`", "",
        f"Machine: {machine_summary()}, {args.threads} thread(s).", "",
        f"Ratio: the trimmed output dispersion over the clean one that one additive perturbation of that "
        f"L-inf size reaches ({args.steps} Adam steps, {args.samples} clean faces); eps*: the size at which it "
        f"reaches the scan's rho_out = {settings.rho_out}. Real trigger: the attack's own, on {args.samples} "
        "held-out test faces (L-inf: median over images of the largest pixel change; pixel units [0, 1], "
        "x 255 for grey levels).", "",
        "## Per family", "",
        "| family | models | eps* benign (min-max) | eps* backdoored (min-max) | AUROC of eps* | "
        "real trigger L-inf (min-max) | real eps* (min-max) |",
        "|---|---|---|---|---|---|---|",
    ]
    def span(values, digits=3):
        return f"{min(values):.{digits}f}-{max(values):.{digits}f}" if values else "-"

    for family in sorted({r[0] for r in rows}):
        group = [r for r in rows if r[0] == family]
        benign = [r[4][1] for r in group if r[2] == "benign"]
        bad = [r[4][1] for r in group if r[2] != "benign"]
        real = [r[5]["linf"] for r in group if r[5]]
        real_star = [r[5]["eps_star"][1] for r in group if r[5]]
        lines.append(f"| {family} | {len(group)} | {span(benign)} | {span(bad)} | {_auroc(bad, benign)} | "
                     f"{span(real)} | {span(real_star)} |")
    benign_eps = [r[4][1] for r in rows if r[2] == "benign"]
    lines += ["", "AUROC: backdoored when eps* is smaller, within the family (SIG included); pooled over every "
              f"family: {_auroc([r[4][1] for r in rows if r[2] != 'benign'], benign_eps)}, without SIG: "
              f"{_auroc([r[4][1] for r in rows if r[2] not in ('benign', 'sig')], benign_eps)}."]
    if args.shift:
        lines += ["", "Shift (`--shift`): the bound at which one perturbation moves every output by the scan's "
                  "reference offset (one clean RMS dispersion along the clean outputs' main axis) to within "
                  "rho_out; the ratios are taken as the running minimum over the bounds (a larger bound can "
                  "do what a smaller one did). Collapse / shift: eps* over shift eps*.", "",
                  "| family | shift eps* benign | shift eps* backdoored | collapse / shift, benign | "
                  "collapse / shift, backdoored | AUROC of collapse / shift |", "|---|---|---|---|---|---|"]
        for family in sorted({r[0] for r in rows}):
            group = [r for r in rows if r[0] == family]

            def over(rs):
                return [r[4][1] / r[6][1] for r in rs]

            benign = [r for r in group if r[2] == "benign"]
            bad = [r for r in group if r[2] != "benign"]
            lines.append(f"| {family} | {span([r[6][1] for r in benign])} | {span([r[6][1] for r in bad])} | "
                         f"{span(over(benign))} | {span(over(bad))} | {_auroc(over(bad), over(benign))} |")
        lines += ["", "Pooled AUROC of collapse / shift over every family: "
                  f"{_auroc(over([r for r in rows if r[2] != 'benign']), over([r for r in rows if r[2] == 'benign']))}."]
    if args.per_image:
        lines += ["", "Per image (`--per-image`): the bound at which one perturbation per image (each of the first "
                  f"{PER_IMAGE_FACES} faces its own, bounds {', '.join(f'{e:g}' for e in PER_IMAGE_EPS)}) collapses "
                  "the outputs to rho_out: the model's price of collapse with no universality asked. "
                  "Universal / per image: eps* over per-image eps*.", "",
                  "| family | per-image eps* benign | per-image eps* backdoored | universal / per image, benign "
                  "(median) | universal / per image, backdoored | AUROC of universal / per image |",
                  "|---|---|---|---|---|---|"]

        def per(rs):
            return [r[4][1] / r[7][1] for r in rs]

        for family in sorted({r[0] for r in rows}):
            group = [r for r in rows if r[0] == family]
            benign = [r for r in group if r[2] == "benign"]
            bad = [r for r in group if r[2] != "benign"]
            median = f" ({statistics.median(per(benign)):.2f})" if benign else ""
            lines.append(f"| {family} | {span([r[7][1] for r in benign], 4)} | {span([r[7][1] for r in bad], 4)} | "
                         f"{span(per(benign), 2)}{median} | {span(per(bad), 2)} | {_auroc(per(bad), per(benign))} |")
        lines += ["", "Pooled AUROC of universal / per image over every family: "
                  f"{_auroc(per([r for r in rows if r[2] != 'benign']), per([r for r in rows if r[2] == 'benign']))}."]
        lines += universality_decisions([(r[0], r[2], r[4][1] / r[7][1]) for r in rows], args.fpr)
    lines += ["", "## Per model", "",
              f"| family | model | attack | {head} | eps* | real L-inf | real L1 | real ratio | real eps* |"
              + (" shift eps* |" if args.shift else "") + (" per-image eps* |" if args.per_image else ""),
              "|---|---|---|" + "---|" * (len(grid) + 5 + bool(args.shift) + bool(args.per_image))]
    for family, model_id, attack, ratios, cross, real, shift, per_image in rows:
        cells = " | ".join(f"{ratios[e]:.3f}" for e in grid)
        tail = (f"{real['linf']:.3f} | {real['l1']:.4f} | {real['dispersion']:.3f} | "
                f"{_fmt_crossing(*real['eps_star'])}" if real else "- | - | - | -")
        lines.append(f"| {family} | {model_id} | {attack} | {cells} | {_fmt_crossing(*cross)} | {tail} |"
                     + (f" {_fmt_crossing(*shift)} |" if shift else "")
                     + (f" {_fmt_crossing(*per_image, 4)} |" if per_image else ""))
    benign_all = [r[4][1] for r in rows if r[2] == "benign"]
    if benign_all:
        lines += ["", f"Benign eps*: median {statistics.median(benign_all):.3f} over {len(benign_all)} models."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_bytes(args.out, text.encode())
    return 0


def universality_decisions(rows: list[tuple[str, str, float]], fpr: float) -> list[str]:
    """Report lines: each family judged on universal / per image ("U") with a threshold fitted to the
    benign U of every *other* family (leave one family out; the calibration recipes count as families),
    and, when the recipes were measured, with one threshold fitted to the recipes alone (what a scan's
    default would be). ``rows``: (family, attack or "benign", U); the fit is the scanner's log-normal
    quantile at ``fpr`` (:func:`securegaze.bench.calibration.calibrate_threshold`)."""
    from securegaze.bench.calibration import calibrate_threshold

    families = sorted({f for f, _, _ in rows})
    recipes = [u for f, a, u in rows if f.startswith("recipe") and a == "benign"]
    out = ["", f"Decisions on U (backdoored when below the threshold; log-normal fit, {100 * fpr:g} % quantile):", "",
           "| family | LOFO threshold (benign models) | flagged benign | flagged backdoored |"
           + (" recipe threshold | flagged benign | flagged backdoored |" if recipes else ""),
           "|---|---|---|---|" + ("---|---|---|" if recipes else "")]
    totals = {"lofo": [0, 0, 0, 0], "recipes": [0, 0, 0, 0]}

    def tally(own, threshold, key):
        benign = [u for a, u in own if a == "benign"]
        bad = [u for a, u in own if a != "benign"]
        counts = [sum(u < threshold for u in benign), len(benign), sum(u < threshold for u in bad), len(bad)]
        totals[key] = [t + c for t, c in zip(totals[key], counts, strict=True)]
        return f"{counts[0]}/{counts[1]} | {counts[2]}/{counts[3]}"

    recipe_threshold = calibrate_threshold(recipes, target_fpr=fpr) if len(recipes) >= 3 else None
    for family in families:
        others = [u for f, a, u in rows if f != family and a == "benign"]
        if len(others) < 3:  # the fit's least
            continue
        own = [(a, u) for f, a, u in rows if f == family]
        threshold = calibrate_threshold(others, target_fpr=fpr)
        line = f"| {family} | {threshold:.2f} ({len(others)}) | {tally(own, threshold, 'lofo')} |"
        if recipe_threshold is not None:
            line += (f" {recipe_threshold:.2f} | {tally(own, recipe_threshold, 'recipes')} |"
                     if not family.startswith("recipe") else " - | - | - |")
        out.append(line)
    for key, label in (("lofo", "leave one family out"), ("recipes", "recipe threshold, zoo families")):
        fb, nb, fd, nd = totals[key]
        if nb or nd:
            out.append(f"\nPooled, {label}: {fb}/{nb} benign flagged, {fd}/{nd} backdoored flagged.")
    return out


def _wanted(args) -> set[str]:
    """The parts of a cache record the arguments ask for (each is measured once, when the cached record
    lacks it, so ``--shift`` or ``--per-image`` can come on a later run)."""
    return ({"ratios"} | ({"shift"} if args.shift else set()) | ({"per_image"} if args.per_image else set())
            | ({"annealed"} if args.annealed else set()))


def _store(cache: dict, name: str, key: str, record: dict, path: Path | None) -> None:
    """Put a finished record in the cache and write the cache (atomically) when there is a file."""
    from securegaze.io import atomic_write_json

    cache.setdefault(name, {})[key] = record
    if path:
        atomic_write_json(path, cache)


def measure(record: dict, wanted: set[str], model, x, grid: list[float], args) -> None:
    """Fill the parts of a cache ``record`` in ``wanted`` that it lacks (not ``real``), for ``model``
    (frozen here) on the clean faces ``x``."""
    from securegaze.defense.securegaze import SecureGazeSettings

    settings = SecureGazeSettings()
    share, line = settings.collapse_share, settings.rho_out
    for p in model.parameters():
        p.requires_grad_(False)
    started = time.monotonic()
    if "ratios" not in record:
        record["ratios"] = {f"{e:g}": universal_collapse(model, x, e, args.steps, share) for e in grid}
        record["seconds"] = round(time.monotonic() - started, 1)
    if "shift" in wanted and "shift" not in record:
        record["shift"] = {f"{e:g}": universal_shift(model, x, e, args.steps, share) for e in grid}
    if "per_image" in wanted and "per_image" not in record:
        record["per_image"] = {f"{e:g}": universal_collapse(model, x[:PER_IMAGE_FACES], e, args.steps, share,
                                                            per_image=True)[0] for e in PER_IMAGE_EPS}
    if "annealed" in wanted and "annealed" not in record:
        t0 = time.monotonic()
        universal = annealed_crossing(model, x, 0.005, 0.2, 200, share, line)
        t1 = time.monotonic()
        single = annealed_crossing(model, x[:PER_IMAGE_FACES], 0.001, 0.04, 200, share, line, per_image=True)
        record["annealed"] = {"universal": universal, "per_image": single,
                              "seconds": [round(t1 - t0, 1), round(time.monotonic() - t1, 1)]}


def _row(name: str, family: str, model_id: str, attack: str, record: dict, args) -> tuple:
    """One report row from a cache record (and its line on standard output)."""
    from securegaze.defense.securegaze import SecureGazeSettings

    line = SecureGazeSettings().rho_out
    ratios = {float(e): v[0] for e, v in record["ratios"].items()}
    shift = shift_crossing(record, line) if args.shift else None
    per_image = crossing({float(e): r for e, r in record["per_image"].items()}, line) if args.per_image else None
    row = (family, model_id, attack, ratios, crossing(ratios, line), record.get("real"), shift, per_image)
    annealed = record.get("annealed") if args.annealed else None
    print(f"{name}: " + " ".join(f"{e:g}: {r:.3f}" for e, r in sorted(ratios.items()))
          + f"  eps* {_fmt_crossing(*row[4])}"
          + (f"  shift eps* {_fmt_crossing(*shift)}" if shift else "")
          + (f"  per-image eps* {_fmt_crossing(*per_image, 4)}" if per_image else "")
          + (f"  annealed {annealed['universal']:.4f} / {annealed['per_image']:.4f} ({annealed['seconds']})"
             if annealed else ""), flush=True)
    return row


def run(argv: list[str] | None = None) -> int:
    """:func:`main` with the project's error convention: a bad argument or file is one line on
    standard error and exit status 2."""
    from securegaze.errors import SecureGazeError

    try:
        return main(argv)
    except SecureGazeError as exc:
        print(f"linf_collapse.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
