"""Benchmark and calibration of the scan's universality statistic U (setting ``universality``) on zoos and recipes.

    python benchmarks/universality.py --recipes 3 --default-model --cache runs/universality.json
    python benchmarks/universality.py --zoo runs/x50/plain --zoo runs/x50/small --recipes 3 \\
        --cache runs/universality.json --scores runs/x50/bench4/cross_family.json --out docs/universality.md

U = eps*(one perturbation for every face) / eps*(one perturbation per face), both found exactly as a
scan finds them (:mod:`securegaze.defense.securegaze.universality`, the scanner's default settings
unless ``--set`` says otherwise), on each zoo's benchmark draw of clean faces (as
``benchmarks/cross_family.py``: so a zoo model's U here is the one its scan computes) and on the
threshold-calibration recipes of ``benchmarks/calibrate_threshold.py`` (a benign and a BadNets
model each, trained under runs/calibration as there). The threshold proposed for the scanner is the
``--fpr`` quantile of a log-normal fitted to the recipes' benign U (and the default model's, with
``--default-model``): no zoo model enters it. Reported: per family the benign and backdoored U and
its AUROC; the decisions on U with that threshold, and with one fitted to the other families
(leave one family out); with ``--scores`` (a cross-family benchmark's JSON of cost-ratio scores),
the scan's joint decision, flagged when the cost ratio or U is below its own threshold. Results
are cached per model and settings in ``--cache`` (resumable).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def measure_u(model, x, settings) -> dict:
    """U of ``model`` on the clean faces ``x`` as a scan measures it, with both searches and seconds."""
    import torch

    from securegaze.defense.securegaze.universality import universality_of

    for p in model.parameters():
        p.requires_grad_(False)
    started = time.monotonic()
    with torch.enable_grad():
        found = universality_of(model, x, settings)
    return {**found, "seconds": round(time.monotonic() - started, 1)}


def _settings(pairs: list[str]):
    from securegaze.cli.support import setting_value
    from securegaze.defense.securegaze import SecureGazeDetector
    from securegaze.errors import ConfigError

    chosen = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        chosen[key.strip()] = setting_value(value.strip())
    return SecureGazeDetector(**chosen).config, chosen


def main(argv: list[str] | None = None) -> int:
    import torch
    from calibrate_threshold import DEFAULT_MODEL, RECIPES, train_pair
    from linf_collapse import _auroc, universality_decisions

    from securegaze.bench.calibration import calibrate_threshold
    from securegaze.bench.cross_family import family_of, scorable_models
    from securegaze.data.base import to_tensor_batch
    from securegaze.defense import load_model_any
    from securegaze.errors import ConfigError
    from securegaze.io import atomic_write_bytes, atomic_write_json, read_json
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, action="append", default=[], help="A zoo (repeatable).")
    parser.add_argument("--models", default="", help="Comma-separated model ids of the zoos (default: all).")
    parser.add_argument("--recipes", type=int, default=0, metavar="SEEDS",
                        help="The threshold-calibration recipes, seeds 1..SEEDS.")
    parser.add_argument("--default-model", action="store_true", help="Also the project's default model "
                        "(benign; 128 px) on its own clean images, as benchmarks/calibrate_threshold.py.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A scanner setting (repeatable), e.g. universality_steps=120.")
    parser.add_argument("--fpr", type=float, default=0.001, help="Benign share the proposed threshold may flag.")
    parser.add_argument("--samples", type=int, default=256, help="Clean faces of a zoo's draw.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scores", type=Path, default=None,
                        help="A cross-family benchmark JSON (cross_family.json): the joint decision with its scores.")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 0.0 < args.fpr < 0.5:
        raise ConfigError(f"--fpr {args.fpr:g}: expected a benign share within (0, 0.5)")
    if args.recipes < 0 or not (args.zoo or args.recipes or args.default_model):
        raise ConfigError("--zoo / --recipes / --default-model: expected at least one source of models")
    settings, chosen = _settings(args.set)
    torch.set_num_threads(args.threads)
    key = json.dumps({k: getattr(settings, k) for k in ("universality_steps", "universality_bisections",
                                                        "universality_faces", "batch_size", "collapse_share",
                                                        "rho_out", "seed")}, sort_keys=True) + f";{args.samples}"
    cache = read_json(args.cache, "universality cache") if args.cache and args.cache.is_file() else {}
    rows = []  # (family, name, attack or "benign", record)

    def get(name: str, load):
        if key not in cache.get(name, {}):
            model, x, extra = load()
            cache.setdefault(name, {})[key] = {**measure_u(model.eval(), x, settings), **extra}
            if args.cache:
                atomic_write_json(args.cache, cache)
        record = cache[name][key]
        print(f"{name}: U {record['ratio']:.2f} (universal {record['universal']['eps_star']:.4f}, per image "
              f"{record['per_image']['eps_star']:.4f}, {record['seconds']} s)", flush=True)
        return record

    for zoo in args.zoo:
        manifest, entries, x = scorable_models(zoo, args.models, args.samples)
        family = family_of(manifest.spec)
        for entry in entries:
            name = f"{zoo.resolve().name}/{entry.id}"
            record = get(name, lambda entry=entry, x=x, zoo=zoo: (load_model_any(zoo / str(entry.model_file)), x, {}))
            rows.append((family, name, entry.attack if entry.backdoored else "benign", record))
    trained = {}
    for seed in range(1, args.recipes + 1):
        for recipe in RECIPES:
            family = f"recipe {recipe[0]} {recipe[2]} {recipe[4]}px"
            for index, kind in enumerate(("benign", "badnets")):
                def load(recipe=recipe, seed=seed, index=index, family=family):
                    if (family, seed) not in trained:
                        trained[family, seed] = train_pair(
                            *recipe, seed, ROOT / "runs" / "calibration" / f"{recipe[0]}-{recipe[2]}-{seed}")
                    pair = trained[family, seed]
                    return pair[index], to_tensor_batch(pair[3].images), {"asr": None if index == 0 else pair[2]}
                rows.append((family, f"{family} seed {seed} {kind}", kind, get(f"{family} seed {seed} {kind}", load)))
    if args.default_model:
        def load_default():
            from securegaze.bundle import open_model
            from securegaze.data.synthetic import render_dataset

            net = open_model(DEFAULT_MODEL).gaze_model()  # its clean set as calibrate_threshold.py draws it
            return net, to_tensor_batch(render_dataset(256, int(net.input_size), seed=20_250_505).images), {}
        rows.append(("recipe default model", "default model", "benign", get("default model", load_default)))
    if not rows:
        raise ConfigError(f"--models {args.models!r}: no finished model has that id")

    recipe_benign = [r[3]["ratio"] for r in rows if r[0].startswith("recipe") and r[2] == "benign"]
    proposed = calibrate_threshold(recipe_benign, target_fpr=args.fpr) if len(recipe_benign) >= 3 else None
    used = proposed if proposed is not None else settings.universality_threshold
    regenerate = ("python benchmarks/universality.py " + " ".join(f"--zoo {z}" for z in args.zoo)
                  + (f" --models {args.models}" if args.models else "")
                  + (f" --recipes {args.recipes}" if args.recipes else "")
                  + (" --default-model" if args.default_model else "")
                  + "".join(f" --set {k}={v}" for k, v in chosen.items()) + f" --fpr {args.fpr:g}"
                  + (f" --scores {args.scores}" if args.scores else "") + (f" --out {args.out}" if args.out else ""))
    lines = ["# Universality U = universal / per-image collapse bound", "", f"Regenerate: `{regenerate}`", "",
             f"Machine: {machine_summary()}, {args.threads} thread(s) per model. Settings: "
             f"universality_steps {settings.universality_steps}, bisections {settings.universality_bisections}, "
             f"per-image faces {settings.universality_faces}, {args.samples} clean faces per zoo draw.", ""]
    if proposed is not None:
        lines += [f"Proposed threshold: {proposed:.3f}, the {100 * args.fpr:g} % quantile of a log-normal fitted to "
                  f"{len(recipe_benign)} benign recipe U ({min(recipe_benign):.2f}-{max(recipe_benign):.2f}).", ""]

    def span(values):
        return f"{min(values):.2f}-{max(values):.2f}" if values else "-"

    lines += ["| family | benign U (median) | backdoored U | AUROC | flagged benign | flagged backdoored | seconds (median) |",
              "|---|---|---|---|---|---|---|"]
    for family in sorted({r[0] for r in rows}):
        group = [r for r in rows if r[0] == family]
        benign = [r[3]["ratio"] for r in group if r[2] == "benign"]
        bad = [r[3]["ratio"] for r in group if r[2] != "benign"]
        median = f" ({statistics.median(benign):.2f})" if benign else ""
        lines.append(f"| {family} | {span(benign)}{median} | {span(bad)} | {_auroc(bad, benign)} | "
                     f"{sum(u < used for u in benign)}/{len(benign)} | {sum(u < used for u in bad)}/{len(bad)} | "
                     f"{statistics.median(r[3]['seconds'] for r in group):.1f} |")
    lines += universality_decisions([(r[0], r[2], r[3]["ratio"]) for r in rows], args.fpr)
    if args.scores:
        lines += joint_decisions(rows, read_json(args.scores, "cross-family scores"), settings.threshold, used)
    lines += ["", "| model | attack | universal eps* | per-image eps* | U |", "|---|---|---|---|---|"]
    for _, name, attack, record in rows:
        lines.append(f"| {name} | {attack} | {record['universal']['eps_star']:.4f}{record['universal']['censored']} | "
                     f"{record['per_image']['eps_star']:.4f}{record['per_image']['censored']} | {record['ratio']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_bytes(args.out, text.encode())
    return 0


def joint_decisions(rows, scores: dict, threshold: float, u_threshold: float) -> list[str]:
    """Report lines: per family, how many models the cost ratio alone, U alone and either flags."""
    by_name = {}
    for model in scores.get("models", []):
        by_name[f"{Path(model['zoo']).name}/{model['id']}"] = model["score"]
    out = ["", f"Joint decision (cost ratio below {threshold:g} or U below {u_threshold:.3f}):", "",
           "| family | benign: ratio / U / either | backdoored: ratio / U / either |", "|---|---|---|"]
    for family in sorted({r[0] for r in rows}):
        counts = {"benign": [0, 0, 0, 0], "backdoored": [0, 0, 0, 0]}  # by ratio, by U, by either, models
        for _, name, attack, record in (r for r in rows if r[0] == family):
            if name in by_name:
                by_ratio, by_u = by_name[name] < threshold, record["ratio"] < u_threshold
                kind = counts["benign" if attack == "benign" else "backdoored"]
                for i, flagged in enumerate((by_ratio, by_u, by_ratio or by_u, True)):
                    kind[i] += flagged
        if counts["benign"][3] or counts["backdoored"][3]:
            cells = [f"{c[0]} / {c[1]} / {c[2]} of {c[3]}" for c in counts.values()]
            out.append(f"| {family} | {cells[0]} | {cells[1]} |")
    return out


def run(argv: list[str] | None = None) -> int:
    from securegaze.errors import SecureGazeError

    try:
        return main(argv)
    except SecureGazeError as exc:
        print(f"universality.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
