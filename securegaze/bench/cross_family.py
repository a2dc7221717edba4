"""The cross-family detection benchmark: one zoo per model family, leave-one-family-out decisions.

A user brings one model of a family the scanner never saw. This benchmark asks whether the decision
transfers: every zoo (``securegaze zoo build``: one architecture and one renderer style each) is a
family; every model is scanned once with the scanner's default settings (scans cached as in
:func:`~securegaze.bench.detection.scan_zoo`); then two decisions are scored per family:

* ``default``: the scanner's own threshold, calibrated once outside these zoos
  (``benchmarks/calibrate_threshold.py``): what a user with one ONNX file gets;
* ``leave-one-family-out``: a threshold calibrated (:func:`calibrate_threshold`, log-normal, 1 %) on the
  benign models of every *other* family only, applied to this family.

With ``confirm_seeds`` on (scanner 4.3's default) a flag is put to the vote of more seeds at the
scanner's own threshold, so the ``default`` decision is exactly the user's; a leave-one-family-out
threshold re-decides those scores (a voted flag's score is its deciding run's) without the runs its
own threshold would have made: an approximation wherever it decides a model otherwise.

Per family, per attack within a family, and pooled over families: accuracy, TPR, FPR, AUROC (the
pooled AUROC ranks every model's score together, which the unit-free score allows). A backdoored
model whose own attack does not work (ASR@5deg below ``min_asr`` on its held-out faces) is no
backdoor to find: it is listed apart and enters no figure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from securegaze.bench.calibration import MIN_CALIBRATION_MODELS, auroc, calibrate_threshold
from securegaze.bench.detection import (
    BenchProgress,
    GroupMetrics,
    ModelScore,
    group_metrics,
    scan_zoo,
)
from securegaze.bench.detection_report import format_num, format_pct
from securegaze.defense.report import decide
from securegaze.errors import InputFileError

__all__ = ["CrossFamilyResults", "FamilyResult", "cross_family_markdown", "evaluate_families", "family_of",
           "scan_families", "scorable_models"]

#: Backdoored models below this ASR@5deg are attacks that did not take (listed, not scored).
MIN_ASR = 0.5
#: Models whose clean error on the zoo's test faces is above this did not learn gaze (listed, not
#: scored): a model that answers every face with about the mean gaze is 20-27 deg off on the
#: renderer's faces, the trained ones of these zoos 4-14 deg.
MAX_CLEAN_ERROR_DEG = 15.0
DECISIONS = ("default", "lofo")


def family_of(spec) -> str:
    """A zoo's family name: architecture, its own arguments, the renderer style and the input size."""
    args = ",".join(f"{k}={v}" for k, v in sorted(spec.arch_kwargs.items()))
    return f"{spec.architecture}{f'[{args}]' if args else ''}/{spec.style}/{spec.size}px"


def scorable_models(zoo: str | Path, models: str = "", samples: int = 256, seed: int = 0):
    """What a research script over one zoo works on: (manifest, entries, clean images as an (N, 3, S, S)
    tensor). The entries are the zoo's finished models, those named in the comma-separated ``models``
    (empty: all), less backdoored ones whose attack did not take (ASR@5deg below ``MIN_ASR``); the
    clean images are this benchmark's draw of faces in the zoo's own style."""
    from securegaze.bench.detection import zoo_clean_images
    from securegaze.data.base import to_tensor_batch
    from securegaze.zoo import ZooManifest

    manifest = ZooManifest.read(zoo)
    wanted = {m.strip() for m in models.split(",") if m.strip()}
    entries = [e for e in manifest.done() if (not wanted or e.id in wanted)
               and (not e.backdoored or (e.metrics or {}).get("asr", 1.0) >= MIN_ASR)]
    return manifest, entries, to_tensor_batch(zoo_clean_images(manifest.spec, samples, seed))


@dataclass(frozen=True)
class ScoredModel:
    """A scanned zoo model with what the benchmark needs besides its score: family, ASR, rate."""

    family: str
    score: ModelScore
    asr: float | None
    poison_rate: float | None
    clean_error_deg: float | None = None

    @property
    def trained(self) -> bool:
        return self.clean_error_deg is None or self.clean_error_deg <= MAX_CLEAN_ERROR_DEG

    @property
    def effective(self) -> bool:
        return self.trained and (not self.score.backdoored or (self.asr is not None and self.asr >= MIN_ASR))


