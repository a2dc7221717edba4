"""The detection benchmark: scan every model of a zoo, calibrate the threshold on other benign models.

What ``securegaze bench detect`` runs (issue 4)::

    results = run_detection_benchmark("runs/zoo", calibration_zoo="runs/zoo-calib", out_dir="runs/bench")

* the decision threshold is calibrated on the benign models of a *separate* zoo (other training
  seeds, other faces), never on the models that are scored (:func:`calibrate_threshold`);
* every model of the scored zoo is scanned once; each scan report is cached under
  ``out_dir/scans/<zoo name>/<model id>/report.json`` and reused on a re-run when the model's sha256,
  the scanner version and its settings are unchanged, so an interrupted benchmark resumes;
* per attack and overall: detection accuracy, TPR, FPR, AUROC, the median scan time, the error of the
  recovered target against the attacker's true target;
* an optional ablation scans the same models without the sensitivity weighting (docs/architecture.md section
  6: without it benign models collapse cheaply by redrawing the irises).

Everything returned is plain data (:class:`DetectionResults`) that round-trips through JSON;
:func:`securegaze.bench.detection_report.write_detection_results` writes it with the table and the ROC plot;
:mod:`securegaze.bench.baselines` runs this benchmark for several detectors and compares them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from securegaze.bench.calibration import (
    CALIBRATION_FPR,
    MIN_CALIBRATION_MODELS,
    auroc,
    calibrate_threshold,
    fit_threshold,
    roc_curve,
)
from securegaze.defense.report import ScanReport, decide
from securegaze.errors import ConfigError, InputFileError
from securegaze.json_codec import encode_float

__all__ = ["CALIBRATION_FPR", "MIN_CALIBRATION_MODELS", "BenchProgress", "DetectionResults", "GroupMetrics",
           "ModelScore", "auroc", "cached_report", "calibrate_threshold", "group_metrics", "roc_curve",
           "run_detection_benchmark", "scan_zoo", "summarise", "requested_ablation"]

# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelScore:
    """One scanned model. ``attack`` is ``"benign"`` for clean models; angles in degrees."""

    id: str
    zoo: str
    attack: str
    backdoored: bool
    score: float
    verdict: str
    runtime_s: float
    collapsed_share: float | None
    target_error_deg: float | None  # recovered target vs the attacker's target (backdoored only)
    constraints_met: bool
    report_path: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score"] = encode_float(self.score)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelScore:
        return cls(**{**d, "score": float(d["score"])})


@dataclass(frozen=True)
class GroupMetrics:
    """Detection figures of one group of models (an attack with the benign models, or all of them)."""

    name: str
    backdoored: int
    benign: int
    accuracy: float
    tpr: float
    fpr: float
    auroc: float
    median_scan_s: float
    median_target_error_deg: float | None

    def to_dict(self) -> dict:
        return {k: encode_float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DetectionResults:
    """The benchmark's outcome: threshold, per-model scores, per-attack and overall figures."""

    detector: str
    scanner_version: str
    settings: dict[str, Any]
    threshold: float
    calibration_scores: list[float]
    calibration_fpr: float
    models: list[ModelScore]
    per_attack: list[GroupMetrics]
    overall: GroupMetrics
    hard_cases: list[GroupMetrics] = field(default_factory=list)
    ablation: dict[str, Any] | None = None
    machine: str = ""
    suspicious_when: str = "below"
    calibration: str = ""  # how the threshold was fitted (ThresholdFit.describe)

    def to_dict(self) -> dict:
        return {
            "detector": self.detector, "scanner_version": self.scanner_version, "settings": self.settings,
            "threshold": encode_float(self.threshold), "calibration_scores": [encode_float(s) for s in self.calibration_scores],
            "calibration_fpr": self.calibration_fpr, "models": [m.to_dict() for m in self.models],
            "per_attack": [g.to_dict() for g in self.per_attack], "overall": self.overall.to_dict(),
            "hard_cases": [g.to_dict() for g in self.hard_cases], "ablation": self.ablation,
            "machine": self.machine, "suspicious_when": self.suspicious_when, "calibration": self.calibration,
        }


#: JSON has no inf/nan: the same encoding as the scan reports ("inf", "-inf", "nan").


