"""Benchmark: the scan's warp branch (setting ``warp``) on the cross-family zoos, added to their scans.

    python benchmarks/warp_branch.py --bench runs/x50/bench6 --out runs/x50/warp --threads 1 \\
        --docs docs/warp_branch.md                        # every model of the cross-family benchmark
    python benchmarks/warp_branch.py --bench runs/x50/bench6 --out runs/x50/warp --zoos resnet   # one zoo

The warp branch is a run of its own: the other runs of a scan do not see it, so a scan with ``warp``
on has the cost ratio of the same scan without it. This script therefore runs only the warp search
(:func:`securegaze.defense.securegaze.warp.warp_search`, with the scanner's default warp settings)
on every model that ``benchmarks/cross_family.py --out BENCH`` scanned, on the same clean images
(the benchmark's draw, same samples and seed), and combines it with that scan's cost ratio as the
scanner does: flagged when the cost ratio is below the threshold or the field met both constraints;
score min(cost ratio, threshold x max(dispersion ratio / rho_out, feature ratio / rho_feat)).
Decisions as in the cross-family benchmark: the default threshold, and leave-one-family-out (the
family's threshold fitted on the other families' benign cost ratios, the warp's line unchanged).
Each model's search is cached under ``--out`` by the model's sha256 and the warp settings, so the
script resumes and two processes on different ``--zoos`` can share the folder.
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

WARP_KEYS = ("warp_grid", "warp_budget_frac", "warp_steps", "eval_every", "eval_samples", "batch_size",
             "collapse_share", "rho_out", "rho_feat", "seed")


def _search(zoo: Path, entry, x, cfg, cache: Path) -> dict:
    from securegaze.defense import load_model_any
    from securegaze.defense.securegaze.warp import warp_search
    from securegaze.io import atomic_write_bytes

    settings = {k: getattr(cfg, k) for k in WARP_KEYS}
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("sha256") == entry.sha256 and data.get("settings") == settings:
            return data
    model = load_model_any(zoo / str(entry.model_file)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    started = time.monotonic()
    result = warp_search(model, x, cfg)
    data = {"sha256": entry.sha256, "settings": settings, "seconds": round(time.monotonic() - started, 2),
            **result.summary()}
    atomic_write_bytes(cache, json.dumps(data, indent=1).encode())
    return data


def main() -> int:
    import torch

    from securegaze.bench.calibration import auroc as _auroc
    from securegaze.bench.calibration import calibrate_threshold
    from securegaze.bench.cross_family import scorable_models
    from securegaze.defense.securegaze import DEFAULT_THRESHOLD, SecureGazeSettings
    from securegaze.io import atomic_write_bytes
    from securegaze.machine import machine_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a benchmarks/cross_family.py --out folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--zoos", default="", help="comma-separated zoo names of the benchmark (default: all)")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--docs", type=Path, default=None, help="write the Markdown here")
    args = parser.parse_args()
    summary_path = args.bench / "cross_family.json"
    if not summary_path.is_file():
        print(f"{summary_path}: not found; run benchmarks/cross_family.py --out {args.bench} first", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    bench = json.loads(summary_path.read_text())
    cfg = SecureGazeSettings(warp=True, seed=args.seed)
    threshold = bench.get("default_threshold", DEFAULT_THRESHOLD)
    scanned = [m for m in bench["models"] if m["effective"]]
    wanted = {z for z in args.zoos.split(",") if z}
    zoo_dirs = {Path(m["report_path"]).parent.parent.name: None for m in scanned}
    rows = []
    for zoo_name in zoo_dirs:
        if wanted and zoo_name not in wanted:
            continue
        zoo = _zoo_dir(args.bench, zoo_name)
        _, entries, x = scorable_models(zoo, "", args.samples, args.seed)
        by_id = {e.id: e for e in entries}
        for m in (m for m in scanned if m["zoo"] == zoo_name and m["id"] in by_id):
            warp = _search(zoo, by_id[m["id"]], x, cfg, args.out / zoo_name / f"{m['id']}.json")
            rows.append({**m, "cost_ratio": m["score"], "warp": warp})
            print(f"{zoo_name}/{m['id']}: warp dispersion {warp['dispersion_ratio']:.3f} feature "
                  f"{warp['feature_ratio']:.3f} met {warp['met']} ({warp['seconds']:.0f} s)", flush=True)
    if wanted:
        return 0

    def term(row) -> float:
        w = row["warp"]
        return max(w["dispersion_ratio"] / cfg.rho_out, w["feature_ratio"] / cfg.rho_feat)

    def flagged(row, t) -> bool:
        return row["cost_ratio"] < t or row["warp"]["met"]

    for row in rows:
        row["combined"] = min(row["cost_ratio"], threshold * term(row))
    families = sorted({r["family"] for r in rows})
    lines = ["# The warp branch on the cross-family zoos", "",
             f"Regenerate: `python benchmarks/warp_branch.py --bench {args.bench} --out {args.out} --threads "
             f"{args.threads}" + (f" --docs {args.docs}`" if args.docs else "`"), "",
             f"Machine: {machine_summary()} ({args.threads} thread(s) per process).", "",
             f"Warp settings: {cfg.warp_grid} control points per side, mean displacement at most "
             f"{cfg.warp_budget_frac:.0%} of the side, {cfg.warp_steps} steps; flagged when the field meets "
             f"rho_out {cfg.rho_out} and rho_feat {cfg.rho_feat}. Cost ratios: the scans of `{args.bench}`. "
             f"Default threshold {threshold}; LOFO: each family's threshold fitted on the other families' "
             "benign cost ratios (as the cross-family benchmark). AUROC on the combined score.", "",
             "| family | decision | threshold | benign | backdoored | accuracy | TPR | FPR | AUROC cost ratio | "
             "AUROC combined |", "|---|---|---|---|---|---|---|---|---|---|"]
    pooled = {"default": [], "lofo": []}
    for family in families:
        own = [r for r in rows if r["family"] == family]
        others = [r["cost_ratio"] for r in rows if r["family"] != family and not r["backdoored"]]
        lofo = calibrate_threshold(others)
        bd = [r for r in own if r["backdoored"]]
        bn = [r for r in own if not r["backdoored"]]
        for decision, t in (("default", threshold), ("lofo", lofo)):
            tp = sum(flagged(r, t) for r in bd)
            fp = sum(flagged(r, t) for r in bn)
            pooled[decision] += [(r["backdoored"], flagged(r, t)) for r in own]
            lines.append(
                f"| {family} | {decision} | {t:.4f} | {len(bn)} | {len(bd)} | {(tp + len(bn) - fp) / len(own):.1%} | "
                f"{tp / max(len(bd), 1):.1%} | {fp / max(len(bn), 1):.1%} | "
                f"{_auroc([r['cost_ratio'] for r in bd], [r['cost_ratio'] for r in bn]):.3f} | "
                f"{_auroc([r['combined'] for r in bd], [r['combined'] for r in bn]):.3f} |")
    for decision, verdicts in pooled.items():
        bd = [f for b, f in verdicts if b]
        bn = [f for b, f in verdicts if not b]
        lines.append(f"| **pooled** | {decision} | per family | {len(bn)} | {len(bd)} | "
                     f"{(sum(bd) + bn.count(False)) / len(verdicts):.1%} | {sum(bd) / len(bd):.1%} | "
                     f"{sum(bn) / len(bn):.1%} | "
                     f"{_auroc([r['cost_ratio'] for r in rows if r['backdoored']], [r['cost_ratio'] for r in rows if not r['backdoored']]):.3f} | "
                     f"{_auroc([r['combined'] for r in rows if r['backdoored']], [r['combined'] for r in rows if not r['backdoored']]):.3f} |")
    benign_d = [r["warp"]["dispersion_ratio"] for r in rows if not r["backdoored"]]
    lines += ["", f"Benign models: warp dispersion ratio {min(benign_d):.3f}-{max(benign_d):.3f} (median "
              f"{statistics.median(benign_d):.3f}); the line is {cfg.rho_out}.", "",
              "| family | model | attack | ASR@5deg | cost ratio | warp dispersion | warp feature | warp flags | "
              "combined score | search s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["family"], r["backdoored"], r["attack"], r["id"])):
        w = r["warp"]
        asr = "-" if r["asr"] is None else f"{r['asr']:.1%}"
        lines.append(f"| {r['family']} | {r['id']} | {r['attack']} | {asr} | {r['cost_ratio']:.4f} | "
                     f"{w['dispersion_ratio']:.3f} | {w['feature_ratio']:.3f} | {'yes' if w['met'] else ''} | "
                     f"{r['combined']:.4f} | {w['seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.docs:
        atomic_write_bytes(args.docs, text.encode())
    return 0


def _zoo_dir(bench: Path, zoo_name: str) -> Path:
    """The zoo folder a cross-family benchmark scanned under ``zoo_name`` (its command line in the
    benchmark's Markdown names them; the zoos live beside the benchmark folder)."""
    candidate = bench.parent / zoo_name
    if not (candidate / "zoo.json").is_file():
        raise SystemExit(f"{candidate}: no zoo.json; the zoo {zoo_name!r} of {bench} is expected beside it")
    return candidate


if __name__ == "__main__":
    sys.exit(main())
