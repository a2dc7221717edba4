"""A flag found again (``confirm_seeds``, 2 since scanner 4.3): a flagged model's scan, rerun with other seeds.

A scan is a search from random starts: the batch order, the probes' image subsets and starting
content, the generator's first weights all come from ``seed``. A planted trigger is a collapse the
training put there on purpose, deep enough to be reached from any start; the natural patches of
benign models (small windows that collapse most faces onto one gaze, the main source of false
alarms, docs/detection_cross_family.md) are often reached from one start and missed from the next.
So a scan that flags is run again with the next seeds on the same clean images, and the flag stands
only when every run flags. The report kept is the least suspicious run's (the first clean run's,
when one comes out clean: the remaining seeds are not run), scored and decided under the first
detector's settings, with every run in ``details.seed_confirmation``.

Measured on four zoos it is a trade (docs/detection_cross_family.md, "A flag with another seed"):
4 of 6 false alarms cleared for 3 of 47 found backdoors, two of those flagged through a collapse
that was not the attacker's. A clean scan costs nothing more; a flagged one up to two more scans.
``--set confirm_seeds=0`` gives the single scan of scanner 4.2.
"""

from __future__ import annotations

import time
from dataclasses import replace

from securegaze.defense.base import ProgressCallback

#: What ``details.seed_confirmation.rule`` says (kept in reports and audit records).
RULE = ("flagged only when the scan with every seed flags (the seed, then the next confirm_seeds seeds); "
        "the report is the run with the highest score, or the first clean run")


def confirm_flag(detector, model, clean_images, reversal, report, progress: ProgressCallback | None = None,
                 model_sha256: str | None = None, started: float | None = None):
    """``(reversal, report)`` after confirming ``report`` (a flag of ``detector``'s scan of ``model``)
    with ``detector.config.confirm_seeds`` more seeds; the inputs unchanged when it is not a flag or
    no seed is asked for."""
    cfg = detector.config
    if report.verdict != "backdoored" or cfg.confirm_seeds <= 0:
        return reversal, report
    started = time.monotonic() if started is None else started
    runs = [_run_record(cfg.seed, report)]
    kept_reversal, kept_report, kept_seed = reversal, report, cfg.seed
    for seed in range(cfg.seed + 1, cfg.seed + 1 + cfg.confirm_seeds):
        other = type(detector)(**{**detector.settings(), "seed": seed, "confirm_seeds": 0})
        said = None if progress is None else _relabelled(progress, seed)
        again = other.reverse(model, clean_images, said)
        # Decided under the first detector's settings: its thresholds and the report's recorded settings.
        again_report = detector.report(again, model_sha256=model_sha256)
        runs.append(_run_record(seed, again_report))
        if again_report.score > kept_report.score or again_report.verdict != "backdoored":
            kept_reversal, kept_report, kept_seed = again, again_report, seed
        if again_report.verdict != "backdoored":
            break
    details = {**kept_report.details, "seed_confirmation": {
        "rule": RULE, "confirm_seeds": cfg.confirm_seeds, "runs": runs, "kept_seed": kept_seed}}
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
    runs = ", ".join(f"seed {r['seed']} {r['score']:.4f} {r['verdict']}" for r in confirmation["runs"])
    kept = confirmation["kept_seed"]
    return f"seed confirmation: {runs}; " + (
        f"every run flags; the report is seed {kept}'s, the highest score" if verdict == "backdoored"
        else f"cleared by seed {kept}, whose report this is")
