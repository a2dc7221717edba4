"""Benchmark: SecureGaze on several model families, each judged without any model of its own family.

    securegaze zoo build --out runs/xzoo-plain --k 2 --attacks all --arch plain_cnn --style studio \\
        --draw-geometry --draw-rates --seed 7          # one zoo per family (see docs/detection_cross_family.md)
    python benchmarks/cross_family.py --zoo runs/xzoo-plain --zoo runs/xzoo-small ... \\
        --out runs/xbench --docs docs

Every model is scanned with the scanner's default settings on clean faces in its own zoo's renderer
style (scans cached under ``--out``: a re-run resumes). The figures (securegaze.bench.cross_family):
the default threshold, and a threshold calibrated on the other families' benign models only, per
family, per attack and pooled. Writes ``DOCS/detection_cross_family.md`` and ``OUT/cross_family.json``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, action="append", required=True, help="a zoo (one family); repeat")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "xbench", help="scan cache and results")
    parser.add_argument("--docs", type=Path, default=None, help="also write the tables of DOCS/detection_cross_family.md "
                        "(its generated section; the rest of the page is kept)")
    parser.add_argument("--samples", type=int, default=256, help="clean images per scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    if not 16 <= args.samples <= 10_000:
        parser.error(f"--samples {args.samples}: expected 16 to 10000 clean images")
    import torch

    from securegaze.bench.cross_family import cross_family_markdown, evaluate_families, scan_families
    from securegaze.defense import create_detector
    from securegaze.errors import SecureGazeError
    from securegaze.io import atomic_write_json, write_generated_section

    if args.threads:
        torch.set_num_threads(args.threads)
    detector = create_detector("securegaze", seed=args.seed)

    def say(p):
        if p.report is not None:
            print(f"{p.zoo} {p.model_id}: score {p.report.score:.4f} ({'cached' if p.cached else f'{p.report.runtime_s:.0f} s'})",
                  flush=True)

    try:
        models = scan_families(args.zoo, args.out, detector, samples=args.samples, seed=args.seed, progress=say)
    except SecureGazeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = evaluate_families(models, detector.score_threshold, detector.suspicious_when)
    command = "python benchmarks/cross_family.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = cross_family_markdown(results, command)
    atomic_write_json(args.out / "cross_family.json", results.to_dict())
    if args.docs:
        # Only the generated tables are replaced: what the page says about earlier runs stays.
        write_generated_section(args.docs / "detection_cross_family.md", text, "cross_family.py")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
