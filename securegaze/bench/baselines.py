"""Every registered detector through the detection benchmark, each with its own calibrated threshold.

What ``securegaze bench detect --detectors securegaze,neural_cleanse,...`` runs (issue 15)::

    detectors = build_detectors(parse_detector_names("securegaze,neural_cleanse"), seed=0)
    results = run_detector_comparison("runs/zoo", "runs/zoo-calib", "runs/bench", detectors)

Each detector is one run of :func:`~securegaze.bench.detection.run_detection_benchmark` on the same
zoos and the same clean images:

* its threshold is fitted to its own benign calibration scores, on its own suspicious side and scale
  (:func:`~securegaze.bench.calibration.fit_threshold`: log-normal for positive scores, normal for
  scores that can be <= 0), at the same benign share (``CALIBRATION_FPR``) for every detector; a
  detector with fewer than 3 finite benign scores is reported uncalibrated (threshold nan, nothing
  flagged, the reason in its results) instead of stopping the other detectors' runs;
* its scans are cached under its own folder (:func:`detector_out_dir`), keyed like SecureGaze's by the
  model's sha256, the detector's version and its settings, so an interrupted comparison resumes and a
  detector added later scans only itself;
* SecureGaze comes first in every result list and table, the baselines follow in the order given.

Everything returned is the plain :class:`~securegaze.bench.detection.DetectionResults` of each
detector; :mod:`securegaze.bench.baselines_report` writes the comparison page (docs/baselines.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from securegaze.bench.detection import BenchProgress, DetectionResults, run_detection_benchmark
from securegaze.errors import ConfigError

__all__ = ["DEFAULT_DETECTOR", "build_detectors", "detector_out_dir", "detector_rows", "parse_detector_names",
           "run_detector_comparison", "securegaze_first"]

#: The detector ``bench detect`` runs when ``--detectors`` is not given; its scans and results stay where
#: they always were (``OUT/scans``, ``OUT/detection.json``), which ``bench mitigate`` reads.
DEFAULT_DETECTOR = "securegaze"


def parse_detector_names(text: str) -> list[str]:
    """``"securegaze,neural_cleanse"`` -> registered names in that order; one ConfigError line for an
    empty list, a repeated name or an unknown one (naming the registered detectors)."""
    from securegaze.defense import DETECTORS

    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--detectors: no detector named in {text!r}; expected some of: "
                          f"{', '.join(DETECTORS.names())}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--detectors: {', '.join(repeated)} named twice in {text!r}")
    for name in names:
        DETECTORS.get(name)  # an unknown name: one line listing the registered ones
    return names


def securegaze_first(names: list[str]) -> list[str]:
    """The names with SecureGaze moved to the front (tables compare every baseline against it)."""
    return sorted(names, key=lambda n: n != DEFAULT_DETECTOR)


def build_detectors(names: list[str], seed: int = 0, settings: dict[str, dict] | None = None) -> list:
    """Each named detector with its default settings, ``seed`` and any ``settings[name]`` overrides
    (checked by the detector: one ConfigError line for an unknown setting or a bad value)."""
    from securegaze.defense import create_detector

    settings = settings or {}
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ConfigError(f"settings given for {', '.join(unknown)}, which is not among the detectors "
                          f"{', '.join(names)}")
    return [create_detector(name, **{"seed": seed, **settings.get(name, {})}) for name in securegaze_first(names)]


def detector_out_dir(out_dir: str | Path, name: str) -> Path:
    """Where one detector's scans (``scans/<zoo>/<model id>/``) and results (``detection.json``) go:
    ``out_dir`` itself for SecureGaze (the single-detector layout), ``out_dir/detectors/<name>`` else."""
    return Path(out_dir) if name == DEFAULT_DETECTOR else Path(out_dir) / "detectors" / name


def run_detector_comparison(zoo_dir: str | Path, calibration_zoo: str | Path, out_dir: str | Path, detectors: list,
                            samples: int = 256, seed: int = 0, hard_zoo: str | Path | None = None,
                            attacks: list[str] | None = None, ablation: bool = False,
                            ablation_per_attack: int | None = None,
                            progress: Callable[[str, BenchProgress], None] | None = None,
                            scan_progress: Callable | None = None) -> list[DetectionResults]:
    """Run the detection benchmark once per detector (SecureGaze first); see the module docstring.

    ``progress(detector_name, event)``: each model as it starts and finishes. ``ablation``: also
    scan with each detector's first ablation, for the detectors that define one.
    """
    from securegaze.zoo import ZooManifest

    if not detectors:
        raise ConfigError("detector comparison: no detector given")
    for zoo in (zoo_dir, calibration_zoo, hard_zoo):
        if zoo is not None:
            ZooManifest.read(zoo)  # every zoo readable before the first scan of the first detector
    order = securegaze_first([d.name for d in detectors])
    by_name = {d.name: d for d in detectors}
    results = []
    for name in order:
        detector = by_name[name]
        on_model = None if progress is None else (lambda event, who=name: progress(who, event))
        results.append(run_detection_benchmark(
            zoo_dir, calibration_zoo, detector_out_dir(out_dir, name), detector, samples=samples, seed=seed,
            hard_zoo=hard_zoo, attacks=attacks,
            ablation=min(detector.ablations) if ablation and detector.ablations else None,
            ablation_per_attack=ablation_per_attack, progress=on_model, scan_progress=scan_progress,
            strict_calibration=False))
    return results


def detector_rows() -> list[dict[str, str]]:
    """One row per registered detector (SecureGaze first): name, version, the side its score flags,
    its default threshold and where that came from (what ``securegaze info`` lists)."""
    from securegaze.defense import DETECTORS, create_detector

    rows = []
    for name in securegaze_first(DETECTORS.names()):
        detector = create_detector(name)
        threshold = detector.settings().get("threshold")
        source = getattr(detector, "threshold_calibration", "") or "not stated"
        rows.append({"name": name, "version": str(detector.version), "suspicious_when": detector.suspicious_when,
                     "threshold": "none" if threshold is None else f"{threshold:g}", "source": str(source)})
    return rows
