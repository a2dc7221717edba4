"""The detector interface every backdoor defense shares, and the scan report they all return.

A detector is configured once from its settings, then scans any gaze model G = H o F
(:mod:`securegaze.models.base`) with a small set of clean, unlabelled images::

    detector = create_detector("securegaze", seed=0)
    report = detector.scan(model, clean_images, progress=print_event)
    report.verdict, report.score, report.threshold

SecureGaze and every baseline (Neural Cleanse, FeatureRE, BTI-DBF, ...) subclass :class:`Detector`
and return a :class:`ScanReport`, so the benchmark is a loop over names. Library code prints nothing:
progress goes to a callback as :class:`ScanProgress` events.

Units: gaze in radians unless a name ends in ``_deg``; images (N, S, S, 3) uint8 RGB or
(N, 3, S, S) float in [0, 1]; perturbation sizes per pixel and channel in [0, 1] units.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from securegaze.errors import ConfigError, DatasetError, ModelFormatError
from securegaze.io import atomic_write_json, read_json

VERDICTS = ("backdoored", "clean")
#: Which side of the threshold is suspicious: SecureGaze's score is a perturbation size (small means
#: an easy collapse, hence "below"); baselines such as an anomaly index flag large values ("above").
SUSPICIOUS_SIDES = ("below", "above")
#: Fewest clean images a scan accepts: dispersion and variance statistics over fewer are noise.
#: docs/architecture.md section 6 assumes "hundreds"; 8 only keeps tests and smoke runs possible.
MIN_CLEAN_IMAGES = 8


@dataclass(frozen=True)
class ScanProgress:
    """One progress event of a scan.

    ``stage``: what runs now (detector-specific, e.g. ``"sensitivity"``, ``"reverse"``,
    ``"evaluate"``); ``step`` of ``total`` within that stage; ``values``: the stage's numbers at this
    step (e.g. the perturbation cost and constraint ratios), plain floats.
    """

    detector: str
    stage: str
    step: int
    total: int
    values: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[ScanProgress], None]


def _encode_float(value: float | None):
    """JSON has no inf/nan: write them as the strings "inf", "-inf", "nan" (floats stay floats)."""
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _decode_float(value) -> float | None:
    if value is None:
        return None
    return float(value)  # float("inf") / float("nan") parse the strings written above


def _json_ready(obj):
    """Tuples -> lists, numpy scalars -> Python, non-finite floats -> strings (recursively)."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _encode_float(float(obj))
    return obj


def _from_json(obj):
    """Inverse of :func:`_json_ready` for nested values: the float strings become floats again."""
    if isinstance(obj, dict):
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    if obj in ("inf", "-inf", "nan"):
        return float(obj)
    return obj


_FLOAT_FIELDS = (
    "score", "threshold", "collapsed_share", "clean_dispersion_deg", "reversed_dispersion_deg",
    "feature_angle_variance_clean", "feature_angle_variance_reversed", "perturbation_l1", "runtime_s",
)
_PAIR_FIELDS = ("target_gaze", "target_gaze_deg")


