"""Mitigation methods side by side: every registered method on the same backdoored models, one table.

``securegaze bench mitigate --methods securegaze,fine_tuning,fine_pruning,anp,i_bau`` runs
:func:`run_mitigation_methods`: each method (:mod:`securegaze.defense.mitigations`) mitigates every
backdoored model of a zoo with the same clean images and the same label budget (the original model's own
predictions on them), and each result is a :class:`~securegaze.bench.mitigation.MitigationReport`
measured against the real trigger on the model's own held-out test faces (:mod:`securegaze.attacks.metrics`:
clean error, AE, DAE, ASR@5 deg, degrees).

``securegaze`` itself runs as before (:func:`~securegaze.bench.mitigation.run_mitigation_benchmark`,
reusing the detection benchmark's scans, with the defaults of ``securegaze mitigate``); the baselines
need no scan. Every result is cached in ``bench_dir/mitigation/<method>/<model id>.json`` (SecureGaze's
in its old place, ``bench_dir/mitigation/<model id>.json``) and reused when the model's sha256, the
method, its settings and version and the number of clean images all match, so a stopped run resumes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from securegaze.bench.mitigation import (
    TARGET_ASR_AFTER,
    TARGET_CLEAN_ERROR_INCREASE_DEG,
    MitigationReport,
    mitigation_entries,
    run_mitigation_benchmark,
)
from securegaze.defense.mitigations import MitigationMethod, create_mitigation
from securegaze.errors import ConfigError
from securegaze.json_codec import to_json

__all__ = ["method_record", "mitigate_with", "mitigation_methods_markdown", "mitigation_methods_table",
           "run_mitigation_methods", "write_mitigation_methods_results"]


def method_record(method: MitigationMethod) -> dict:
    """What a cached result must match: the method's version and its full settings, as JSON."""
    return to_json({"version": method.version, **method.settings()})


def mitigate_with(method: MitigationMethod, model, clean_images, test_set, attack=None, test_faces=None,
                  labels=None, model_name: str = "", model_sha256: str | None = None, out: str | None = None,
                  progress: Callable | None = None):
    """Mitigate ``model`` with ``method`` and measure it: returns ``(mitigated model, MitigationReport)``.

    ``clean_images``: the defender's images ((N, S, S, 3) uint8); ``test_set``: a different labelled
    set for the figures; ``attack`` (+ ``test_faces`` for the physical triggers): the real attack when
    known, else only the clean error on ``test_set`` is measured (``details["test_clean"]``);
    ``labels``: true gaze of the clean images (default: the model's own predictions).
    """
    from securegaze.attacks.metrics import evaluate_attack
    from securegaze.training import evaluate

    started = time.monotonic()
    tuned, details = method.apply(model, clean_images, labels=labels, progress=progress)
    runtime = time.monotonic() - started
    before = after = None
    if attack is not None:
        before = evaluate_attack(model, attack, test_set, test_faces).to_dict()
        after = evaluate_attack(tuned, attack, test_set, test_faces).to_dict()
    else:
        details["test_clean"] = {"before_deg": evaluate(model, test_set).mean_deg,
                                 "after_deg": evaluate(tuned, test_set).mean_deg}
    report = MitigationReport(
        model=model_name, out=out, scan_before=details.pop("scan_before", None),
        scan_after=details.pop("scan_after", None), reversed_before=None, reversed_after=None,
        attack_before=before, attack_after=after, finetune=details.pop("finetune", None),
        clean_images=int(len(getattr(clean_images, "images", clean_images))), test_images=int(len(test_set)),
        runtime_s=runtime, attack=getattr(attack, "name", None), rounds=details.pop("rounds", None),
        settings=method_record(method), method=method.name, details=to_json(details), model_sha256=model_sha256)
    return tuned, report


def _cached(path: Path, sha256: str, method: MitigationMethod, clean_count: int) -> MitigationReport | None:
    from securegaze.io import read_json

    if not path.is_file():
        return None
    data = read_json(path, "mitigation report")
    if (data.get("model_sha256"), data.get("method"), data.get("settings"), data.get("clean_images")) != (
            sha256, method.name, method_record(method), clean_count):
        return None
    return MitigationReport(**data)


