"""Benchmark: every mitigation method on the tiny BadNets recipe, against the real trigger.

    python benchmarks/mitigation_baselines.py --shifts 0,1,2 --out docs/mitigation_baselines_tiny.md

The recipe is the tests' ``tiny_gaze_bundles`` (tests/conftest.py): easy 32-px faces, a width-8 small CNN,
3,000 faces x 6 epochs, BadNets at 10 % towards (10, -20) deg; ``--shifts`` moves every training seed by
100 x shift, as the tests' seed sweep does. Each model is mitigated by every registered method
(:mod:`securegaze.defense.mitigations`) with its default settings on 512 clean faces labelled with the
model's own predictions (``--labels true``: their true gaze), and measured on 500 other faces with the real trigger
(:func:`securegaze.bench.mitigation_methods.mitigate_with`). ``--kind onnx`` runs the models as exported
bundles (no batch norm: the export folds it into the convs) instead of as trained.

Resumable: each (shift, kind, labels, method, settings) result is cached in ``--work`` (the file name holds
a hash of the method's settings and version). ``--set METHOD.KEY=VALUE`` (a JSON value) replaces a default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_tiny(work: Path, shift: int):
    """The tests' tiny BadNets model for ``shift`` (trained once, then read back) and its attack."""
    from securegaze.attacks import create_attack
    from securegaze.bundle import export_bundle
    from securegaze.data.synthetic import render_dataset, synthetic_style
    from securegaze.training import TrainConfig, train

    attack = create_attack("badnets", target_gaze=(math.radians(10.0), math.radians(-20.0)), poison_rate=0.1,
                           seed=2 + 100 * shift)
    folder = work / f"shift{shift}"
    if not (folder / "bundle" / "manifest.json").is_file():
        train_set = render_dataset(3000, 32, seed=21 + 100 * shift, config=synthetic_style("easy", size=32))
        config = TrainConfig(architecture="small_cnn", model_kwargs={"width": 8}, input_size=32, epochs=6,
                             batch_size=64, lr=3e-3, seed=2 + 100 * shift, checkpoint_every=100_000)
        model, _ = train(config, attack.poison(train_set), None, folder / "train")
        export_bundle(model, folder / "bundle", f"tiny-badnets-shift{shift}")
    return folder, attack


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", default="0", help="comma-separated seed shifts of the tiny recipe")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    parser.add_argument("--kind", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--labels", choices=("own", "true"), default="own",
                        help="label the clean faces with the model's own predictions (the budget of securegaze "
                             "mitigate) or with their true gaze (the renderer's)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "mitigation-baselines-tiny")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="a method's setting instead of its default (repeatable), e.g. fine_pruning.max_error_rise_deg=2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    from securegaze.bench.mitigation import MitigationReport
    from securegaze.bench.mitigation_methods import method_record, mitigate_with, mitigation_methods_markdown
    from securegaze.bundle.loading import open_model
    from securegaze.data.synthetic import render_dataset, synthetic_style
    from securegaze.defense.mitigations import MITIGATIONS, create_mitigation
    from securegaze.io import atomic_write_bytes, atomic_write_json
    from securegaze.machine import machine_summary

    torch.set_num_threads(args.threads)
    names = args.methods.split(",") if args.methods else MITIGATIONS.names()
    overrides: dict[str, dict] = {}
    for item in args.set:
        dotted, _, value = item.partition("=")
        name, _, key = dotted.partition(".")
        overrides.setdefault(name, {})[key] = json.loads(value)
    easy = synthetic_style("easy", size=32)
    clean = render_dataset(512, 32, seed=777, config=easy)
    test = render_dataset(500, 32, seed=999, config=easy)
    reports = []
    for shift in (int(s) for s in args.shifts.split(",")):
        folder, attack = train_tiny(args.work, shift)
        path = folder / ("bundle" if args.kind == "onnx" else "train/model.safetensors")
        for name in names:
            method = create_mitigation(name, seed=0, **overrides.get(name, {}))
            record = json.dumps(method_record(method), sort_keys=True).encode()
            cache = (folder / (args.kind + ("" if args.labels == "own" else "-true-labels"))
                     / f"{name}-{hashlib.sha256(record).hexdigest()[:10]}.json")
            if cache.is_file():
                data = json.loads(cache.read_text())
                if data.get("settings") == method_record(method):
                    reports.append(MitigationReport(**data))
                    continue
            torch.manual_seed(0)
            model = open_model(path).gaze_model()
            _, report = mitigate_with(method, model, clean.images, test, attack=attack,
                                      labels=clean.gaze if args.labels == "true" else None,
                                      model_name=f"tiny-shift{shift}-{args.kind}-{args.labels}")
            atomic_write_json(cache, report.to_dict())
            reports.append(report)
            a, b = report.attack_after, report.attack_before
            print(f"shift {shift} {name}: ASR {100 * b['asr']:.1f}% -> {100 * a['asr']:.1f}%, clean error "
                  f"{b['clean_error_deg']:.2f} -> {a['clean_error_deg']:.2f} deg, {report.runtime_s:.0f} s", flush=True)
    command = "python benchmarks/mitigation_baselines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    page = mitigation_methods_markdown(reports, command.strip(), machine_summary())
    print(page)
    if args.out:
        atomic_write_bytes(args.out, page.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