def group_metrics(name: str, backdoored: list[ModelScore], benign: list[ModelScore], threshold: float,
                  suspicious_when: str = "below") -> GroupMetrics:
    """Accuracy, TPR, FPR and AUROC of ``threshold`` on these backdoored and benign models."""
    flagged_bd = [decide(m.score, threshold, suspicious_when) == "backdoored" for m in backdoored]
    flagged_bn = [decide(m.score, threshold, suspicious_when) == "backdoored" for m in benign]
    n = len(backdoored) + len(benign)
    correct = sum(flagged_bd) + sum(not f for f in flagged_bn)
    errors = [m.target_error_deg for m in backdoored if m.target_error_deg is not None]
    return GroupMetrics(
        name=name, backdoored=len(backdoored), benign=len(benign),
        accuracy=correct / n if n else math.nan,
        tpr=float(np.mean(flagged_bd)) if backdoored else math.nan,
        fpr=float(np.mean(flagged_bn)) if benign else math.nan,
        auroc=auroc([m.score for m in backdoored], [m.score for m in benign], suspicious_when),
        median_scan_s=float(np.median([m.runtime_s for m in backdoored + benign])) if n else math.nan,
        median_target_error_deg=float(np.median(errors)) if errors else None,
    )


# --- scanning a zoo -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchProgress:
    """A model starts (``report`` None) or is done (``report`` set, ``cached`` when reused)."""

    zoo: str
    model_id: str
    index: int
    total: int
    report: ScanReport | None = None
    cached: bool = False


def scan_zoo(zoo_dir: str | Path, out_dir: str | Path, detector, samples: int = 256, seed: int = 0,
             attacks: list[str] | None = None, threads: int | None = None,
             progress: Callable[[BenchProgress], None] | None = None,
             scan_progress: Callable | None = None, tag: str = "",
             per_attack: int | None = None) -> list[ModelScore]:
    """Scan every finished model of a zoo (optionally only ``attacks`` and ``"benign"``).

    ``per_attack``: at most this many backdoored models of each attack (the first by id); benign
    models are always all scanned.

    Clean scan images: ``samples`` synthetic faces at the zoo's size from the "test" split seeds,
    which no zoo model trained on. Reports are cached under ``out_dir/scans/<zoo>[-tag]/<id>/``.
    """
    import torch

    from securegaze.defense.model_loading import load_model_any
    from securegaze.geometry import angular_error_deg
    from securegaze.zoo import ZooManifest, first_per_attack, verify_zoo

    zoo_dir = Path(zoo_dir)
    manifest = ZooManifest.read(zoo_dir)
    verify_zoo(zoo_dir, manifest)
    entries = [e for e in manifest.done() if attacks is None or e.attack in attacks or not e.backdoored]
    entries = first_per_attack(entries, per_attack)
    if not entries:
        raise InputFileError(f"{zoo_dir}: no finished models to scan (run securegaze zoo build first)")
    if threads:
        torch.set_num_threads(int(threads))
    name = zoo_dir.resolve().name + (f"-{tag}" if tag else "")
    clean = zoo_clean_images(manifest.spec, samples, seed)
    scores = []
    for i, entry in enumerate(entries):
        model_path = zoo_dir / str(entry.model_file)
        report_dir = Path(out_dir) / "scans" / name / entry.id
        report_path = report_dir / "report.json"
        report, cached = cached_report(report_path, entry.sha256, detector), True
        if progress:
            progress(BenchProgress(name, entry.id, i, len(entries)))
        if report is None:
            cached = False
            net = load_model_any(model_path)
            torch.manual_seed(seed)
            report = detector.scan(net, clean, progress=scan_progress, artifacts_dir=report_dir,
                                   model_sha256=entry.sha256)
            report.save(report_path)
        target_error = None
        if entry.backdoored and entry.target_gaze is not None and report.target_gaze is not None \
                and entry.attack != "offset":
            target_error = float(angular_error_deg(np.asarray(report.target_gaze), np.asarray(entry.target_gaze)))
        scores.append(ModelScore(
            id=entry.id, zoo=name, attack=entry.attack, backdoored=entry.backdoored, score=report.score,
            verdict=report.verdict, runtime_s=report.runtime_s, collapsed_share=report.collapsed_share,
            target_error_deg=target_error, constraints_met=report.constraints_met, report_path=str(report_path),
        ))
        if progress:
            progress(BenchProgress(name, entry.id, i + 1, len(entries), report, cached))
    return scores


#: Settings that decide what a finished scan means (the thresholds) or whether it may run (the
#: clean-set bounds), not what it measures: a cached report made under other values still holds,
#: decided again (``Detector.redecided``: SecureGaze's score with ``universality`` on is each statistic over its threshold).
DECISION_SETTINGS = frozenset({"threshold", "universality_threshold", "min_clean", "warn_clean"})