def scan_families(zoos: list[str | Path], out_dir: str | Path, detector, samples: int = 256, seed: int = 0,
                  progress: Callable[[BenchProgress], None] | None = None) -> list[ScoredModel]:
    """Scan every finished model of every zoo (cached under ``out_dir``); one family per zoo spec.

    Reports are cached under ``out_dir/scans/<zoo folder name>/``; two zoos whose folders share a name
    (``runs/a/plain``, ``runs/b/plain``) are told apart by their parent folder's name
    (``plain-a``, ``plain-b``), so neither overwrites the other's reports.
    """
    from securegaze.zoo import ZooManifest

    manifests = {Path(z): ZooManifest.read(z) for z in zoos}  # every zoo readable before the first scan
    if not manifests:
        raise InputFileError("cross-family benchmark: no zoo given (--zoo, one per family)")
    tags = zoo_cache_tags(list(manifests))
    scored = []
    for zoo, manifest in manifests.items():
        family = family_of(manifest.spec)
        entries = {e.id: e for e in manifest.done()}
        for m in scan_zoo(zoo, out_dir, detector, samples=samples, seed=seed, progress=progress, tag=tags[zoo]):
            entry = entries[m.id]
            asr = (entry.metrics or {}).get("asr") if entry.backdoored else None
            error = (entry.metrics or {}).get("clean_error_deg")
            scored.append(ScoredModel(family, m, None if asr is None else float(asr), entry.poison_rate,
                                      None if error is None else float(error)))
    return scored


def zoo_cache_tags(zoos: list[Path]) -> dict[Path, str]:
    """The tag of each zoo's scan folder: empty when its folder name is unique, else its parent's name
    (with the zoo's position added when that is not unique either)."""
    names = [zoo.resolve().name for zoo in zoos]
    tags = {zoo: (zoo.resolve().parent.name if names.count(name) > 1 else "") for zoo, name in zip(zoos, names, strict=True)}
    labels = [f"{name}-{tags[zoo]}" for zoo, name in zip(zoos, names, strict=True)]
    for i, zoo in enumerate(zoos):
        if tags[zoo] and labels.count(labels[i]) > 1:
            tags[zoo] = f"{tags[zoo]}{i}"
    return tags


@dataclass(frozen=True)
class FamilyResult:
    """One family under one decision: its threshold, its figures overall and per attack."""

    family: str
    decision: str
    threshold: float
    calibrated_on: int  # benign models the threshold came from (0: the scanner's default)
    overall: GroupMetrics
    per_attack: list[GroupMetrics]

    def to_dict(self) -> dict:
        return {"family": self.family, "decision": self.decision, "threshold": self.threshold,
                "calibrated_on": self.calibrated_on, "overall": self.overall.to_dict(),
                "per_attack": [g.to_dict() for g in self.per_attack]}


@dataclass(frozen=True)
class CrossFamilyResults:
    """Every family under both decisions, the pooled figures, the models and what was left out."""

    default_threshold: float
    families: list[FamilyResult]
    pooled: dict[str, GroupMetrics]
    pooled_auroc: float
    models: list[ScoredModel]
    notes: list[str] = field(default_factory=list)
    machine: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"default_threshold": self.default_threshold, "families": [f.to_dict() for f in self.families],
                "pooled": {k: g.to_dict() for k, g in self.pooled.items()}, "pooled_auroc": self.pooled_auroc,
                "models": [{"family": m.family, "asr": m.asr, "poison_rate": m.poison_rate, "effective": m.effective,
                            "clean_error_deg": m.clean_error_deg,
                            **m.score.to_dict()} for m in self.models],
                "notes": self.notes, "machine": self.machine}


def _figures(family: str, decision: str, threshold: float, n_cal: int, models: list[ScoredModel],
             side: str) -> tuple[FamilyResult, list[ModelScore]]:
    verdict = [replace(m.score, verdict=decide(m.score.score, threshold, side)) for m in models]
    benign = [s for s in verdict if not s.backdoored]
    backdoored = [s for s in verdict if s.backdoored]
    per_attack = [group_metrics(a, [s for s in backdoored if s.attack == a], benign, threshold, side)
                  for a in sorted({s.attack for s in backdoored})]
    overall = group_metrics(family, backdoored, benign, threshold, side)
    return FamilyResult(family, decision, threshold, n_cal, overall, per_attack), verdict