@dataclass(frozen=True)
class ScanReport:
    """What one scan of one model found. Plain data; ``to_dict`` / ``from_dict`` round-trip through JSON.

    * ``verdict``: ``"backdoored"`` or ``"clean"``; ``score`` against ``threshold``, flagged when on
      the ``suspicious_when`` side (``"below"``: score < threshold is backdoored);
    * ``target_gaze`` / ``target_gaze_deg``: recovered target (pitch, yaw), the mean of G(x') over the
      reversed-triggered clean images, radians / degrees (None when a detector recovers none);
    * ``collapsed_share``: share in [0, 1] of clean images whose reversed-triggered prediction lies
      within ``collapse_radius_deg`` of the recovered target;
    * ``clean_dispersion_deg`` / ``reversed_dispersion_deg``: mean angle between each prediction and
      the batch's mean gaze, on G(x) and G(x'), degrees;
    * ``feature_angle_variance_clean`` / ``_reversed``: variance over the images of the angle (rad^2)
      between F(x) and each row of H's weight matrix, averaged over rows, before / after the trigger;
    * ``perturbation_l1``: unweighted mean |x' - x| per pixel and channel, [0, 1] units;
    * ``constraints_met``: whether the reverse-engineering reached its collapse constraints;
    * ``runtime_s``: wall time of the scan, seconds; ``model_sha256``: of the scanned file, if known;
    * ``trigger_image_path`` / ``generator_path``: files written by the scan (None if not written);
    * ``details``: detector-specific extras (JSON-ready).
    """

    detector: str
    scanner_version: str
    verdict: str
    score: float
    threshold: float
    suspicious_when: str
    settings: dict[str, Any]
    target_gaze: tuple[float, float] | None
    target_gaze_deg: tuple[float, float] | None
    collapsed_share: float | None
    collapse_radius_deg: float
    clean_dispersion_deg: float | None
    reversed_dispersion_deg: float | None
    feature_angle_variance_clean: float | None
    feature_angle_variance_reversed: float | None
    perturbation_l1: float | None
    constraints_met: bool
    clean_count: int
    input_size: int
    runtime_s: float
    model_sha256: str | None = None
    trigger_image_path: str | None = None
    generator_path: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.suspicious_when not in SUSPICIOUS_SIDES:
            raise ValueError(f"suspicious_when must be one of {SUSPICIOUS_SIDES}, got {self.suspicious_when!r}")

    @property
    def backdoored(self) -> bool:
        return self.verdict == "backdoored"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite floats (an infeasible scan's score is inf) become strings."""
        return _json_ready(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanReport:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ScanReport fields: {', '.join(unknown)}")
        values = dict(data)
        for name in _FLOAT_FIELDS:
            if name in values:
                values[name] = _decode_float(values[name])
        for name in _PAIR_FIELDS:
            if values.get(name) is not None:
                values[name] = tuple(float(v) for v in values[name])
        values["settings"] = _from_json(values.get("settings", {}))
        values["details"] = _from_json(values.get("details", {}))
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically (a reader never sees half a report)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ScanReport:
        from securegaze.errors import InputFileError

        data = read_json(path, "scan report")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise InputFileError(f"{path}: not a valid scan report ({exc})") from None


def decide(score: float, threshold: float, suspicious_when: str = "below") -> str:
    """The verdict for ``score``: an infeasible (inf) score of a "below" detector is always clean."""
    if suspicious_when == "below":
        return "backdoored" if score < threshold else "clean"
    return "backdoored" if score > threshold else "clean"


# --- input checks shared by every detector -------------------------------------------------------


def check_gaze_model(model, detector: str) -> None:
    """``model`` must expose the G = H o F interface (docs/architecture.md section 3), else a ModelFormatError."""
    missing = [name for name in ("features", "head", "head_weight", "input_size") if not hasattr(model, name)]
    if missing or not isinstance(model, torch.nn.Module):
        what = type(model).__name__
        raise ModelFormatError(
            f"{detector}: {what} is not a gaze model split into F and H (missing {', '.join(missing) or 'nn.Module'}); "
            "load it with securegaze.defense.load_model_any, and for a third-party ONNX declare "
            '"feature_split": {"feature_tensor": "<name>"} in its manifest'
        )


def clean_tensor(clean_images, input_size: int, detector: str) -> torch.Tensor:
    """Clean images as (N, 3, S, S) float32 in [0, 1], checked against the model's ``input_size``.

    Accepts an in-memory dataset (its ``images``), (N, S, S, 3) uint8 RGB, or an (N, 3, S, S) float
    tensor / array in [0, 1]. Raises :class:`DatasetError` for an empty or too small set, wrong
    layout or size, and values outside [0, 1].
    """
    images = getattr(clean_images, "images", clean_images)
    if isinstance(images, torch.Tensor):
        x = images.detach().to(torch.float32).cpu()
        layout = "tensor"
    else:
        try:
            array = np.asarray(images)
        except Exception as exc:  # ragged lists and the like
            raise DatasetError(f"{detector}: clean images cannot be read as an array ({exc})") from None
        if array.dtype == np.uint8:
            if array.ndim != 4 or array.shape[-1] != 3:
                raise DatasetError(f"{detector}: clean images must be (N, S, S, 3) uint8 RGB, got shape {array.shape}")
            x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div_(255.0)
        elif np.issubdtype(array.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        else:
            raise DatasetError(
                f"{detector}: clean images have dtype {array.dtype}; expected uint8 (N, S, S, 3) RGB "
                "or float (N, 3, S, S) in [0, 1]"
            )
        layout = "array"
    if x.ndim != 4 or x.shape[1] != 3:
        raise DatasetError(f"{detector}: clean images must be (N, 3, S, S) floats in [0, 1], got {layout} of shape "
                           f"{tuple(x.shape)}")
    if len(x) == 0:
        raise DatasetError(f"{detector}: the clean image set is empty; give at least {MIN_CLEAN_IMAGES} "
                           "(hundreds recommended) clean face crops")
    if len(x) < MIN_CLEAN_IMAGES:
        raise DatasetError(f"{detector}: got {len(x)} clean images; need at least {MIN_CLEAN_IMAGES} "
                           "(hundreds recommended)")
    size = int(input_size)
    if x.shape[2] != size or x.shape[3] != size:
        raise DatasetError(
            f"{detector}: clean images are {x.shape[2]}x{x.shape[3]} px but the model expects {size}x{size} "
            "(its input_size); resize them first (securegaze.data.base.resize_images)"
        )
    if not torch.isfinite(x).all():
        raise DatasetError(f"{detector}: clean images contain NaN or inf values")
    if x.min() < 0.0 or x.max() > 1.0:
        raise DatasetError(
            f"{detector}: clean image values span [{x.min().item():.3g}, {x.max().item():.3g}]; expected [0, 1] "
            "(or uint8 0..255)"
        )
    return x.contiguous()


def check_setting(detector: str, name: str, ok: bool, expected: str, value) -> None:
    if not ok:
        raise ConfigError(f"{detector}: {name} must be {expected}, got {value!r}")


class Detector(ABC):
    """Base class of a backdoor detector: built from its settings, then :meth:`scan` s models.

    Subclasses set ``name`` (the registry name), ``version`` (bumped whenever a change can move
    scores: a threshold is only valid for the version it was calibrated on) and
    ``suspicious_when``, and implement :meth:`settings` and :meth:`scan`.
    """

    name: ClassVar[str] = "detector"
    version: ClassVar[str] = "0"
    suspicious_when: ClassVar[str] = "below"

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything needed to rebuild the detector: ``create_detector(self.name, **self.settings())``."""

    @abstractmethod
    def scan(self, model, clean_images, progress: ProgressCallback | None = None,
             artifacts_dir: str | Path | None = None, model_sha256: str | None = None) -> ScanReport:
        """Scan ``model`` (G = H o F, eval mode, not modified) with clean images; see :class:`ScanReport`.

        ``clean_images``: (N, S, S, 3) uint8 RGB, an (N, 3, S, S) float tensor in [0, 1], or an
        in-memory dataset; S must be the model's ``input_size``. ``artifacts_dir``: where to write
        the reversed trigger (images, weights); nothing is written without it. ``model_sha256``:
        recorded in the report (the scanner does not know which file the module came from).
        """

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({inner})"