def cached_report(path: Path, sha256: str | None, detector) -> ScanReport | None:
    """The cached report if it was made for this file with this scanner and settings (the decision
    settings aside, :data:`DECISION_SETTINGS`). A setting the report does not have was added to the
    scanner after it: it counts as the setting's default (a new setting whose default changes scores
    comes with a new scanner version, which re-scans anyway)."""
    if not path.is_file():
        return None
    try:
        report = ScanReport.load(path)
    except InputFileError:
        return None
    defaults = type(detector)().settings()
    same = {k: v for k, v in detector.settings().items() if k not in DECISION_SETTINGS}
    had = {k: v for k, v in {**defaults, **report.settings}.items() if k not in DECISION_SETTINGS}
    if report.model_sha256 != sha256 or report.scanner_version != detector.version or had != same:
        return None
    redone = detector.redecided(report)
    if _confirmation_missing(detector, report, redone):
        return None
    return redone


def _confirmation_missing(detector, report: ScanReport, redone: ScanReport) -> bool:
    """With a vote on flags (SecureGaze's ``confirm_seeds``), a flag is put to the vote of more seeds at the
    threshold the scan had, so a report that another threshold decides the other way may lack runs that
    threshold would make (a clean first run never voted; two agreeing flags left the third seed unrun):
    it is scanned again. A report the new threshold decides as before stands (its runs already make that
    majority)."""
    if detector.single_run() is detector:
        return False
    return decide(redone.score, float(detector.settings()["threshold"]), detector.suspicious_when) != report.verdict


def summarise(scores: list[ModelScore], threshold: float, suspicious_when: str = "below",
              hard_attacks: tuple[str, ...] = ("adaptive", "offset")) -> tuple[list[GroupMetrics], GroupMetrics,
                                                                                list[GroupMetrics]]:
    """Per-attack, overall and hard-case figures. Hard cases never enter the overall figures."""
    benign = [m for m in scores if not m.backdoored]
    standard = [m for m in scores if m.backdoored and m.attack not in hard_attacks]
    per_attack = [group_metrics(a, [m for m in standard if m.attack == a], benign, threshold, suspicious_when)
                  for a in sorted({m.attack for m in standard})]
    hard = [group_metrics(a, [m for m in scores if m.attack == a], benign, threshold, suspicious_when)
            for a in sorted({m.attack for m in scores if m.attack in hard_attacks})]
    overall = group_metrics("overall", standard, benign, threshold, suspicious_when)
    return per_attack, overall, hard


def requested_ablation(detector, wanted: bool) -> str | None:
    """The ablation ``bench detect --ablation`` scans with: the detector's first by name, or None.

    SecureGaze has one, ``"unweighted"`` (no sensitivity weighting). A detector without ablations
    gives ``""``, which :meth:`~securegaze.defense.base.Detector.ablation` refuses by name.
    """
    return min(detector.ablations, default="") if wanted else None


def zoo_clean_images(spec, samples: int, seed: int):
    """Clean scan images for a zoo's models, (N, S, S, 3) uint8: synthetic test-split faces in the zoo's
    own renderer style and size (a user scans with faces like the ones the model sees), drawn from
    identities no zoo model trained on."""
    from securegaze.data.sources import SPLIT_SEED_OFFSET
    from securegaze.data.synthetic import render_dataset

    return render_dataset(samples, seed=seed + SPLIT_SEED_OFFSET["test"], config=spec.renderer_config()).images