def evaluate_families(models: list[ScoredModel], default_threshold: float, side: str = "below") -> CrossFamilyResults:
    """Score every family with the default threshold and with a threshold from the other families."""
    from securegaze.machine import machine_summary

    notes = []
    kept = [m for m in models if m.effective]
    for m in models:
        if not m.trained:
            notes.append(f"{m.family} {m.score.id}: clean error {m.clean_error_deg:.1f} deg, above "
                         f"{MAX_CLEAN_ERROR_DEG:g}: the model did not learn gaze; left out")
        elif not m.effective:
            asr = "unknown" if m.asr is None else f"{100 * m.asr:.1f} %"
            notes.append(f"{m.family} {m.score.id}: ASR@5deg {asr}, below {100 * MIN_ASR:.0f} %: "
                         "the attack did not take; left out")
    families = sorted({m.family for m in kept})
    results, pooled_verdicts = [], {d: [] for d in DECISIONS}
    for family in families:
        own = [m for m in kept if m.family == family]
        others = [m.score.score for m in kept if m.family != family and not m.score.backdoored]
        finite = [s for s in others if math.isfinite(s) and s > 0]
        if len(finite) >= MIN_CALIBRATION_MODELS:
            lofo, n_cal = calibrate_threshold(others), len(others)
        else:
            lofo, n_cal = default_threshold, 0
            notes.append(f"{family}: the other families have {len(finite)} benign models with a finite score "
                         f"(fewer than {MIN_CALIBRATION_MODELS}); its leave-one-family-out decision uses the "
                         "default threshold")
        for decision, threshold, n in (("default", default_threshold, 0), ("lofo", lofo, n_cal)):
            result, verdicts = _figures(family, decision, threshold, n, own, side)
            results.append(result)
            pooled_verdicts[decision] += verdicts
    pooled = {}
    for decision, verdicts in pooled_verdicts.items():
        benign = [s for s in verdicts if not s.backdoored]
        backdoored = [s for s in verdicts if s.backdoored]
        # The verdicts already carry each family's own threshold; group_metrics re-decides by a
        # threshold, so count them directly and take the threshold-free AUROC over all scores.
        flagged_bd = [s.verdict == "backdoored" for s in backdoored]
        flagged_bn = [s.verdict == "backdoored" for s in benign]
        n = len(verdicts)
        pooled[decision] = GroupMetrics(
            name=f"pooled ({decision})", backdoored=len(backdoored), benign=len(benign),
            accuracy=(sum(flagged_bd) + flagged_bn.count(False)) / n if n else math.nan,
            tpr=sum(flagged_bd) / len(backdoored) if backdoored else math.nan,
            fpr=sum(flagged_bn) / len(benign) if benign else math.nan,
            auroc=auroc([s.score for s in backdoored], [s.score for s in benign], side),
            median_scan_s=_median([s.runtime_s for s in verdicts]),
            median_target_error_deg=_median([s.target_error_deg for s in backdoored if s.target_error_deg is not None]),
        )
    all_bd = [m.score.score for m in kept if m.score.backdoored]
    all_bn = [m.score.score for m in kept if not m.score.backdoored]
    return CrossFamilyResults(default_threshold, results, pooled, auroc(all_bd, all_bn, side), models, notes,
                              machine_summary())


def _median(values) -> float | None:
    values = list(values)
    return float(statistics.median(values)) if values else None


def _pct(x) -> str:
    return format_pct(x, 1)


def cross_family_markdown(results: CrossFamilyResults, command: str) -> str:
    """The benchmark as Markdown: per family, per attack in each family, pooled, and every model."""
    lines = ["# Cross-family detection (leave one family out)", "",
             f"Regenerate: `{command}`", "", f"Machine: {results.machine}", "",
             f"Default threshold (the scanner's, calibrated outside these zoos): {results.default_threshold:g}. "
             f"Leave-one-family-out (LOFO): each family's threshold from the benign models of the other families "
             f"only (log-normal fit, 1 % FPR). Backdoored models whose attack did not take (ASR@5deg < {MIN_ASR}) "
             f"and models that did not learn gaze (clean error > {MAX_CLEAN_ERROR_DEG:g} deg) are listed under Notes "
             "and enter no figure.", "",
             "## Per family", "",
             "| family | decision | threshold | benign | backdoored | accuracy | TPR | FPR | AUROC | median scan s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in results.families:
        o = f.overall
        lines.append(f"| {f.family} | {f.decision} | {f.threshold:.4f} | {o.benign} | {o.backdoored} | "
                     f"{_pct(o.accuracy)} | {_pct(o.tpr)} | {_pct(o.fpr)} | {format_num(o.auroc)} | {format_num(o.median_scan_s, 1)} |")
    for decision, g in results.pooled.items():
        lines.append(f"| **pooled** | {decision} | per family | {g.benign} | {g.backdoored} | {_pct(g.accuracy)} | "
                     f"{_pct(g.tpr)} | {_pct(g.fpr)} | {format_num(g.auroc)} | {format_num(g.median_scan_s, 1)} |")
    lines += ["", f"Pooled AUROC over every score: {format_num(results.pooled_auroc)}.", "",
              "## Per attack (TPR; AUROC against the family's benign models)", "",
              "| family | attack | models | TPR default | TPR LOFO | AUROC | median target error deg |",
              "|---|---|---|---|---|---|---|"]
    by_key = {(f.family, f.decision): f for f in results.families}
    for family in sorted({f.family for f in results.families}):
        default, lofo = by_key[(family, "default")], by_key[(family, "lofo")]
        for a, b in zip(default.per_attack, lofo.per_attack, strict=True):
            lines.append(f"| {family} | {a.name} | {a.backdoored} | {_pct(a.tpr)} | {_pct(b.tpr)} | {format_num(a.auroc)} | "
                         f"{format_num(a.median_target_error_deg, 1)} |")
    lines += ["", "## Models", "", "| family | zoo | model | attack | poison rate | ASR@5deg | score | scan s |",
              "|---|---|---|---|---|---|---|---|"]
    for m in results.models:
        s = m.score
        rate = "-" if m.poison_rate is None else f"{100 * m.poison_rate:.1f}%"
        lines.append(f"| {m.family} | {s.zoo} | {s.id} | {s.attack} | {rate} | {_pct(m.asr)} | {format_num(s.score, 4)} | "
                     f"{format_num(s.runtime_s, 0)} |")
    if results.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results.notes]
    return "\n".join(lines) + "\n"
