"""Variants of SecureGaze's unlearning, tried on models whose scans the detection benchmark already wrote.

An experiment harness, not a product path: it measured the pieces of the mitigation tried in
docs/baselines.md ("Tried and not adopted: mitigation version 4"). Each model gets the same triggers as
``securegaze mitigate`` version 3 (the scan's reversal, a uniform-price reversal and a uniform-price
reversal aimed at the scan's target), then ``rounds`` rounds of fine-tuning with the variant's
changes; after each round the real trigger's ASR@5deg and the clean error are measured on the model's
own held-out test faces.

    python benchmarks/mitigation_variants.py --zoo runs/b15/zoo --bench runs/b15/bench \\
        --variant "rounds=3|towards_each=1|rescan=1|dropout=0.5" glasses-00 glasses-02 wanet-02

Variant keys (``|``-separated ``key=value``): ``rounds``, ``epochs``, ``lr``, ``lr_decay`` (the rate is
multiplied by this each round), ``strengths`` (a tuple), ``dropout`` (share of edited images whose
edit is kept on a random half of a ``cells`` x ``cells`` grid), ``towards_each`` (after each round a
fresh aimed reversal on the tuned model joins the triggers), ``rescan`` (so does the re-scan's
collapse), ``feat`` (weight of a term pulling the penultimate features of edited images to the
original model's features of the clean image). One JSON line per model: ASR and clean error before,
then per round (round, triggers, ASR, clean error) and the aimed reversals' costs.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as nnf

from securegaze.attacks.metrics import evaluate_attack
from securegaze.attacks.runner import load_attack_run
from securegaze.bench.detection import zoo_clean_images
from securegaze.defense import create_detector
from securegaze.defense.inputs import clean_tensor
from securegaze.defense.mitigation import mitigate, own_predictions
from securegaze.defense.model_loading import load_model_any
from securegaze.defense.report import ScanReport
from securegaze.defense.securegaze import TriggerGenerator, load_generator
from securegaze.zoo import ZooManifest

DEFAULTS = {"rounds": 1, "epochs": 10, "lr": 3e-4, "lr_decay": 1.0, "strengths": (1.0, 2.0, 3.0), "dropout": 0.0,
            "cells": 4, "towards_each": False, "rescan": False, "feat": 0.0}


def parse_variant(text: str) -> dict:
    variant = dict(DEFAULTS)
    for item in filter(None, text.split("|")):
        key, _, value = item.partition("=")
        if key not in variant:
            raise SystemExit(f"--variant: unknown key {key!r}; expected one of {', '.join(variant)}")
        parsed = ast.literal_eval(value)
        variant[key] = bool(parsed) if isinstance(variant[key], bool) else type(variant[key])(parsed)
    return variant


def with_edit_dropout(variant: dict):
    """Patch TriggerGenerator.forward so that, outside autograd (the fine-tuning's edited images), a share
    of the images keeps its edit on a random half of the grid cells only (torch's global RNG)."""
    whole = TriggerGenerator.forward

    def forward(self, x, strength=1.0):
        edited = whole(self, x, strength)
        if variant["dropout"] <= 0 or torch.is_grad_enabled():
            return edited
        cells = (torch.rand(len(x), 1, variant["cells"], variant["cells"]) >= 0.5).float()
        keep_all = (torch.rand(len(x), 1, 1, 1) >= variant["dropout"]).float()
        mask = torch.maximum(nnf.interpolate(cells, size=x.shape[-2:], mode="nearest"), keep_all)
        return x + mask * (edited - x)

    TriggerGenerator.forward = forward


def finetune_with_features(original, model, clean, generators, labels, variant, seed, lr):
    """mitigate()'s fine-tuning (clean and edited images, L1 to the labels) plus the feature term."""
    x_all = clean_tensor(clean, model.input_size, "mitigation_variants")
    tuned = copy.deepcopy(model).eval()
    edits = [(g.eval(), a) for g in generators for a in variant["strengths"]]
    targets = torch.as_tensor(labels, dtype=torch.float32)
    with torch.no_grad():
        reference = torch.cat([original.features(x_all[i:i + 256]) for i in range(0, len(x_all), 256)])
        scale = reference.var(0).sum()
    for p in tuned.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=lr)
    for epoch in range(variant["epochs"]):
        rng = np.random.default_rng([seed, epoch, 0x3171])
        order = torch.as_tensor(rng.permutation(len(x_all)))
        which = rng.integers(0, len(edits), len(x_all))
        for k in range(len(x_all) // 64):
            idx = order[k * 64:(k + 1) * 64]
            x = x_all[idx]
            with torch.no_grad():
                edited = torch.empty_like(x)
                kinds = torch.as_tensor(which[idx.numpy()])
                for kind in torch.unique(kinds).tolist():
                    sel = kinds == kind
                    generator, depth = edits[kind]
                    edited[sel] = generator(x[sel], depth)
            z = tuned.features(torch.cat([x, edited]))
            loss = nnf.l1_loss(tuned.head(z), torch.cat([targets[idx], targets[idx]]))
            ref = torch.cat([reference[idx], reference[idx]])
            loss = loss + variant["feat"] * ((z - ref) ** 2).sum(1).mean() / scale
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return tuned.eval()


def run_model(name, manifest, zoo, bench, clean, variant, detector, uniform):
    started = time.monotonic()
    entry = next(e for e in manifest.entries if e.id == name)
    scan_dir = bench / "scans" / zoo.resolve().name / name
    report = ScanReport.load(scan_dir / "report.json")
    attack, test_set, faces = load_attack_run(zoo / name, None)
    model = load_model_any(zoo / str(entry.model_file))
    labels = own_predictions(model, clean)
    generators = [load_generator(scan_dir / "trigger_generator.safetensors")]
    for found in (uniform.reverse(model, clean), uniform.reverse_towards(model, clean, report.target_gaze)):
        if found.constraints_met:
            generators.append(found.generator)
    tuned, log = model, []
    for r in range(variant["rounds"]):
        lr = variant["lr"] * variant["lr_decay"] ** r
        tuned = (mitigate(tuned, clean, generators, labels=labels, epochs=variant["epochs"], lr=lr, seed=r,
                          strengths=variant["strengths"]) if variant["feat"] <= 0 else
                 finetune_with_features(model, tuned, clean, generators, labels, variant, r, lr))
        after = evaluate_attack(tuned, attack, test_set, faces)
        log.append([r, len(generators), round(after.asr, 3), round(after.clean_error_deg, 2)])
        if r + 1 == variant["rounds"]:
            break
        if variant["towards_each"]:
            aimed = uniform.reverse_towards(tuned, clean, report.target_gaze)
            log.append(["towards", aimed.constraints_met, round(aimed.cost, 4)])
            if aimed.constraints_met:
                generators.append(aimed.generator)
        if variant["rescan"]:
            rescan = detector.reverse(tuned, clean)
            if rescan.constraints_met:
                generators.append(rescan.generator)
    before = evaluate_attack(model, attack, test_set, faces)
    return {"asr0": round(before.asr, 3), "err0": round(before.clean_error_deg, 2), "log": log,
            "s": round(time.monotonic() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--bench", type=Path, required=True, help="where 'securegaze bench detect' wrote its scans")
    parser.add_argument("--variant", default="", help="key=value|key=value... (module docstring)")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    variant = parse_variant(args.variant)
    with_edit_dropout(variant)
    manifest = ZooManifest.read(args.zoo)
    clean = zoo_clean_images(manifest.spec, args.samples, 0)
    detector = create_detector("securegaze")
    uniform = detector.ablation("unweighted")
    for name in args.models:
        result = run_model(name, manifest, args.zoo, args.bench, clean, variant, detector, uniform)
        print(name, json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
