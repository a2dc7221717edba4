"""The scan report every detector returns, and the verdict rule.

Plain data: ``to_dict`` / ``from_dict`` round-trip through JSON with the project's one codec
(:mod:`securegaze.json_codec`: an infeasible scan's inf score is written as ``"inf"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from securegaze.errors import InputFileError
from securegaze.io import atomic_write_json, read_json
from securegaze.json_codec import decode_float, from_json, to_json

VERDICTS = ("backdoored", "clean")
#: Which side of the threshold is suspicious: SecureGaze's score is a perturbation size (small means
#: an easy collapse, hence "below"); baselines such as an anomaly index flag large values ("above").
SUSPICIOUS_SIDES = ("below", "above")

_FLOAT_FIELDS = (
    "score", "threshold", "collapsed_share", "clean_dispersion_deg", "reversed_dispersion_deg", "perturbation_l1",
    "runtime_s",
)
_PAIR_FIELDS = ("target_gaze", "target_gaze_deg")
#: Detector-specific statistics that reports written before they moved into ``details`` held at the
#: top level; :meth:`ScanReport.from_dict` moves them, so old report files and audit records still read.
_MOVED_TO_DETAILS = ("feature_angle_variance_clean", "feature_angle_variance_reversed")


@dataclass(frozen=True)
class ScanReport:
    """What one scan of one model found.

    * ``verdict``: ``"backdoored"`` or ``"clean"``; ``score`` against ``threshold``, flagged when on
      the ``suspicious_when`` side (``"below"``: score < threshold is backdoored);
    * ``target_gaze`` / ``target_gaze_deg``: recovered target (pitch, yaw), the mean of G(x') over the
      reversed-triggered clean images, radians / degrees (None when a detector recovers none);
    * ``collapsed_share``: share in [0, 1] of clean images whose reversed-triggered prediction lies
      within ``collapse_radius_deg`` of the recovered target;
    * ``clean_dispersion_deg`` / ``reversed_dispersion_deg``: mean angle between each prediction and
      the batch's mean gaze, on G(x) and G(x'), degrees;
    * ``perturbation_l1``: unweighted mean |x' - x| per pixel and channel, [0, 1] units;
    * ``constraints_met``: whether the reverse-engineering reached what it searched for;
    * ``runtime_s``: wall time of the scan, seconds; ``model_sha256``: of the scanned file, if known;
    * ``trigger_image_path`` / ``generator_path``: files written by the scan (None if not written);
    * ``details``: detector-specific statistics (JSON-ready), e.g. SecureGaze's feature-angle variances.

    The fields a detector cannot fill (one that recovers no trigger has no dispersion) are None.
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

    def with_paths(self, trigger_image_path: str | None, generator_path: str | None) -> ScanReport:
        """The same report naming the files its scan wrote."""
        return replace(self, trigger_image_path=trigger_image_path, generator_path=generator_path)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite floats (an infeasible scan's score is inf) become strings."""
        return to_json(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanReport:
        values = dict(data)
        details = dict(values.get("details") or {})
        for name in _MOVED_TO_DETAILS:
            if name in values:
                details.setdefault(name, values.pop(name))
        values["details"] = details
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ScanReport fields: {', '.join(unknown)}")
        for name in _FLOAT_FIELDS:
            if name in values:
                values[name] = decode_float(values[name])
        for name in _PAIR_FIELDS:
            if values.get(name) is not None:
                values[name] = tuple(float(v) for v in values[name])
        values["settings"] = from_json(values.get("settings", {}))
        values["details"] = from_json(values["details"])
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically (a reader never sees half a report)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ScanReport:
        data = read_json(path, "scan report")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputFileError(f"{path}: not a valid scan report ({exc})") from None


def decide(score: float, threshold: float, suspicious_when: str = "below") -> str:
    """The verdict for ``score``: an infeasible (inf) score of a "below" detector is always clean."""
    if suspicious_when == "below":
        return "backdoored" if score < threshold else "clean"
    return "backdoored" if score > threshold else "clean"