def run_mitigation_methods(zoo_dir: str | Path, bench_dir: str | Path, methods: Sequence[str | MitigationMethod],
                           detector=None, samples: int = 2048, seed: int = 0, per_attack: int | None = None,
                           threshold: float | None = None, test_samples: int | None = None,
                           progress: Callable[[str, int, int], None] | None = None,
                           attacks: Sequence[str] | None = None) -> list[MitigationReport]:
    """Every method of ``methods`` (names, built with ``seed``, or built methods) on the backdoored models
    of ``zoo_dir`` (:func:`~securegaze.bench.mitigation.mitigation_entries`: of ``attacks`` only, when
    given); returns the reports, method by method.

    ``securegaze`` needs ``detector`` (and the detection benchmark's scans in ``bench_dir``) and runs
    :func:`~securegaze.bench.mitigation.run_mitigation_benchmark` with ``threshold``; ``samples``: the
    defender's clean images (the zoo's style and size, the same for every method); ``progress(label,
    done, total)`` with label ``method/model``.
    """
    from securegaze.attacks.runner import load_attack_run
    from securegaze.bench.detection import zoo_clean_images
    from securegaze.defense.model_loading import load_model_any
    from securegaze.io import atomic_write_json
    from securegaze.zoo import ZooManifest, verify_zoo

    built = [create_mitigation(m, seed=seed) if isinstance(m, str) and m != "securegaze" else m for m in methods]
    names = [m if isinstance(m, str) else m.name for m in built]
    if len(set(names)) != len(names):
        raise ConfigError(f"bench mitigate: a method is named twice in {', '.join(names)}")
    if "securegaze" in names and detector is None:
        raise ConfigError("bench mitigate: the securegaze method needs the detector of the detection benchmark")
    zoo_dir, bench_dir = Path(zoo_dir), Path(bench_dir)
    manifest = ZooManifest.read(zoo_dir)
    verify_zoo(zoo_dir, manifest)
    entries = mitigation_entries(manifest, per_attack, attacks)
    clean = zoo_clean_images(manifest.spec, samples, seed) if any(n != "securegaze" for n in names) else None
    reports: list[MitigationReport] = []
    for method, name in zip(built, names, strict=True):
        if name == "securegaze":
            def on_model(model_id, done, total):
                if progress:
                    progress(f"securegaze/{model_id}", done, total)

            reports += run_mitigation_benchmark(zoo_dir, bench_dir, getattr(method, "detector", detector),
                                                samples=samples, seed=seed, per_attack=per_attack,
                                                threshold=threshold, test_samples=test_samples, progress=on_model,
                                                attacks=attacks)
            continue
        for i, entry in enumerate(entries):
            if progress:
                progress(f"{name}/{entry.id}", i, len(entries))
            cache = bench_dir / "mitigation" / name / f"{entry.id}.json"
            report = _cached(cache, entry.sha256, method, len(clean))
            if report is None:
                attack, test_set, faces = load_attack_run(zoo_dir / entry.id, test_samples)
                model = load_model_any(zoo_dir / str(entry.model_file))
                _, report = mitigate_with(method, model, clean, test_set, attack=attack, test_faces=faces,
                                          model_name=entry.id, model_sha256=entry.sha256)
                atomic_write_json(cache, report.to_dict())
            reports.append(report)
            if progress:
                progress(f"{name}/{entry.id}", i + 1, len(entries))
    return reports


# --- tables ------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}%"


def _methods(reports: list[MitigationReport]) -> list[str]:
    return list(dict.fromkeys(r.method for r in reports))


