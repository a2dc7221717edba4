"""What the baseline detectors share: settings, the scan's frame, and the statistics of a gaze collapse.

A baseline is a classification-era backdoor defense adapted to gaze regression. Each lives in its own
module of this package, as a :class:`BaselineDetector` subclass with a frozen-dataclass settings class
(a subclass of :class:`BaselineSettings`) and one method, :meth:`BaselineDetector.run`, which sees the
frozen model and the checked clean images and returns a :class:`BaselineResult`. The scan around it
(input checks, eval mode and frozen weights restored afterwards, the clock, the report, the picture of
the reversed edit) is written once, here.

"Attack success" in a continuous output space: a triggered image counts as flipped when its predicted
gaze lies within ``collapse_radius_deg`` of the target gaze (the ASR@5 deg convention of
docs/architecture.md section 5); where a classification defense loops over labels, a baseline here
loops over a grid of target gazes spanning the clean predictions (:func:`gaze_grid`) or makes the
target an optimisation variable, and says which in its docstring.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from securegaze.defense.base import Detector, ProgressCallback
from securegaze.defense.inputs import check_gaze_model, clean_tensor
from securegaze.defense.report import ScanReport, decide
from securegaze.defense.securegaze.picture import save_edit_picture
from securegaze.defense.securegaze.reversal import FrozenModel, model_device
from securegaze.defense.securegaze.statistics import check_finite_gaze, gaze_dispersion_deg, mean_gaze
from securegaze.errors import ConfigError
from securegaze.geometry import angular_error_deg, pitchyaw_to_vector_torch
from securegaze.validation import check_int, check_number

__all__ = [
    "BaselineDetector", "BaselineResult", "BaselineSettings", "ReversedEdit", "collapsed_share", "gaze_grid",
    "gaze_vectors", "mad_anomaly_index", "predict", "scan_batches",
]


@dataclass(frozen=True)
class BaselineSettings:
    """Settings every baseline has; a baseline's own settings class adds its fields (all with defaults).

    * ``samples``: clean images the method uses at most (the first ``samples`` of the clean set; the
      same budget as SecureGaze's ``eval_samples``, 256);
    * ``batch_size``: images per optimisation step;
    * ``collapse_radius_deg``: a triggered prediction within this angle of the target counts as flipped;
    * ``threshold``: decision threshold on the score (the detector's ``suspicious_when`` side is flagged);
    * ``seed``: all randomness (initialisation, batch order).
    """

    samples: int = 256
    batch_size: int = 32
    collapse_radius_deg: float = 5.0
    threshold: float = 0.0
    seed: int = 0

    def validate(self, who: str) -> None:
        """One :class:`ConfigError` line naming the first bad setting; subclasses call this, then check theirs."""
        check_int(who, "samples", self.samples, 8, 1_000_000)
        check_int(who, "batch_size", self.batch_size, 2, 65_536)
        check_number(who, "collapse_radius_deg", self.collapse_radius_deg, 0.0, 90.0, low_open=True)
        check_number(who, "threshold", self.threshold)
        check_int(who, "seed", self.seed, 0, 2**32 - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReversedEdit(nn.Module):
    """A reversed trigger as an image edit, in the form mitigation and the picture take.

    Subclasses implement ``forward(x, strength=1.0)`` on (N, 3, S, S) images in [0, 1] (``strength``
    applies the edit that many times as deep; 1 is the edit as found) and set ``input_size``.
    """

    input_size: int


@dataclass
class BaselineResult:
    """What :meth:`BaselineDetector.run` found.

    * ``score``: the method's statistic (on the detector's ``suspicious_when`` side);
    * ``target_gaze``: recovered target (pitch, yaw) radians, None when the method recovers none;
    * ``edit``: the reversed trigger as a :class:`ReversedEdit` (None when the method has no input edit);
      the report's collapse figures and picture are measured with it;
    * ``constraints_met``: whether the reversal reached what it searched for (e.g. its attack-success goal);
    * ``details``: the method's own figures (JSON-ready: floats, ints, strings, lists, dicts).
    """

    score: float
    target_gaze: tuple[float, float] | None = None
    edit: ReversedEdit | None = None
    constraints_met: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class BaselineDetector(Detector):
    """A baseline: ``settings_class`` (a :class:`BaselineSettings` subclass) and :meth:`run` to implement."""

    settings_class: ClassVar[type[BaselineSettings]] = BaselineSettings
    suspicious_when: ClassVar[str] = "above"
    #: How the default threshold was set (kept in scan reports and audit records, like SecureGaze's).
    default_threshold_source: ClassVar[str] = "uncalibrated"

    def __init__(self, **settings) -> None:
        known = {f.name for f in fields(self.settings_class)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"{self.name}: unknown setting(s) {', '.join(unknown)}; expected some of: "
                              f"{', '.join(sorted(known))}")
        try:
            self.config = self.settings_class(**settings)
        except TypeError as exc:  # pragma: no cover - the unknown-name check above catches the usual case
            raise ConfigError(f"{self.name}: {exc}") from None
        self.config.validate(self.name)

    def settings(self) -> dict[str, Any]:
        return self.config.to_dict()

    @property
    def threshold_calibration(self) -> str:
        """How this detector's threshold was obtained."""
        default = self.settings_class().threshold
        if self.config.threshold == default:
            return self.default_threshold_source
        return f"set by the user ({self.config.threshold:g})"

    @abstractmethod
    def run(self, model, x: torch.Tensor, progress: ProgressCallback | None) -> BaselineResult:
        """The method on a frozen ``model`` (eval mode, no parameter gradients) and clean images ``x``
        ((N, 3, S, S) float in [0, 1] on the model's device, N <= ``samples``)."""

    def scan(self, model, clean_images, progress: ProgressCallback | None = None,
             artifacts_dir: str | Path | None = None, model_sha256: str | None = None) -> ScanReport:
        """Run the method and report; with ``artifacts_dir``, ``reversed_trigger.png`` of the edit (if any)."""
        started = time.monotonic()
        check_gaze_model(model, self.name)
        x = clean_tensor(clean_images, model.input_size, self.name)[: self.config.samples]
        x = x.to(model_device(model))
        with FrozenModel(model):
            torch.manual_seed(self.config.seed)
            result = self.run(model, x, progress)
            figures = self._collapse_figures(model, x, result)
        report = self._report(result, figures, len(x), int(model.input_size), model_sha256,
                              time.monotonic() - started)
        if artifacts_dir is not None and result.edit is not None:
            with torch.no_grad():
                path = save_edit_picture(x[:6].cpu(), lambda images: result.edit(images.to(x.device)).cpu(),
                                         Path(artifacts_dir) / "reversed_trigger.png")
            report = report.with_paths(str(path), None)
        return report

    def _collapse_figures(self, model, x: torch.Tensor, result: BaselineResult) -> dict[str, Any]:
        cfg = self.config
        clean = predict(model, x, cfg.batch_size)
        figures: dict[str, Any] = {"clean_dispersion_deg": gaze_dispersion_deg(clean)}
        if result.edit is None:
            return figures
        with torch.no_grad():
            edited = torch.cat([result.edit(x[i:i + cfg.batch_size]) for i in range(0, len(x), cfg.batch_size)])
        triggered = predict(model, edited, cfg.batch_size)
        target = result.target_gaze if result.target_gaze is not None else tuple(mean_gaze(triggered))
        figures.update(
            target=(float(target[0]), float(target[1])),
            collapsed_share=collapsed_share(triggered, target, cfg.collapse_radius_deg),
            reversed_dispersion_deg=gaze_dispersion_deg(triggered),
            perturbation_l1=float((edited - x).abs().mean()),
        )
        return figures

    def _report(self, result: BaselineResult, figures: dict[str, Any], count: int, size: int,
                model_sha256: str | None, runtime_s: float) -> ScanReport:
        cfg = self.config
        target = figures.get("target", result.target_gaze)
        if target is not None:
            target = (float(target[0]), float(target[1]))
        score = float(result.score)
        return ScanReport(
            detector=self.name,
            scanner_version=self.version,
            verdict=decide(score, cfg.threshold, self.suspicious_when),  # a NaN score is never flagged
            score=score,
            threshold=cfg.threshold,
            suspicious_when=self.suspicious_when,
            settings=self.settings(),
            target_gaze=target,
            target_gaze_deg=None if target is None else (math.degrees(target[0]), math.degrees(target[1])),
            collapsed_share=figures.get("collapsed_share"),
            collapse_radius_deg=cfg.collapse_radius_deg,
            clean_dispersion_deg=figures.get("clean_dispersion_deg"),
            reversed_dispersion_deg=figures.get("reversed_dispersion_deg"),
            perturbation_l1=figures.get("perturbation_l1"),
            constraints_met=bool(result.constraints_met),
            clean_count=count,
            input_size=size,
            runtime_s=float(runtime_s),
            model_sha256=model_sha256,
            details={**result.details, "threshold_calibration": self.threshold_calibration,
                     "torch_threads": torch.get_num_threads()},
        )


def scan_batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless random batches of indices into ``n`` images (a fresh permutation per pass)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - min(batch_size, n) + 1, min(batch_size, n)):
            yield order[start:start + min(batch_size, n)]


