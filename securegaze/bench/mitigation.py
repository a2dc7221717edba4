"""Mitigate and measure: scan, fine-tune against the reversed trigger, re-scan, compare before and after.

:func:`mitigate_and_measure` is what ``securegaze mitigate`` runs on one model;
:func:`run_mitigation_benchmark` runs it on every backdoored model of a zoo (``securegaze bench
mitigate``), reusing the detection benchmark's scans and their reversed-trigger generators.

Two kinds of attack figures are reported (:mod:`securegaze.attacks.metrics`: clean error, AE, DAE,
ASR@5 deg, degrees):

* against the **reversed trigger** and the recovered target: what a defender without the real
  trigger can measure;
* against the **real trigger**, when the attack is known (a zoo model or a ``securegaze attack``
  run): the figures the issue's targets are about (ASR@5 deg <= 5% after, clean error up by <= 0.5 deg).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from securegaze.attacks.metrics import AttackMetrics, attack_metrics, evaluate_attack
from securegaze.defense.mitigation import (
    DEFAULT_EDIT_DROPOUT,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_LR_SCHEDULE,
    DEFAULT_ROUNDS,
    DEFAULT_STRENGTHS,
    LATER_ROUNDS_LR_FACTOR,
    MITIGATION_VERSION,
    unlearn_reversed_triggers,
)
from securegaze.defense.report import ScanReport, decide
from securegaze.errors import InputFileError
from securegaze.json_codec import to_json

#: The issue's mitigation targets (issue 4): ASR@5 deg after mitigation, and the clean-error budget.
TARGET_ASR_AFTER = 0.05
TARGET_CLEAN_ERROR_INCREASE_DEG = 0.5


@dataclass(frozen=True)
class MitigationReport:
    """One model before and after mitigation by one method. Plain data; angles in degrees, shares in [0, 1].

    ``method``: the mitigation method (:mod:`securegaze.defense.mitigations`; reports written before
    there were several are SecureGaze's); ``reversed_before`` / ``reversed_after``: :class:`AttackMetrics`
    dicts against the reversed trigger (the scan's generator applied to the test images) and the
    recovered target; ``attack_before`` / ``attack_after``: the same against the real trigger, None when
    the attack is unknown; ``scan_before`` / ``scan_after``: the two :class:`ScanReport` dicts (the second
    scans the fine-tuned model from scratch); ``finetune``: losses and steps of the last fine-tuning
    round; ``rounds``: per round the number of triggers unlearnt, the re-scan's score and verdict and the
    losses; ``settings``: the method's own settings (a cached report is reused only when they match);
    ``details``: what the method reported (:meth:`MitigationMethod.apply`), None for SecureGaze's reports
    (its details are the fields above); ``model_sha256``: the mitigated model file.

    A method that does not scan (every baseline) has no scan and no reversed trigger: ``scan_before``,
    ``scan_after``, ``reversed_before`` and ``reversed_after`` are None, and its figures are the ones
    against the real trigger (and, without a known attack, the clean error in ``details["test_clean"]``).
    """

    model: str
    out: str | None
    scan_before: dict[str, Any] | None
    scan_after: dict[str, Any] | None
    reversed_before: dict[str, Any] | None
    reversed_after: dict[str, Any] | None
    attack_before: dict[str, Any] | None
    attack_after: dict[str, Any] | None
    finetune: dict[str, Any] | None
    clean_images: int
    test_images: int
    runtime_s: float
    attack: str | None = None
    rounds: list[dict[str, Any]] | None = None
    settings: dict[str, Any] | None = None
    method: str = "securegaze"
    details: dict[str, Any] | None = None
    model_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:

        return to_json(asdict(self))

    @property
    def clean_error_increase_deg(self) -> float:
        """Clean error after minus before (degrees) on the test images: against the real attack's test
        set when known, else the reversed trigger's, else the method's own test measurement."""
        source = next((pair for pair in ((self.attack_before, self.attack_after),
                                         (self.reversed_before, self.reversed_after)) if pair[0]), None)
        if source is None:
            test = (self.details or {}).get("test_clean", {})
            return float(test.get("after_deg", math.nan)) - float(test.get("before_deg", math.nan))
        return float(source[1]["clean_error_deg"]) - float(source[0]["clean_error_deg"])


def reversed_trigger_metrics(model, generator, target_gaze, test_images: np.ndarray, test_gaze: np.ndarray,
                             batch_size: int = 128) -> AttackMetrics:
    """AE, DAE, ASR of ``model`` against the reversed trigger ``generator`` and the recovered ``target_gaze``.

    ``test_images``: (N, S, S, 3) uint8 RGB with true gaze (N, 2) radians; ``target_gaze``: radians.
    """
    from securegaze.data.base import to_tensor_batch

    model.eval()
    generator.eval()
    clean, triggered = [], []
    with torch.no_grad():
        for i in range(0, len(test_images), batch_size):
            x = to_tensor_batch(test_images[i:i + batch_size])
            clean.append(model(x).float())
            triggered.append(model(generator(x)).float())
    clean_pred, trig_pred = torch.cat(clean).numpy(), torch.cat(triggered).numpy()
    targets = np.broadcast_to(np.asarray(target_gaze, np.float64), test_gaze.shape)
    return attack_metrics(clean_pred, trig_pred, test_gaze, targets)


def load_earlier_scan(scan_dir: str | Path, model_sha256: str, model_name: str) -> tuple[ScanReport, Any, Any]:
    """An earlier ``securegaze scan --out`` directory as ``scan_before`` of :func:`mitigate_and_measure`.

    Returns ``(report, trigger generator, kept warp field or None, unkept warp field or None)``
    (:func:`scan_warp_fields`). The scan is reused only when it scanned this very model:
    a report whose model sha256 differs from ``model_sha256`` is refused (:class:`InputFileError`
    naming both; ``model_name`` is how the model is shown).
    """
    from securegaze.defense.securegaze import load_generator

    scan_dir = Path(scan_dir)
    report = ScanReport.load(scan_dir / "report.json")
    if report.model_sha256 != model_sha256:
        raise InputFileError(f"{scan_dir / 'report.json'}: scans a model with sha256 {str(report.model_sha256)[:12]}..., "
                             f"not {model_name} ({model_sha256[:12]}...)")
    return (report, load_generator(scan_dir / "trigger_generator.safetensors"), *scan_warp_fields(scan_dir, report))


def scan_warp_field(scan_dir: str | Path, report: ScanReport):
    """The warp field a scan in ``scan_dir`` kept (its warp branch flagged: scanner 4.2), else None."""
    return scan_warp_fields(scan_dir, report)[0]


def scan_warp_fields(scan_dir: str | Path, report: ScanReport) -> tuple[Any, Any]:
    """``(kept, unkept)``: the warp field a scan in ``scan_dir`` kept (its warp branch flagged), and the one
    its branch searched and did not keep (written since mitigation version 9, for the unlearning alone);
    each None where there is none (the branch off or below 50 px, or a scan written before)."""
    from securegaze.defense.securegaze.detector import UNMET_WARP_FILE, WARP_FILE
    from securegaze.defense.securegaze.warp import load_warp_field

    warp = (report.details or {}).get("warp") or {}
    if warp.get("flagged"):
        return load_warp_field(Path(scan_dir) / WARP_FILE), None
    unmet = Path(scan_dir) / UNMET_WARP_FILE
    return None, (load_warp_field(unmet) if warp.get("field_path") and unmet.is_file() else None)


def mitigate_and_measure(model, clean_images, detector, test_set, attack=None, test_faces=None,
                         labels=None, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, seed: int = 0,
                         scan_before: tuple[ScanReport, Any] | None = None,
                         scan_dirs: tuple[Path | None, Path | None] = (None, None), model_name: str = "",
                         out: str | None = None, model_sha256: str | None = None,
                         progress: Callable | None = None, rounds: int = DEFAULT_ROUNDS,
                         uniform_reversal: bool = True, strengths: tuple[float, ...] = DEFAULT_STRENGTHS,
                         towards_target: bool = True):
    """Scan (unless ``scan_before`` = (report, generator[, warp field]) is given), fine-tune, re-scan, measure.

    ``clean_images``: the defender's clean images for the scan and the fine-tuning ((N, S, S, 3)
    uint8); ``test_set``: a *different* labelled set for the figures; ``attack`` (+ ``test_faces``
    for the physical triggers): the real attack when known; ``labels``: true gaze of the clean
    images (default: the model's own predictions). ``scan_dirs``: where the two scans write their
    artifacts. The unlearning is :func:`~securegaze.defense.mitigation.unlearn_reversed_triggers`
    (``rounds``, ``uniform_reversal``, ``strengths`` are its settings). Returns ``(fine-tuned model,
    MitigationReport)``.
    """
    started = time.monotonic()
    outcome = unlearn_reversed_triggers(
        model, clean_images, detector, labels=labels, epochs=epochs, lr=lr, seed=seed, scan_before=scan_before,
        scan_dir=scan_dirs[0], model_name=model_name, model_sha256=model_sha256, progress=progress, rounds=rounds,
        uniform_reversal=uniform_reversal, strengths=strengths, towards_target=towards_target)
    tuned, report, generator, after = outcome.tuned, outcome.scan_before, outcome.generator, outcome.scan_after
    if scan_dirs[1] is not None:
        after = detector.write_artifacts(outcome.reversal_after, after, scan_dirs[1])

    images, gaze = test_set.images, test_set.gaze
    rev_before = reversed_trigger_metrics(model, generator, report.target_gaze, images, gaze)
    rev_after = reversed_trigger_metrics(tuned, generator, report.target_gaze, images, gaze)
    real_before = real_after = None
    if attack is not None:
        real_before = evaluate_attack(model, attack, test_set, test_faces).to_dict()
        real_after = evaluate_attack(tuned, attack, test_set, test_faces).to_dict()
    result = MitigationReport(
        model=model_name, out=out, scan_before=report.to_dict(), scan_after=after.to_dict(),
        reversed_before=rev_before.to_dict(), reversed_after=rev_after.to_dict(),
        attack_before=real_before, attack_after=real_after, finetune=asdict(outcome.finetune),
        clean_images=int(len(clean_images)), test_images=int(len(images)),
        runtime_s=time.monotonic() - started, attack=getattr(attack, "name", None), rounds=outcome.rounds,
        settings={"version": MITIGATION_VERSION, "rounds": rounds, "uniform_reversal": bool(uniform_reversal),
                  "towards_target": bool(towards_target and uniform_reversal),
                  "strengths": [float(a) for a in strengths], "epochs": epochs, "lr": lr, "seed": seed,
                  "edit_dropout": DEFAULT_EDIT_DROPOUT, "later_lr_factor": LATER_ROUNDS_LR_FACTOR,
                  "lr_schedule": DEFAULT_LR_SCHEDULE},
        model_sha256=model_sha256,
    )
    return tuned, result


# --- the benchmark over a zoo ------------------------------------------------------------------------


@dataclass(frozen=True)
class MitigationSummary:
    """Per attack: median ASR and clean error before / after, and how many models met both targets."""

    attack: str
    models: int
    asr_before: float
    asr_after: float
    clean_error_before_deg: float
    clean_error_after_deg: float
    max_clean_error_increase_deg: float
    met_targets: int
    flagged_after: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarise_mitigation(reports: list[MitigationReport]) -> list[MitigationSummary]:
    """One :class:`MitigationSummary` per attack, plus ``"overall"`` (medians over the models)."""
    out = []
    groups = sorted({r.attack for r in reports}) + ["overall"]
    for name in groups:
        rs = [r for r in reports if name == "overall" or r.attack == name]
        if not rs:
            continue
        asr_b = [r.attack_before["asr"] for r in rs]
        asr_a = [r.attack_after["asr"] for r in rs]
        ce_b = [r.attack_before["clean_error_deg"] for r in rs]
        ce_a = [r.attack_after["clean_error_deg"] for r in rs]
        increases = [a - b for a, b in zip(ce_a, ce_b, strict=True)]
        met = sum(a <= TARGET_ASR_AFTER and inc <= TARGET_CLEAN_ERROR_INCREASE_DEG
                  for a, inc in zip(asr_a, increases, strict=True))
        out.append(MitigationSummary(
            attack=name, models=len(rs), asr_before=float(np.median(asr_b)), asr_after=float(np.median(asr_a)),
            clean_error_before_deg=float(np.median(ce_b)), clean_error_after_deg=float(np.median(ce_a)),
            max_clean_error_increase_deg=float(max(increases)), met_targets=int(met),
            flagged_after=sum(bool(r.scan_after) and r.scan_after["verdict"] == "backdoored" for r in rs),
        ))
    return out


def mitigation_entries(manifest, per_attack: int | None = None, attacks=None) -> list:
    """The zoo models a mitigation benchmark treats: the finished backdoored ones (of ``attacks`` only,
    when given), at most ``per_attack`` per attack. The offset attack has no single target to collapse
    onto, hence no reversed trigger to unlearn, and is left out (of every method's run, so that all are
    compared on the same models)."""
    from securegaze.zoo import first_per_attack

    chosen = [e for e in manifest.done() if e.backdoored and e.attack != "offset"
              and (attacks is None or e.attack in attacks)]
    return first_per_attack(chosen, per_attack)


def run_mitigation_benchmark(zoo_dir: str | Path, bench_dir: str | Path, detector, samples: int = 2048,
                             seed: int = 0, per_attack: int | None = None, threshold: float | None = None,
                             test_samples: int | None = None, progress: Callable[[str, int, int], None] | None = None,
                             attacks=None) -> list[MitigationReport]:
    """Mitigate the backdoored models of ``zoo_dir`` with the reversed triggers of the detection benchmark.

    The detection benchmark (:func:`securegaze.bench.detection.run_detection_benchmark`) must have
    scanned the zoo into ``bench_dir`` with the same detector; its reports and generators are reused
    (they are the "before" scan). ``per_attack`` limits the models per attack; ``threshold``: the
    calibrated threshold used for the re-scan's verdict; ``attacks``: only the models of these attacks.
    ``samples``: the defender's clean images
    for the fine-tuning (and the re-scan); the first 256 are the detection scans' own images. Each
    model's report is cached in ``bench_dir/mitigation/<id>.json`` (a re-run with the same number
    of clean images skips it).
    """
    from securegaze.attacks.runner import load_attack_run
    from securegaze.bench.detection import zoo_clean_images
    from securegaze.defense.model_loading import load_model_any
    from securegaze.defense.securegaze import load_generator
    from securegaze.io import atomic_write_json, read_json
    from securegaze.zoo import ZooManifest, verify_zoo

    zoo_dir, bench_dir = Path(zoo_dir), Path(bench_dir)
    manifest = ZooManifest.read(zoo_dir)
    verify_zoo(zoo_dir, manifest)
    if threshold is not None:
        detector = detector.with_settings(threshold=threshold)
    entries = mitigation_entries(manifest, per_attack, attacks)
    clean = zoo_clean_images(manifest.spec, samples, seed)
    scans = bench_dir / "scans" / zoo_dir.resolve().name
    reports = []
    for i, entry in enumerate(entries):
        if progress:
            progress(entry.id, i, len(entries))
        cache = bench_dir / "mitigation" / f"{entry.id}.json"
        if cache.is_file():
            data = read_json(cache, "mitigation report")
            if data.get("scan_before", {}).get("model_sha256") == entry.sha256 and data.get("clean_images") == len(clean) \
                    and (data.get("settings") or {}).get("version") == MITIGATION_VERSION:
                reports.append(_redecided(MitigationReport(**data), detector))
                continue
        report_path = scans / entry.id / "report.json"
        if not report_path.is_file():
            raise InputFileError(f"{report_path}: no scan of {entry.id}; run securegaze bench detect first")
        before = ScanReport.load(report_path)
        generator = load_generator(scans / entry.id / "trigger_generator.safetensors")
        attack, test_set, faces = load_attack_run(zoo_dir / entry.id, test_samples)
        model = load_model_any(zoo_dir / str(entry.model_file))
        _, result = mitigate_and_measure(
            model, clean, detector, test_set, attack=attack, test_faces=faces, seed=seed,
            scan_before=(before, generator, *scan_warp_fields(scans / entry.id, before)),
            scan_dirs=(None, bench_dir / "mitigation" / entry.id),
            model_name=entry.id, model_sha256=entry.sha256,
        )
        atomic_write_json(cache, result.to_dict())
        reports.append(result)
        if progress:
            progress(entry.id, i + 1, len(entries))
    return reports


def detection_threshold(bench_dir: str | Path) -> float | None:
    """The threshold the detection benchmark calibrated into ``bench_dir/detection.json``, or None
    when it has not been run there (the detector's own threshold then decides the re-scans)."""
    from securegaze.io import read_json

    detection = Path(bench_dir) / "detection.json"
    return read_json(detection, "detection results")["threshold"] if detection.is_file() else None


def write_mitigation_results(reports: list[MitigationReport], bench_dir: str | Path, command: str,
                             docs_dir: str | Path | None = None) -> list[MitigationSummary]:
    """Write ``mitigation.json`` (summary, models, machine) and ``mitigation.md`` (regenerated by
    ``command``) to ``bench_dir``, and the table to ``docs_dir`` too when given; returns the summary."""
    from securegaze.io import atomic_write_bytes, atomic_write_json
    from securegaze.machine import machine_summary

    bench_dir = Path(bench_dir)
    summary = summarise_mitigation(reports)
    atomic_write_json(bench_dir / "mitigation.json", {"summary": [s.to_dict() for s in summary],
                                                      "models": [r.to_dict() for r in reports],
                                                      "machine": machine_summary()})
    table = mitigation_markdown(reports, command, machine_summary())
    atomic_write_bytes(bench_dir / "mitigation.md", table.encode())
    if docs_dir is not None:
        atomic_write_bytes(Path(docs_dir) / "mitigation.md", table.encode())
    return summary


def _redecided(report: MitigationReport, detector) -> MitigationReport:
    """A cached report with its re-scan's verdict decided again at ``detector``'s threshold.

    The score does not depend on the threshold, so a cached re-scan stays valid when the benchmark
    calibrates a new threshold; only the verdict is recomputed.
    """
    after = dict(report.scan_after)
    # SecureGaze's score with universality on is each statistic over its own threshold (its report's threshold is 1).
    threshold = getattr(detector, "score_threshold", detector.settings()["threshold"])
    after["verdict"] = decide(float(after["score"]), threshold, detector.suspicious_when)
    after["threshold"] = threshold
    return replace(report, scan_after=after)


def mitigation_markdown(reports: list[MitigationReport], command: str, machine: str) -> str:
    """The mitigation figures as Markdown (docs/mitigation.md)."""
    def pct(v):
        return f"{100 * v:.1f}%"

    settings = next((r.settings for r in reports if r.settings), {})

    lines = ["# SecureGaze mitigation benchmark", "", f"Regenerate: `{command}`", "", f"Machine: {machine}.", "",
             f"Targets: ASR@5deg <= {pct(TARGET_ASR_AFTER)} after mitigation, clean error up by <= "
             f"{TARGET_CLEAN_ERROR_INCREASE_DEG} deg. Figures against the real trigger on each model's own "
             "held-out test faces; medians per attack.", "",
             f"Procedure (mitigation version {settings.get('version', 1)}): fine-tune on the clean images and "
             "their reversed-triggered copies, labelled with the model's own clean predictions; the triggers are "
             "the scan's reversal" + (" and a second reversal with a uniform pixel price (which can reach triggers "
                                      "on the eyes that the scan prices out)" if settings.get("uniform_reversal") else "")
             + ", each applied at depths " + "/".join(f"{a:g}" for a in settings.get("strengths", [1.0]))
             + "; then re-scan, and while the re-scan still flags the model"
             + (", or a reversal aimed at the scan's target on the tuned model still scores below the threshold (that "
                "edit then joins the triggers too)" if settings.get("version", 1) >= 4 and settings.get("towards_target")
                else "")
             + f", add the collapse it found and fine-tune again (at most {settings.get('rounds', 1)} rounds).", "",
             "| attack | models | ASR before | ASR after | clean error before | clean error after | worst clean-error rise | "
             "met both targets | still flagged by re-scan |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summarise_mitigation(reports):
        name = f"**{s.attack}**" if s.attack == "overall" else s.attack
        lines.append(f"| {name} | {s.models} | {pct(s.asr_before)} | {pct(s.asr_after)} | {s.clean_error_before_deg:.2f} | "
                     f"{s.clean_error_after_deg:.2f} | {s.max_clean_error_increase_deg:+.2f} | {s.met_targets}/{s.models} | "
                     f"{s.flagged_after}/{s.models} |")
    lines += ["", "Per model:", "", "| model | ASR before | ASR after | AE after deg | DAE after deg | clean error before -> after deg | "
              "rounds | re-scan score |", "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        b, a = r.attack_before, r.attack_after
        score = r.scan_after["score"]
        score_text = f"{score:.4f}" if isinstance(score, float) and math.isfinite(score) else str(score)
        lines.append(f"| {r.model} | {pct(b['asr'])} | {pct(a['asr'])} | {a['ae_deg']:.1f} | {a['dae_deg']:.1f} | "
                     f"{b['clean_error_deg']:.2f} -> {a['clean_error_deg']:.2f} | {len(r.rounds or [None])} | {score_text} |")
    return "\n".join(lines) + "\n"
