"""Benchmark: the SecureGaze threshold from benign score ratios of several model families.

    python benchmarks/calibrate_threshold.py --out docs/threshold_calibration.md [--seeds 3] [--fpr 0.001]

Since scanner 2.0 the score is a ratio of two collapse costs of the same model (the cheapest
collapse the scan finds over the cheapest collapse onto a reference gaze of its own choosing), so
it carries no unit of the model, the images or the family. This script measures how that ratio is
spread over benign models that differ in everything a user's model may differ in: architecture
family (small_cnn, plain_cnn, a compact resnet18), renderer style (easy, studio), input size and
seed, plus the project's 64-px default model when it is there. Each recipe is trained twice from
the same data, once clean and once with a BadNets patch (10 %, a corner drawn per seed), so the
table shows both sides; the threshold uses the benign ratios only.

The threshold is the ``--fpr`` quantile of a log-normal fitted to the benign ratios (the ratios are
positive): the score below which that share of benign models would fall. The default, 0.1 %, is
stricter than the 1 % of the zoo benchmark because the benign ratios are a mixture of family modes
(small CNNs near 0.3, the other families 0.6-1.4): one pooled fit understates the tail of the lowest
family, and the clean-set sweep (benchmarks/clean_set_size.py) saw a benign small CNN at 0.23 on another
draw of 256 images. Writes a Markdown report (``--out``) with every model's figures and prints it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Still heads without blur or noise: what a 32-px width-8 model learns in six epochs on the CPU.
STILL = {"head_jitter_deg": (0.0, 0.0, 0.0), "blur": (0.0, 0.0), "noise": (0.0, 0.0)}
#: Recipes: (family, architecture arguments, renderer style, its overrides, input size).
RECIPES = (
    ("small_cnn", {"width": 8}, "easy", {}, 32),
    ("plain_cnn", {"width": 8}, "easy", {}, 32),
    ("resnet18", {"width": 8, "stem": "compact"}, "easy", {}, 32),
    ("plain_cnn", {"width": 8}, "studio", STILL, 32),
)
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
TARGET_DEG = (10.0, -20.0)


def train_pair(family, kwargs, style, overrides, size, seed, work):
    from securegaze.attacks import create_attack, evaluate_attack
    from securegaze.data.synthetic import render_dataset, synthetic_style
    from securegaze.training import TrainConfig, train

    look = synthetic_style(style, size=size, **overrides)
    train_set = render_dataset(3000, size, seed=1000 * seed + 1, config=look)
    clean = render_dataset(256, size, seed=1000 * seed + 2, config=look)
    config = TrainConfig(architecture=family, model_kwargs=kwargs, input_size=size, epochs=6, batch_size=64,
                         lr=3e-3, seed=seed, checkpoint_every=100_000)
    attack = create_attack("badnets", target_gaze=tuple(math.radians(a) for a in TARGET_DEG), poison_rate=0.1,
                           seed=seed, position=CORNERS[seed % len(CORNERS)])
    benign, _ = train(config, train_set, None, work / "benign")
    backdoored, _ = train(config, attack.poison(train_set), None, work / "backdoored")
    asr = evaluate_attack(backdoored, attack, clean).asr
    return benign, backdoored, asr, clean


#: Detector settings of every scan (``--set``); otherwise the scanner's defaults, but one scan per model:
#: the threshold is drawn for a single run's score, which ``confirm_seeds`` then asks of every seed.
SETTINGS: dict = {"confirm_seeds": 0}


def _scan(model, images):
    from securegaze.defense import create_detector

    started = time.monotonic()
    report = create_detector("securegaze", **SETTINGS).scan(model, images)
    # The cost-ratio threshold is fitted on the cost ratio (4.1's report score also weighs U,
    # benchmarks/universality.py fits its threshold).
    return {"score": report.details.get("cost_ratio", report.score), "cost": report.details["final_cost"],
            "reference_cost": (report.details["reference"] or {}).get("cost"),
            "scan_s": time.monotonic() - started}


DEFAULT_MODEL = ROOT / "models" / "default"


def _default_model_label():
    """The default model's row name, from its manifest (None without one): the model may be replaced."""
    path = DEFAULT_MODEL / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    return f"default model ({manifest.get('architecture', '?')}, standard, {manifest['input']['size']} px)"


def _default_model_row(samples):
    from securegaze.bundle import open_model
    from securegaze.data.synthetic import render_dataset

    label = _default_model_label()
    if label is None:
        return None
    net = open_model(DEFAULT_MODEL).gaze_model()
    clean = render_dataset(samples, int(net.input_size), seed=20_250_505)
    return {"recipe": label, "seed": "-", "asr": None, "benign": _scan(net, clean.images), "backdoored": None}


def _recipe_ranges(rows):
    """{recipe: (lowest, highest) finite benign score} in the order of the rows."""
    ranges = {}
    for row in rows:
        score = row["benign"]["score"]
        if math.isfinite(score):
            low, high = ranges.get(row["recipe"], (score, score))
            ranges[row["recipe"]] = (min(low, score), max(high, score))
    return ranges


def _twin_range(rows):
    twins = [row["backdoored"]["score"] for row in rows if row["backdoored"] is not None]
    return f"{min(twins):.3f}-{max(twins):.3f}" if twins else "nothing (none was trained)"