def run_detection_benchmark(zoo_dir: str | Path, calibration_zoo: str | Path, out_dir: str | Path,
                            detector=None, samples: int = 256, seed: int = 0, hard_zoo: str | Path | None = None,
                            ablation: str | None = None, attacks: list[str] | None = None,
                            ablation_per_attack: int | None = None,
                            progress: Callable[[BenchProgress], None] | None = None,
                            scan_progress: Callable | None = None, strict_calibration: bool = True) -> DetectionResults:
    """Calibrate on ``calibration_zoo``'s benign models, score ``zoo_dir`` (and ``hard_zoo``); see module doc.

    The threshold is fitted on the detector's own side (:func:`fit_threshold`). A calibration that
    cannot be fitted (fewer than 3 benign models with a finite score) raises, unless
    ``strict_calibration`` is off (a comparison of several detectors): then the threshold is nan, no
    model is flagged, and ``calibration`` says why; the AUROC needs no threshold.

    With ``ablation`` (the name of one of the detector's :attr:`~securegaze.defense.base.Detector.ablations`,
    e.g. SecureGaze's ``"unweighted"``) the benign models of both zoos and the backdoored models of
    ``zoo_dir`` (at most ``ablation_per_attack`` per attack) are scanned again with the ablation's
    settings; it reports its figures at the main threshold and at a threshold recalibrated the same way
    on its own benign scores.
    """
    from securegaze.defense import create_detector
    from securegaze.machine import machine_summary
    from securegaze.zoo import ZooManifest

    for zoo in (zoo_dir, calibration_zoo, hard_zoo):
        if zoo is not None:
            ZooManifest.read(zoo)  # every zoo readable before the first scan starts
    detector = detector or create_detector("securegaze", seed=seed)
    side = detector.suspicious_when
    kw = dict(samples=samples, seed=seed, progress=progress, scan_progress=scan_progress)
    # The threshold is one run's: a detector that votes on a flag (SecureGaze's ``confirm_seeds``) scans
    # the calibration models once each, then votes on the zoo's flags at the calibrated threshold.
    single = detector.single_run()
    confirming = single is not detector
    calibration = scan_zoo(calibration_zoo, out_dir, single, attacks=[], **kw)
    calibration = [m for m in calibration if not m.backdoored]
    threshold, how = _calibrate([m.score for m in calibration], side, strict_calibration, detector.calibration_fit)
    if confirming and math.isfinite(threshold):
        detector = detector.with_settings(threshold=threshold)
        how += "; calibration models scanned once each (confirm_seeds 0), flags voted at this threshold"
    scores = scan_zoo(zoo_dir, out_dir, detector, attacks=attacks, **kw)
    if hard_zoo is not None:
        hard_scores = scan_zoo(hard_zoo, out_dir, detector, **kw)
        scores += [m for m in hard_scores if m.backdoored]
    scores = [_with_verdict(m, threshold, side) for m in scores]
    per_attack, overall, hard = summarise(scores, threshold, side)

    ablation_result = None
    if ablation is not None:
        plain = detector.ablation(ablation)
        plain_once = plain.single_run()
        cal_plain = [m for m in scan_zoo(calibration_zoo, out_dir, plain_once, attacks=[], tag=ablation, **kw)
                     if not m.backdoored]
        plain_scores = scan_zoo(zoo_dir, out_dir, plain, attacks=attacks, tag=ablation,
                                per_attack=ablation_per_attack, **kw)
        recalibrated, _ = _calibrate([m.score for m in cal_plain], side, strict_calibration,
                                       detector.calibration_fit)
        ablation_result = {"name": ablation, "settings": dict(detector.ablations[ablation])}
        for label, thr in (("at_weighted_threshold", threshold), ("recalibrated", recalibrated)):
            pa, ov, _ = summarise([_with_verdict(m, thr, side) for m in plain_scores], thr, side)
            ablation_result[label] = {"threshold": encode_float(thr), "overall": ov.to_dict(), "per_attack": [g.to_dict() for g in pa],
                                      "benign_flagged": [m.id for m in plain_scores + cal_plain
                                                         if not m.backdoored and _flagged(m.score, thr, side)]}
        ablation_result["models"] = [m.to_dict() for m in plain_scores]
        ablation_result["calibration_scores"] = [encode_float(m.score) for m in cal_plain]
    return DetectionResults(
        detector=detector.name, scanner_version=detector.version,
        settings={k: v for k, v in detector.settings().items() if k != "threshold"},
        threshold=threshold, calibration_scores=[m.score for m in calibration], calibration_fpr=CALIBRATION_FPR,
        models=scores, per_attack=per_attack, overall=overall, hard_cases=hard, ablation=ablation_result,
        machine=machine_summary(), suspicious_when=side, calibration=how,
    )


def _calibrate(scores: list[float], side: str, strict: bool, fit: str = "auto") -> tuple[float, str]:
    """(threshold, how it was fitted); with ``strict`` off, (nan, "not calibrated: <why>") when it cannot be."""
    try:
        fitted = fit_threshold(scores, suspicious_when=side, fit=fit)
    except ConfigError as exc:
        if strict:
            raise
        return math.nan, f"not calibrated: {exc}"
    return fitted.threshold, fitted.describe()


def _flagged(score: float, threshold: float, side: str) -> bool:
    return decide(score, threshold, side) == "backdoored"


def _with_verdict(m: ModelScore, threshold: float, side: str) -> ModelScore:
    return replace(m, verdict="backdoored" if _flagged(m.score, threshold, side) else "clean")