def mitigation_methods_table(reports: list[MitigationReport]) -> str:
    """One Markdown row per method (in order of first appearance) over its reports with a known attack:
    models, median ASR@5 deg before and after, median AE and DAE after (deg), median clean-error change
    (deg), the shares meeting ASR <= 5 % after, a clean-error rise <= 0.5 deg and both, median time (s).

    SecureGaze's time in the benchmark excludes its first scan, which it reuses from the detection
    benchmark (the footnote gives that scan's median time)."""
    lines = ["| method | models | ASR@5° before | ASR@5° after | AE after (°) | DAE after (°) | clean error change (°) | "
             f"ASR ≤ {100 * TARGET_ASR_AFTER:g}% | clean rise ≤ {TARGET_CLEAN_ERROR_INCREASE_DEG:g}° | both | "
             "median time (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    scans = []
    for name in _methods(reports):
        rs = [r for r in reports if r.method == name and r.attack_before and r.attack_after]
        if not rs:
            continue
        asr_ok = [r.attack_after["asr"] <= TARGET_ASR_AFTER for r in rs]
        rise_ok = [r.clean_error_increase_deg <= TARGET_CLEAN_ERROR_INCREASE_DEG for r in rs]
        both = [a and b for a, b in zip(asr_ok, rise_ok, strict=True)]
        n = len(rs)
        lines.append(
            f"| {name} | {n} | {_pct(_median([r.attack_before['asr'] for r in rs]))} | "
            f"{_pct(_median([r.attack_after['asr'] for r in rs]))} | "
            f"{_median([r.attack_after['ae_deg'] for r in rs]):.1f} | {_median([r.attack_after['dae_deg'] for r in rs]):.1f} | "
            f"{_median([r.clean_error_increase_deg for r in rs]):+.2f} | {sum(asr_ok)}/{n} | {sum(rise_ok)}/{n} | "
            f"{sum(both)}/{n} | {_median([r.runtime_s for r in rs]):.0f} |")
        # A benchmark's SecureGaze report (details None) reused the detection benchmark's scan.
        scans += [float(r.scan_before["runtime_s"]) for r in rs if name == "securegaze" and r.details is None
                  and r.scan_before and r.scan_before.get("runtime_s") is not None]
    if scans:
        lines += ["", f"SecureGaze's time excludes its first scan, reused from the detection benchmark "
                      f"(median {_median(scans):.0f} s)."]
    return "\n".join(lines) + "\n"


def mitigation_methods_markdown(reports: list[MitigationReport], command: str, machine: str) -> str:
    """The methods table, then one row per method and model, as a Markdown page."""
    labels = sorted({(r.details or {}).get("labels", "own predictions") for r in reports})
    said = {"own predictions": "the original model's own predictions", "true": "their true gaze"}
    lines = ["# Mitigation methods side by side", "", f"Regenerate: `{command}`", "", f"Machine: {machine}.", "",
             f"Targets: ASR@5° <= {100 * TARGET_ASR_AFTER:g}% after mitigation and clean error up by <= "
             f"{TARGET_CLEAN_ERROR_INCREASE_DEG:g}°, against the real trigger on each model's held-out test faces; "
             "medians over the models. Every method gets the same clean images, labelled with "
             + " or ".join(said.get(label, label) for label in labels) + ".", "",
             mitigation_methods_table(reports).rstrip("\n"), "", "Per model:", "",
             "| method | model | ASR before | ASR after | AE after (°) | DAE after (°) | clean error before -> after (°) "
             "| time (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        if not (r.attack_before and r.attack_after):
            continue
        b, a = r.attack_before, r.attack_after
        lines.append(f"| {r.method} | {r.model} | {_pct(b['asr'])} | {_pct(a['asr'])} | {a['ae_deg']:.1f} | "
                     f"{a['dae_deg']:.1f} | {b['clean_error_deg']:.2f} -> {a['clean_error_deg']:.2f} | {r.runtime_s:.0f} |")
    return "\n".join(lines) + "\n"


def write_mitigation_methods_results(reports: list[MitigationReport], bench_dir: str | Path, command: str) -> Path:
    """Write ``mitigation_methods.json`` (the reports and the machine) and ``mitigation_methods.md``
    (regenerated by ``command``) to ``bench_dir``; returns the Markdown file's path."""
    from securegaze.io import atomic_write_bytes, atomic_write_json
    from securegaze.machine import machine_summary

    bench_dir = Path(bench_dir)
    machine = machine_summary()
    atomic_write_json(bench_dir / "mitigation_methods.json", {"methods": _methods(reports), "machine": machine,
                                                              "models": [r.to_dict() for r in reports]})
    return atomic_write_bytes(bench_dir / "mitigation_methods.md",
                              mitigation_methods_markdown(reports, command, machine).encode())
