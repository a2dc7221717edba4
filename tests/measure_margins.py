"""Sweep the training-outcome tests over seeds, thread counts and floating-point orders, and print
how far each checked figure stayed from its bound.

CI runs on whichever x86 machine a session gets (an AMD EPYC one day, an Intel Xeon the next), and a
tiny training run follows that machine's floating-point order: another CPU sums in another order,
and the trained weights differ in the last bits, then in the first. A test whose figure sits near its
bound on one machine fails on the other. This script reruns every test that checks a training or
optimisation outcome (each check goes through ``conftest.margin``) under:

- seed shifts 0..S-1 (``SECUREGAZE_TEST_SEED_SHIFT``: every seed of the training fixtures moved);
- 1 and 2 intra-op threads (``SECUREGAZE_TEST_THREADS``);
- three floating-point orders on this one machine: the native kernels; oneDNN limited to AVX2
  (``ONEDNN_MAX_CPU_ISA``, what a CPU without AVX-512 runs); and the portable kernels
  (``ATEN_CPU_CAPABILITY=default``, oneDNN at SSE4.1, MKL in its compatible mode, OpenBLAS forced to
  the Haswell kernels through ``OPENBLAS_CORETYPE``). Each changes the convolution and matmul
  summation order, which is what a different CPU changes.

Usage (about 15 minutes on 2 cores)::

    python tests/measure_margins.py --seeds 3 --out margins.jsonl

It prints, per figure, the bound, the smallest relative margin seen and the run that gave it, and the
number of failed checks. tests/README.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The tests whose assertions rest on a training or optimisation outcome.
TESTS = [
    "tests/test_hard_cases.py::test_adaptive_spreads_triggered_feature_angles_and_still_implants",
    "tests/test_hard_cases.py::test_offset_backdoor_tracks_the_true_gaze_plus_offset_without_collapsing",
    "tests/test_attacks.py::test_a_tiny_badnets_backdoor_really_implants",
    "tests/test_training.py::test_training_learns_gaze_and_saves_safe_weights",
    "tests/test_securegaze.py::test_backdoored_model_is_flagged_and_benign_is_not",
    "tests/test_securegaze.py::test_report_records_the_scan",
    "tests/test_securegaze.py::test_mitigation_removes_the_backdoor_and_keeps_clean_accuracy",
    "tests/test_securegaze.py::test_mitigation_with_true_labels_and_its_bad_input",
    "tests/test_securegaze.py::test_mitigation_against_several_triggers_at_several_depths",
    "tests/test_securegaze.py::test_mitigate_command_writes_a_new_bundle_that_no_longer_collapses",
    "tests/test_edge_integrity.py::test_first_start_scans_with_progress_and_records_everywhere",
    "tests/test_edge_integrity.py::test_swapped_model_is_scanned_again_and_blocked_at_start",
]

#: Floating-point orders this machine can run (environment variables of each).
ORDERS = {
    "native": {},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE",
                 "OPENBLAS_CORETYPE": "Haswell"},
}


def run_one(seed_shift: int, threads: int, order: str, log_dir: Path) -> tuple[str, int, Path]:
    name = f"seed{seed_shift}-t{threads}-{order}"
    log = log_dir / f"{name}.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(ORDERS[order])
    env.update(SECUREGAZE_TEST_SEED_SHIFT=str(seed_shift), SECUREGAZE_TEST_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), SECUREGAZE_MARGIN_LOG=str(log))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    (log_dir / f"{name}.out").write_text(result.stdout + result.stderr)
    return name, result.returncode, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seed shifts 0..N-1 (default 3)")
    parser.add_argument("--orders", default=",".join(ORDERS), help=f"comma-separated, of {', '.join(ORDERS)}")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time for 1-thread runs (default 2)")
    parser.add_argument("--out", type=Path, help="write every logged figure here as JSON lines")
    args = parser.parse_args(argv)
    orders = args.orders.split(",")
    unknown = sorted(set(orders) - set(ORDERS))
    if unknown:
        parser.error(f"--orders: unknown order {unknown[0]!r}; expected some of {', '.join(ORDERS)}")
    threads = [int(t) for t in args.threads.split(",")]
    runs = [(s, t, o) for s in range(args.seeds) for t in threads for o in orders]

    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        single = [r for r in runs if r[1] == 1]
        multi = [r for r in runs if r[1] != 1]
        done = []
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            done += list(pool.map(lambda r: run_one(*r, log_dir), single))
        done += [run_one(*r, log_dir) for r in multi]  # multi-threaded runs one at a time
        records = []
        for name, code, log in done:
            lines = log.read_text().splitlines() if log.exists() else []
            records += [{**json.loads(line), "run": name} for line in lines]
            print(f"{name}: pytest exit {code}, {len(lines)} figures", flush=True)
            if code != 0:
                print("    " + (log_dir / f"{name}.out").read_text().strip().splitlines()[-1])
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in records))

    by_figure = defaultdict(list)
    for r in records:
        by_figure[(r["test"].split("::")[-1], r["figure"])].append(r)
    print(f"\n{len(runs)} runs; per figure the smallest relative margin (share of the bound to spare):\n")
    print("| test | figure | bound | value range | min margin | worst run |")
    print("|---|---|---|---|---|---|")
    failed = 0
    for (test, figure), rs in sorted(by_figure.items(), key=lambda kv: min(r["relative_margin"] for r in kv[1])):
        worst = min(rs, key=lambda r: r["relative_margin"])
        values = [r["value"] for r in rs]
        failed += sum(r["relative_margin"] <= 0 for r in rs)
        print(f"| {test} | {figure} | {worst['op']} {worst['bound']:.4g} | {min(values):.4g} .. {max(values):.4g} "
              f"| {worst['relative_margin']:+.2f} | {worst['run']} |")
    print(f"\nfailed checks: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
