"""The detector interface every backdoor defense shares: settings in, a scan report out.

A detector is configured once from its settings, then scans any gaze model G = H o F
(:mod:`securegaze.models.base`) with a small set of clean, unlabelled images::

    detector = create_detector("securegaze", seed=0)
    report = detector.scan(model, clean_images, progress=print_event)
    report.verdict, report.score, report.threshold

SecureGaze and every baseline (Neural Cleanse, FeatureRE, BTI-DBF, ...) subclass :class:`Detector`
and return a :class:`ScanReport`, so the benchmark is a loop over names. Library code prints nothing:
progress goes to a callback as :class:`ScanProgress` events.

The report and the verdict rule are in :mod:`securegaze.defense.report`, the input checks every
detector shares in :mod:`securegaze.defense.inputs`.

Units: gaze in radians unless a name ends in ``_deg``; images (N, S, S, 3) uint8 RGB or
(N, 3, S, S) float in [0, 1]; perturbation sizes per pixel and channel in [0, 1] units.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from securegaze.defense.report import ScanReport
from securegaze.errors import ConfigError


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


class Detector(ABC):
    """Base class of a backdoor detector: built from its settings, then :meth:`scan` s models.

    Subclasses set ``name`` (the registry name), ``version`` (bumped whenever a change can move
    scores: a threshold is only valid for the version it was calibrated on) and
    ``suspicious_when``, and implement :meth:`settings` and :meth:`scan`.
    """

    name: ClassVar[str] = "detector"
    version: ClassVar[str] = "0"
    suspicious_when: ClassVar[str] = "below"
    #: How a benchmark models this detector's benign scores to calibrate its threshold
    #: (``securegaze.bench.calibration.fit_threshold``): ``"auto"`` (log-normal when positive, else
    #: normal) or ``"logit"`` for a score that is a share in [0, 1].
    calibration_fit: ClassVar[str] = "auto"
    #: Named settings variants for ablation studies, e.g. ``{"unweighted": {"sensitivity_weighting":
    #: False}}``; benchmarks ask for them by name and never learn a detector's setting names.
    ablations: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Ablations whose reversed triggers mitigation unlearns as well as the detector's own (a
    #: trigger-reversing detector may find a different, equally real edit under another pricing).
    unlearn_also: ClassVar[tuple[str, ...]] = ()
    #: Settings for a smoke run of a few seconds on a tiny model (the contract tests, a quick check of
    #: an installation); the figures of such a run mean nothing.
    smoke_settings: ClassVar[Mapping[str, Any]] = {}

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

    def with_settings(self, **changes) -> Detector:
        """A detector of the same kind with some settings changed (e.g. ``threshold=``)."""
        return type(self)(**{**self.settings(), **changes})

    def single_run(self) -> Detector:
        """This detector deciding from one run of its search: what a threshold is calibrated on. The base
        class's scans are one run; a detector that puts a flag to the vote of more runs (SecureGaze's
        ``confirm_seeds``) returns itself without the vote."""
        return self

    def redecided(self, report: ScanReport) -> ScanReport:
        """``report`` (made by this detector's kind and version, perhaps under other decision
        settings: a cached one) as these settings decide it. The base class's scores do not depend on
        the threshold, and whoever decides compares them with a threshold: the report as it is. A
        detector whose score embeds its thresholds overrides this."""
        return report

    def ablation(self, name: str) -> Detector:
        """This detector with the named ablation's settings applied (see :attr:`ablations`)."""
        if name not in self.ablations:
            known = ", ".join(sorted(self.ablations)) or "none"
            raise ConfigError(f"{self.name}: unknown ablation {name!r}; expected one of: {known}")
        return self.with_settings(**self.ablations[name])


@runtime_checkable
class ReversedTrigger(Protocol):
    """What a trigger-reversing detector found: an edit ``generator`` (a module mapping (N, 3, S, S)
    images in [0, 1] to triggered ones; ``generator(x, strength)`` applies the edit ``strength`` times
    as deep) and the ``target_gaze`` (pitch, yaw) radians its edits collapse onto."""

    generator: torch.nn.Module
    target_gaze: tuple[float, float]
    constraints_met: bool


@runtime_checkable
class ReversesTrigger(Protocol):
    """A detector that reverse-engineers a trigger, which mitigation can then unlearn."""

    def reverse(self, model, clean_images, progress: ProgressCallback | None = None) -> ReversedTrigger:
        """Reverse-engineer the trigger of ``model`` (frozen, not modified) from clean images."""

    def report(self, reversal, model_sha256: str | None = None, runtime_s: float = 0.0) -> ScanReport:
        """The scan report of a finished reversal."""

    def write_artifacts(self, reversal, report: ScanReport, artifacts_dir: str | Path) -> ScanReport:
        """Write the reversal's files (pictures, generator) and return the report naming them."""