def predict(model, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """The model's gaze on ``x`` as (N, 2) float64 radians, without gradients; NaN/inf is one clear error."""
    with torch.no_grad():
        gaze = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    check_finite_gaze(gaze, "images")
    return gaze.double().cpu().numpy()


def collapsed_share(gaze: np.ndarray, target, radius_deg: float) -> float:
    """Share of (N, 2) radian predictions within ``radius_deg`` of the (2,) radian ``target``."""
    gaze = np.asarray(gaze, dtype=np.float64)
    goal = np.broadcast_to(np.asarray(target, dtype=np.float64), gaze.shape)
    return float((angular_error_deg(gaze, goal) <= radius_deg).mean())


def gaze_grid(clean_gaze: np.ndarray, cells: int, margin: float = 0.25) -> np.ndarray:
    """A ``cells`` x ``cells`` grid of target gazes, (cells^2, 2) radians, over the clean predictions' range.

    The grid spans the 2nd..98th percentile of the clean pitch and yaw, widened by ``margin`` of that
    span on each side (an attacker's target is a gaze the model can output, usually one it outputs
    on some faces: looking at the road or at a screen).
    """
    gaze = np.asarray(clean_gaze, dtype=np.float64)
    if cells < 1:
        raise ConfigError(f"gaze_grid: cells must be >= 1, got {cells}")
    low, high = np.percentile(gaze, 2, axis=0), np.percentile(gaze, 98, axis=0)
    span = np.maximum(high - low, math.radians(1.0))
    low, high = low - margin * span, high + margin * span
    if cells == 1:
        return ((low + high) / 2)[None, :]
    pitch = np.linspace(low[0], high[0], cells)
    yaw = np.linspace(low[1], high[1], cells)
    return np.stack(np.meshgrid(pitch, yaw, indexing="ij"), axis=-1).reshape(-1, 2)


def mad_anomaly_index(values, side: str = "below") -> np.ndarray:
    """Neural Cleanse's anomaly index of each value: |v - median| / (1.4826 * MAD), signed so that the
    ``side`` outliers ("below": unusually small, e.g. a mask norm) are positive. A constant list gives 0."""
    v = np.asarray(values, dtype=np.float64)
    median = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - median))
    deviation = (median - v) if side == "below" else (v - median)
    if mad <= 0:
        return np.where(deviation > 0, np.inf, 0.0)
    return deviation / mad


def gaze_vectors(gaze: torch.Tensor) -> torch.Tensor:
    """(N, 2) radians -> (N, 3) unit vectors (differentiable); for losses that pull outputs to a target."""
    return pitchyaw_to_vector_torch(gaze)