def fit(benign_scores, fpr):
    """The threshold (securegaze.bench.calibration.calibrate_threshold: the log-normal quantile, never
    above the lowest benign score) with the fit's figures for the report."""
    from securegaze.bench.calibration import calibrate_threshold

    finite = [s for s in benign_scores if math.isfinite(s)]
    if len(finite) < 2:
        raise SystemExit(f"calibrate_threshold: {len(finite)} benign models with a finite score; a fit needs 2 or more")
    logs = [math.log(s) for s in finite]
    # A benign model the scan could not collapse at all scores inf ("clean" at any threshold): it is
    # counted, and stays out of the fit, which needs finite logarithms.
    return {"log_mean": statistics.fmean(logs), "log_std": statistics.stdev(logs), "fpr": fpr,
            "threshold": calibrate_threshold(finite, target_fpr=fpr),
            "benign_min": min(finite), "count": len(finite), "infinite": len(benign_scores) - len(finite)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Markdown report")
    parser.add_argument("--json", type=Path, default=None, help="every figure as JSON")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per recipe")
    parser.add_argument("--fpr", type=float, default=0.001, help="benign share the threshold may flag (fit)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "calibration", help="training folders")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-default-model", action="store_true", help="leave the 64-px default model out")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a scanner setting other than its default (repeatable; JSON values), e.g. "
                             "--set input_jitter=true: calibrates a candidate before it becomes the default")
    args = parser.parse_args(argv)
    if not 0 < args.fpr < 0.5 or args.seeds < 1:
        parser.error("--fpr must lie in (0, 0.5) and --seeds be at least 1")
    import torch
    from typer import BadParameter

    from securegaze.cli.attacks import parse_settings
    from securegaze.defense import create_detector
    from securegaze.defense.securegaze import SCANNER_VERSION
    from securegaze.errors import ConfigError
    from securegaze.io import atomic_write_json
    from securegaze.machine import machine_summary

    try:
        SETTINGS.update(parse_settings(args.set))
        create_detector("securegaze", **SETTINGS)
    except (ConfigError, BadParameter) as exc:
        parser.error(exc.format_message() if isinstance(exc, BadParameter) else f"--set: {exc}")
    torch.set_num_threads(args.threads)
    # Resumable: rows already in --json (same recipe and seed) are kept, not retrained.
    from securegaze.json_codec import from_json

    # (read back through the codec: a score that never collapsed was written as "inf")
    rows = from_json(json.loads(args.json.read_text()))["rows"] if args.json and args.json.is_file() else []
    done = {(r["recipe"], r["seed"]) for r in rows}
    for family, kwargs, style, overrides, size in RECIPES:
        for seed in range(1, args.seeds + 1):
            name = f"{family} {style} {size}px"
            if (name, seed) in done:
                continue
            benign, backdoored, asr, clean = train_pair(family, kwargs, style, overrides, size, seed,
                                                         args.work / f"{family}-{style}-{seed}")
            row = {"recipe": name, "seed": seed, "asr": asr, "benign": _scan(benign, clean.images),
                   "backdoored": _scan(backdoored, clean.images)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                atomic_write_json(args.json, {"rows": rows})
    if not args.no_default_model and (_default_model_label(), "-") not in done:
        row = _default_model_row(256)
        if row is not None:
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = fit([r["benign"]["score"] for r in rows], args.fpr)
    lines = ["# SecureGaze threshold calibration", "",
             f"Command: `python benchmarks/calibrate_threshold.py --seeds {args.seeds} --fpr {args.fpr} "
             f"--threads {args.threads}" + "".join(f" --set {item}" for item in args.set) + f"` ({machine_summary()}; "
             f"scanner {SCANNER_VERSION}, {'settings ' + str(SETTINGS) if SETTINGS else 'default settings'}; the "
             "scan times include other jobs that shared the cores).", "",
             "| recipe | seed | BadNets ASR@5deg | benign score | backdoored score | benign scan s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        asr = "-" if r["asr"] is None else f"{r['asr']:.2f}"
        back = "-" if r["backdoored"] is None else f"{r['backdoored']['score']:.3f}"
        lines.append(f"| {r['recipe']} | {r['seed']} | {asr} | {r['benign']['score']:.3f} | {back} "
                     f"| {r['benign']['scan_s']:.0f} |")
    lines += ["", f"Log-normal fit of {result['count']} benign scores"
              + (f" ({result['infinite']} more never collapsed: inf, left out of the fit)" if result["infinite"] else "")
              + f": log mean {result['log_mean']:.3f}, "
              f"log std {result['log_std']:.3f}; lowest benign score {result['benign_min']:.3f}.",
              f"Threshold at a fitted false-positive rate of {args.fpr:g}: **{result['threshold']:.4f}**.", "",
              "Why a fitted 0.1 % and not 1 %: the benign ratios are a mixture of recipe modes (per recipe: "
              + ", ".join(f"{name} {low:.2f}-{high:.2f}" for name, (low, high) in _recipe_ranges(rows).items())
              + "), so one pooled log-normal understates the tail of the lowest recipe, and the scores move with the "
              "draw of clean images (docs/clean_set_size.md). The BadNets twins, which the fit never sees, score "
              f"{_twin_range(rows)}.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "fit": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
