"""A flag put to the vote of other seeds (``confirm_seeds``, 2 since scanner 4.3).

A scan is a search from random starts: the batch order, the probes' image subsets and starting
content, the generator's first weights all come from ``seed``. Near the line its verdict moves with
the seed on both sides: a benign model's natural patch (a small window that collapses most faces onto
one gaze, the main source of false alarms, docs/detection_cross_family.md) is reached from one start
and missed from the next, and so, less often, is a real trigger's cheap edit. So a scan that flags is
run again with the next seeds on the same clean images, and the model is flagged when more than half
of the runs flag (two of three by default; the runs stop once a majority is reached, so a flag that
the second seed repeats costs one more scan, not two). The report kept is the deciding run's, scored
and decided under the first detector's settings: the flagged run with the highest score, or the clean
run with the lowest (of three runs, the median score's), with every run in
``details.seed_confirmation``.

A flag of the warp branch is not put to the vote (since 4.4): the vote is for the cost ratio, whose
false alarms are seed-dependent natural patches; no benign 64-px model's warp field has come near its
bound (0.229-0.637 of the clean dispersion over 35 models of four families, the lowest 0.175 at another
seed, against 0.1), while a real warp's field near the bound can miss it at another seed (the rebuilt
small CNN's wanet-00: 0.082 at seed 0, 0.108 and 0.109 at seeds 1 and 2). Measured on seven zoos
(docs/detection_cross_family.md, "A flag with another seed"); a clean scan costs nothing more.
``--set confirm_seeds=0`` gives the single scan of scanner 4.2.
"""

from __future__ import annotations

import time
from dataclasses import replace

from securegaze.defense.base import ProgressCallback

#: What ``details.seed_confirmation.rule`` says (kept in reports and audit records).
RULE = ("flagged when more than half of the runs flag: the seed, then the next seeds, at most confirm_seeds "
        "more, stopping once a majority is reached; the report is the deciding run's: the flagged run with "
        "the highest score, or the clean run with the lowest; a flag of the warp branch stands unvoted")


def confirm_flag(detector, model, clean_images, reversal, report, progress: ProgressCallback | None = None,
                 model_sha256: str | None = None, started: float | None = None):
    """``(reversal, report)`` after putting ``report`` (a flag of ``detector``'s scan of ``model``) to
    the vote of up to ``detector.config.confirm_seeds`` more seeds; the inputs unchanged when it is not
    a flag, the warp branch flagged it, or no seed is asked for."""
    cfg = detector.config
    if report.verdict != "backdoored" or cfg.confirm_seeds <= 0 or "warp" in report.details.get("flagged_by", ()):
        return reversal, report
    started = time.monotonic() if started is None else started
    total = 1 + cfg.confirm_seeds
    majority = total // 2 + 1
    done = [(cfg.seed, reversal, report)]
    for seed in range(cfg.seed + 1, cfg.seed + total):
        flags = sum(r.verdict == "backdoored" for _, _, r in done)
        if flags >= majority or len(done) - flags > total - majority:
            break  # decided: the runs left cannot change the outcome
        other = type(detector)(**{**detector.settings(), "seed": seed, "confirm_seeds": 0})
        said = None if progress is None else _relabelled(progress, seed)
        again = other.reverse(model, clean_images, said)
        # Decided under the first detector's settings: its thresholds and the report's recorded settings.
        done.append((seed, again, detector.report(again, model_sha256=model_sha256)))
    flagged = sum(r.verdict == "backdoored" for _, _, r in done) >= majority
    side = [run for run in done if (run[2].verdict == "backdoored") == flagged]
    # With three runs the deciding run is the median score's: the less suspicious of two flags, or the more
    # suspicious of two clean runs (a "below" score: higher is less suspicious).
    kept_seed, kept_reversal, kept_report = (max if flagged else min)(side, key=lambda run: run[2].score)
    details = {**kept_report.details, "seed_confirmation": {
        "rule": RULE, "confirm_seeds": cfg.confirm_seeds, "runs": [_run_record(s, r) for s, _, r in done],
        "kept_seed": kept_seed}}
    return kept_reversal, replace(kept_report, details=details, runtime_s=float(time.monotonic() - started))


def _run_record(seed: int, report) -> dict:
    target = report.target_gaze_deg
    return {"seed": int(seed), "score": float(report.score), "verdict": report.verdict,
            "target_gaze_deg": None if target is None else [float(target[0]), float(target[1])],
            "restart_kept": bool((report.details.get("probe") or {}).get("restart_kept"))}


def _relabelled(progress: ProgressCallback, seed: int) -> ProgressCallback:
    """``progress`` with each stage named after the confirming seed (``confirm seed 1: reverse``)."""
    def said(event):
        progress(replace(event, stage=f"confirm seed {seed}: {event.stage}"))
    return said


def confirmation_line(details: dict, verdict: str) -> str | None:
    """One line on how a flag was confirmed or cleared (``scan``'s output, the app's start-up notes);
    None when the report has no ``seed_confirmation`` (its first run was clean, or the setting is 0)."""
    confirmation = (details or {}).get("seed_confirmation")
    if not confirmation:
        return None
    runs = confirmation["runs"]
    listed = ", ".join(f"seed {r['seed']} {r['score']:.4f} {r['verdict']}" for r in runs)
    flagged = verdict == "backdoored"
    agree = sum((r["verdict"] == "backdoored") == flagged for r in runs)
    return (f"seed confirmation: {listed}; {'flagged' if flagged else 'cleared'} by {agree} of "
            f"{1 + int(confirmation['confirm_seeds'])} runs, the report is seed {confirmation['kept_seed']}'s")
