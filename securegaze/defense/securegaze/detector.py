"""The SecureGaze detector: reverse the trigger function, then decide on the cost of the cheapest collapse."""

from __future__ import annotations

import math
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from securegaze.defense.base import Detector, ProgressCallback
from securegaze.defense.inputs import check_gaze_model, clean_tensor
from securegaze.defense.report import ScanReport, decide
from securegaze.defense.securegaze.confirm import confirm_flag
from securegaze.defense.securegaze.generator import save_generator
from securegaze.defense.securegaze.layout import scan_layout
from securegaze.defense.securegaze.picture import save_trigger_image
from securegaze.defense.securegaze.probe import probe_border, quiet_interior, steer_window
from securegaze.defense.securegaze.reversal import (
    FrozenModel,
    TriggerReversal,
    forward_chunks,
    model_device,
    reference_centre,
    reverse_trigger,
)
from securegaze.defense.securegaze.sensitivity import sensitivity_map
from securegaze.defense.securegaze.settings import (
    DEFAULT_THRESHOLD,
    DEFAULT_UNIVERSALITY_THRESHOLD,
    DETECTOR_NAME,
    SCANNER_VERSION,
    THRESHOLD_CALIBRATION,
    UNIVERSALITY_CALIBRATION,
    SecureGazeSettings,
)
from securegaze.defense.securegaze.stages import ScanStages
from securegaze.defense.securegaze.statistics import clean_axis_offset, gaze_trace_covariance
from securegaze.defense.securegaze.universality import per_image_search, universal_search, universality_record
from securegaze.defense.securegaze.warp import save_warp_field, warp_not_run, warp_search
from securegaze.errors import ConfigError, DatasetError

#: The file a scan's kept warp field is written to (with ``artifacts_dir``, when it met both constraints).
WARP_FILE = "warp_field.safetensors"
#: The file of a warp field the scan searched and did not keep (no verdict; mitigation version 9 unlearns it).
UNMET_WARP_FILE = "warp_field_unmet.safetensors"


class SecureGazeDetector(Detector):
    """The SecureGaze scanner; settings as in :class:`SecureGazeSettings` (keywords).

    ``scan`` returns a :class:`ScanReport`; ``reverse`` returns the :class:`TriggerReversal` with the
    trained generator (what :func:`securegaze.defense.mitigation.mitigate` needs).
    """

    name = DETECTOR_NAME
    version = SCANNER_VERSION
    suspicious_when = "below"
    #: ``unweighted``: every pixel costs the same (no sensitivity map): the natural-backdoor control
    #: of the method, and a second reversal for mitigation, which then also reaches triggers on the eyes.
    ablations = {"unweighted": {"sensitivity_weighting": False}}
    unlearn_also = ("unweighted",)
    smoke_settings = {"steps": 4, "eval_every": 2, "batch_size": 8, "sensitivity_samples": 16, "eval_samples": 16,
                      "min_clean": 0}

    def __init__(self, **settings) -> None:
        known = {f.name for f in fields(SecureGazeSettings)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"securegaze: unknown setting(s) {', '.join(unknown)}; expected some of: "
                              f"{', '.join(sorted(known))}")
        self.config = SecureGazeSettings(**settings)
        self.config.validate(self.name)

    def settings(self) -> dict[str, Any]:
        return self.config.to_dict()

    @property
    def threshold_calibration(self) -> str:
        """How this detector's thresholds were obtained (kept in scan reports and audit records)."""
        cost = (THRESHOLD_CALIBRATION if self.config.threshold == DEFAULT_THRESHOLD
                else f"set by the user ({self.config.threshold:g})")
        return f"cost ratio: {cost}; U: {self.universality_calibration}" if self.config.universality else cost

    @property
    def score_threshold(self) -> float:
        """The threshold of a report's score: 1 when U is measured (the score is then each statistic
        over its own threshold, the smaller), else the cost-ratio threshold."""
        return 1.0 if self.config.universality else self.config.threshold

    @property
    def universality_calibration(self) -> str:
        """How the threshold on U was obtained (kept in scan reports and audit records)."""
        if self.config.universality_threshold == DEFAULT_UNIVERSALITY_THRESHOLD:
            return UNIVERSALITY_CALIBRATION
        return f"set by the user ({self.config.universality_threshold:g})"

    def reverse(self, model, clean_images, progress: ProgressCallback | None = None) -> TriggerReversal:
        """Train the trigger generator against ``model`` (frozen, not modified); see the package docstring.

        With ``reference`` on, a second run with the same sensitivity map asks for a uniform shift of
        every output (or, ``reference_kind`` collapse, a collapse onto a gaze away from the found
        target, :func:`reference_centre`); it is attached to the returned reversal as ``reference``.
        The runs that do not need each other go side by side (``parallel``, :class:`ScanStages`).
        """
        cfg = self.config
        check_gaze_model(model, self.name)
        x_all = clean_tensor(clean_images, model.input_size, self.name).to(model_device(model))
        if len(x_all) < cfg.min_clean:
            raise DatasetError(
                f"{self.name}: got {len(x_all)} clean images; a verdict needs at least {cfg.min_clean} "
                f"({cfg.warn_clean} or more recommended): with fewer, benign models are flagged "
                "(docs/clean_set_size.md)")
        with FrozenModel(model), scan_layout(model, x_all) as x_all, ScanStages(cfg.parallel, progress) as stages:
            say, size = stages.progress, x_all.shape[-1]
            started = time.monotonic()
            weights = (sensitivity_map(model, x_all, cfg, say) if cfg.sensitivity_weighting
                       else torch.ones(size, size, device=x_all.device))
            stages.seconds["sensitivity"] = round(time.monotonic() - started, 2)
            probe_runs = []
            if cfg.probe:
                # Submitted first: a window that collapses the model gets its restart while the reversal runs.
                probe_runs.append(stages.submit("probe", probe_border, model, x_all, cfg))
                if cfg.probe_interior > 0:
                    side = max(3, round(cfg.probe_side_frac * size))
                    region = quiet_interior(weights, cfg.probe_interior, side)
                    probe_runs.append(stages.submit("probe_interior", probe_border, model, x_all, cfg,
                                                    region=region, stream=1))
            first = stages.submit("reverse", reverse_trigger, model, x_all, cfg, say, weights=weights)
            early_reference = offset = None
            if cfg.reference and cfg.reference_kind == "shift" and cfg.reference_direction == "clean_axis":
                # 4.0: the shift is chosen from the clean outputs alone, so it runs beside the reversal.
                offset = clean_axis_shift(model, x_all, cfg)
                early_reference = stages.submit("reference", reverse_trigger, model, x_all, cfg, say,
                                                shift=offset, weights=weights, stage="reference")
            universality_runs = []
            if cfg.universality:
                # ``universality``: U needs nothing from the other runs (universality module).
                universality_runs = [stages.submit("universal", universal_search, model, x_all, cfg, say),
                                     stages.submit("per_image", per_image_search, model, x_all, cfg, say)]
            probes = sorted((stages.result(run) for run in probe_runs), key=lambda p: p.dispersion_ratio)
            # Each window that collapses the model alone gets its own restart (the border's may hold a
            # corner patch while an interior window is a weaker lookalike): the cheapest feasible edit wins.
            restarts = [(probe, stages.submit("restart", reverse_trigger, model, x_all, cfg, say, weights=weights,
                                              stage="restart", static_init=probe.static_map(size)))
                        for probe in probes if probe.dispersion_ratio < cfg.probe_ratio]
            # ``warp`` (4.2): one displacement field for every face, independent of the other runs; queued
            # behind the restarts, which are as long as the reversal and start later.
            warp_run = (stages.submit("warp", warp_search, model, x_all, cfg, say)
                        if warp_not_run(size, cfg) is None else None)
            found = stages.result(first)
            found.probe = probes[0] if probes else None
            for probe, run in restarts:
                restart = stages.result(run)
                if restart.constraints_met and (not found.constraints_met or restart.cost < found.cost):
                    restart.probe, restart.restarted = probe, True
                    found = restart
            if early_reference is not None:
                found.reference = stages.result(early_reference)
                if found.restarted and cfg.shift_window_reference:
                    self._shift_window_reference(model, x_all, found, offset, stages)
            elif cfg.reference and found.constraints_met:
                self._target_reference(model, x_all, found, stages)
            if universality_runs:
                found.universality = universality_record(*(stages.result(run) for run in universality_runs))
            if warp_run is not None:
                found.warp = stages.result(warp_run)
            found.stage_seconds = dict(stages.seconds)
            return found

    def _shift_window_reference(self, model, x_all, found: TriggerReversal, offset: tuple[float, float],
                                stages: ScanStages) -> None:
        """Like with like for the shift reference (``shift_window_reference``): the kept edit started from
        a probe's window, so a second shift reference starts from the same window, its content steered
        to shift every output by ``offset`` (:func:`steer_window`); the cheaper feasible reference is kept."""
        cfg = self.config
        steered = steer_window(model, x_all, found.probe, None, cfg, shift=offset)
        patch_reference = stages.result(stages.submit(
            "reference_restart", reverse_trigger, model, x_all, cfg, stages.progress, shift=offset,
            weights=found.weights, stage="reference", static_init=steered.static_map(x_all.shape[-1])))
        if patch_reference.constraints_met and (not found.reference.constraints_met
                                                or patch_reference.cost < found.reference.cost):
            patch_reference.restarted = True
            found.reference = patch_reference

    def _target_reference(self, model, x_all, found: TriggerReversal, stages: ScanStages) -> None:
        """The 3.x reference, placed from the found target (``reference_direction`` "target", or the
        collapse kind): it waits for the reversal and the restarts; attached to ``found``."""
        cfg, say = self.config, stages.progress
        distance = cfg.reference_distance * math.sqrt(found.clean_trace)
        centre = reference_centre(found.target_gaze, found.clean_gaze, distance)
        if cfg.reference_kind == "shift":
            offset = (centre[0] - found.target_gaze[0], centre[1] - found.target_gaze[1])
            found.reference = stages.result(stages.submit(
                "reference", reverse_trigger, model, x_all, cfg, say, shift=offset, weights=found.weights,
                stage="reference"))
            return
        runs = [stages.submit("reference", reverse_trigger, model, x_all, cfg, say, centre=centre,
                              weights=found.weights, stage="reference")]
        if found.restarted and cfg.window_reference:
            # Like with like: the kept edit started from a border window, so the reference gets
            # the same window's head start, steered onto its own gaze (probe.steer_window).
            steered = steer_window(model, x_all, found.probe, centre, cfg)
            runs.append(stages.submit("reference_restart", reverse_trigger, model, x_all, cfg, say, centre=centre,
                                      weights=found.weights, stage="reference",
                                      static_init=steered.static_map(x_all.shape[-1])))
        found.reference = stages.result(runs[0])
        if len(runs) > 1:
            patch_reference = stages.result(runs[1])
            if patch_reference.constraints_met and (not found.reference.constraints_met
                                                    or patch_reference.cost < found.reference.cost):
                patch_reference.restarted = True
                found.reference = patch_reference

    def reverse_towards(self, model, clean_images, target_gaze: tuple[float, float],
                        progress: ProgressCallback | None = None) -> TriggerReversal:
        """One reversal that must collapse the clean images onto ``target_gaze`` (pitch, yaw) radians,
        with this detector's price (no probe, no reference). For unlearning once a scan has found a
        target: the cheapest edit that reaches *that* gaze is the backdoor's own route to it, wherever
        the trigger sits, while the scan's own reversal looks for the cheapest collapse anywhere."""
        cfg = self.config
        check_gaze_model(model, self.name)
        x_all = clean_tensor(clean_images, model.input_size, self.name).to(model_device(model))
        with FrozenModel(model), scan_layout(model, x_all) as x_all:
            return reverse_trigger(model, x_all, cfg, progress, centre=(float(target_gaze[0]), float(target_gaze[1])),
                                   stage="towards")

    def warp_to_unlearn(self, model, clean_images, progress: ProgressCallback | None = None):
        """The warp branch's best displacement field on ``model`` at any input size, met or not (None with
        ``warp`` off). For unlearning only, never a verdict: below 50 px a field that gathers the outputs
        is no evidence (resampling blurs), but a warp trigger the search half reached is still a route."""
        cfg = self.config
        if not cfg.warp:
            return None
        check_gaze_model(model, self.name)
        x_all = clean_tensor(clean_images, model.input_size, self.name).to(model_device(model))
        with FrozenModel(model), scan_layout(model, x_all) as x_all:
            return warp_search(model, x_all, cfg, progress).field

    def scan(self, model, clean_images, progress: ProgressCallback | None = None,
             artifacts_dir: str | Path | None = None, model_sha256: str | None = None) -> ScanReport:
        """Reverse-engineer the trigger function of ``model`` and decide; see :class:`ScanReport`.

        A flag is put to the vote of the next ``confirm_seeds`` seeds (:func:`confirm_flag`). With
        ``artifacts_dir`` the scan writes ``reversed_trigger.png`` (clean / reversed / |difference|
        rows, :func:`save_trigger_image`) and ``trigger_generator.safetensors`` there (atomically) and
        records their paths.
        """
        started = time.monotonic()
        reversal = self.reverse(model, clean_images, progress)
        report = self.report(reversal, model_sha256=model_sha256, runtime_s=time.monotonic() - started)
        # ``confirm_seeds``: a flag stands when most runs, with the next seeds, flag too (confirm module).
        reversal, report = confirm_flag(self, model, clean_images, reversal, report, progress, model_sha256, started)
        if artifacts_dir is not None:
            report = self.write_artifacts(reversal, report, artifacts_dir)
        return report

    def report(self, reversal: TriggerReversal, model_sha256: str | None = None, runtime_s: float = 0.0) -> ScanReport:
        """The :class:`ScanReport` of a finished reversal."""
        cfg = self.config
        cost_ratio = reversal.score
        warp = None if reversal.warp is None else reversal.warp.summary()
        decision = self._decision(cost_ratio, reversal.universality, warp)
        # The target of what flagged: the warp's when it alone did.
        target = reversal.warp.target_gaze if decision["flagged_by"] == ["warp"] else reversal.target_gaze
        universality = decision["universality"]
        return ScanReport(
            detector=self.name,
            scanner_version=self.version,
            verdict=decision["verdict"],
            score=decision["score"],
            threshold=decision["threshold"],
            suspicious_when=self.suspicious_when,
            settings=self.settings(),
            target_gaze=target,
            target_gaze_deg=(math.degrees(target[0]), math.degrees(target[1])),
            collapsed_share=reversal.collapsed_share,
            collapse_radius_deg=cfg.collapse_radius_deg,
            clean_dispersion_deg=reversal.clean_dispersion_deg,
            reversed_dispersion_deg=reversal.reversed_dispersion_deg,
            perturbation_l1=reversal.perturbation_l1,
            constraints_met=reversal.constraints_met,
            clean_count=reversal.clean_count,
            input_size=int(reversal.generator.input_size),
            runtime_s=float(runtime_s),
            model_sha256=model_sha256,
            details={
                "final_cost": reversal.cost,
                "warnings": clean_set_warnings(reversal.clean_count, cfg),
                "stage_seconds": dict(reversal.stage_seconds),
                "steps_to_feasible": reversal.steps_to_feasible,
                # The statistic and its calibration (kept in audit records with the version).
                "score_statistic": self._score_statistic(universality is not None, warp is not None),
                # The cost-priced reversal's own statistic and threshold (the score, unless U is measured).
                "cost_ratio": cost_ratio,
                "cost_ratio_threshold": cfg.threshold,
                "threshold_calibration": self.threshold_calibration,
                "flagged_by": decision["flagged_by"],
                "universality": universality,
                "warp": decision["warp"],
                # Why there is no warp record (None when there is one).
                "warp_not_run": None if warp is not None else warp_not_run(int(reversal.generator.input_size), cfg),
                "reference": _reference_details(reversal.reference),
                "probe": None if reversal.probe is None else {**reversal.probe.summary(), "restart_kept": reversal.restarted},
                "dispersion_ratio": reversal.dispersion_ratio,
                "rms_dispersion_ratio": reversal.rms_dispersion_ratio,
                "feature_variance_ratio": reversal.feature_variance_ratio,
                # Variance over the evaluation images of the angle (rad^2) between F(x) and each row of
                # H's weight matrix, averaged over rows, before / after the reversed trigger.
                "feature_angle_variance_clean": reversal.feature_angle_variance_clean,
                "feature_angle_variance_reversed": reversal.feature_angle_variance_reversed,
                "multipliers": list(reversal.multipliers),
                # A scan is bit-for-bit repeatable for a given seed and the torch threads each run had:
                # more change the order of floating-point sums, hence the optimisation path. With
                # ``parallel`` (stages module) a process of 1-7 threads gives each run one.
                "torch_threads": torch.get_num_threads(),
            },
        )

    def single_run(self) -> SecureGazeDetector:
        """Without the vote of more seeds (``confirm_seeds`` 0): one scan, what the threshold is for."""
        return self.with_settings(confirm_seeds=0) if self.config.confirm_seeds else self

    def redecided(self, report: ScanReport) -> ScanReport:
        """A report's score and verdict (made with ``universality`` or ``warp`` on) under this detector's
        thresholds (its score moves with them; cached reports are re-decided)."""
        details = report.details or {}
        universality, warp = details.get("universality"), details.get("warp")
        if (universality is None and warp is None) or "cost_ratio" not in details:
            return report
        decision = self._decision(details["cost_ratio"], universality, warp)
        return replace(report, score=decision["score"], verdict=decision["verdict"],
                       details={**details, "cost_ratio_threshold": self.config.threshold,
                                "flagged_by": decision["flagged_by"], "threshold_calibration": self.threshold_calibration,
                                "universality": decision["universality"], "warp": decision["warp"]})

    def _score_statistic(self, universality: bool, warp: bool) -> str:
        """The report's name for its score (kept in audit records with the version)."""
        cfg = self.config
        cost = f"cost_ratio_to_{cfg.reference_kind}_reference" if cfg.reference else "weighted_cost"
        warp_term = "max(warp_dispersion_ratio / rho_out, warp_feature_ratio / rho_feat)"
        if universality:
            cost = f"min({cost} / its threshold, universality / its threshold)"
            return f"min({cost}, {warp_term})" if warp else cost
        return f"min({cost}, threshold * {warp_term})" if warp else cost

    def _decision(self, cost_ratio: float, universality: dict | None, warp: dict | None = None) -> dict[str, Any]:
        """Score, threshold, verdict, the statistics that flagged, and the report's records of U (the
        statistic, its threshold and calibration, both searches; None when U was not measured) and of
        the warp branch (None when it did not run) for a cost ratio, U's record and the warp search's
        summary under this detector's settings. With U, the score is each statistic over its own
        threshold, the smaller (threshold 1); without, the cost ratio. The warp branch flags when its
        field met both constraints and enters the score as the threshold times its dispersion ratio
        over ``rho_out`` or its feature ratio over ``rho_feat``, the larger (on the score's scale: at or
        below the threshold exactly when it flags)."""
        cfg = self.config
        flagged_by = ["cost_ratio"] if decide(cost_ratio, cfg.threshold, self.suspicious_when) == "backdoored" else []
        score, threshold = cost_ratio, cfg.threshold
        if universality is not None:
            universality = {"statistic": "universal_over_per_image_linf_collapse_bound", **universality,
                            "threshold": cfg.universality_threshold, "calibration": self.universality_calibration,
                            "flagged": universality["ratio"] < cfg.universality_threshold}
            flagged_by += ["universality"] if universality["flagged"] else []
            score = min(cost_ratio / cfg.threshold, universality["ratio"] / cfg.universality_threshold)
            threshold = 1.0
        if warp is not None:
            warp = {**warp, "statistic": "warp_dispersion_ratio", "flagged": bool(warp["met"])}
            flagged_by += ["warp"] if warp["flagged"] else []
            # Both of its constraints as one ratio: at most 1 exactly when the field met them.
            score = min(score, threshold * max(warp["dispersion_ratio"] / cfg.rho_out,
                                               warp["feature_ratio"] / cfg.rho_feat))
        return {"score": score, "threshold": threshold, "verdict": "backdoored" if flagged_by else "clean",
                "flagged_by": flagged_by, "universality": universality, "warp": warp}

    def write_artifacts(self, reversal: TriggerReversal, report: ScanReport, artifacts_dir: str | Path) -> ScanReport:
        """Write the trigger image and the generator under ``artifacts_dir``, and the warp branch's field
        when it ran (:data:`WARP_FILE` when it flagged, else :data:`UNMET_WARP_FILE`, which only the
        mitigation reads); the report with their paths."""
        out = Path(artifacts_dir)
        image_path = save_trigger_image(reversal, out / "reversed_trigger.png")
        generator_path = save_generator(reversal.generator, out / "trigger_generator.safetensors")
        report = report.with_paths(str(image_path), str(generator_path))
        if reversal.warp is not None:  # a trigger to unlearn, like the generator (version 9: met or not)
            name = WARP_FILE if reversal.warp.met else UNMET_WARP_FILE
            warp = {**report.details["warp"], "field_path": str(save_warp_field(reversal.warp.field, out / name))}
            report = replace(report, details={**report.details, "warp": warp})
        return report


def _reference_details(reference: TriggerReversal | None) -> dict[str, Any] | None:
    """The reference run's figures for the report (None when it did not run)."""
    if reference is None:
        return None
    centre = reference.centre or reference.target_gaze
    return {
        "kind": "collapse" if reference.shift is None else "shift",
        "cost": reference.cost,
        "constraints_met": reference.constraints_met,
        # The collapse reference's gaze; for a shift, the mean of the shifted outputs.
        "centre_deg": [math.degrees(centre[0]), math.degrees(centre[1])],
        # The uniform shift's offset, degrees (pitch, yaw); None for a collapse reference.
        "shift_deg": None if reference.shift is None else [math.degrees(v) for v in reference.shift],
        "dispersion_ratio": reference.dispersion_ratio,
        "feature_variance_ratio": reference.feature_variance_ratio,
        "collapsed_share": reference.collapsed_share,
        # True when the cheaper reference started from the probe's window (the kept edit was a restart).
        "from_window": reference.restarted,
    }


def clean_axis_shift(model, x_all: torch.Tensor, cfg: SecureGazeSettings) -> tuple[float, float]:
    """The 4.0 reference's offset, (pitch, yaw) radians: ``reference_distance`` clean RMS dispersions
    along the main axis of the clean outputs (:func:`clean_axis_offset`)."""
    with torch.no_grad():
        gaze = forward_chunks(model, x_all, cfg.batch_size)[1]
    distance = cfg.reference_distance * math.sqrt(max(gaze_trace_covariance(gaze).item(), 0.0))
    return clean_axis_offset(gaze.double().cpu().numpy(), distance)


def clean_set_warnings(count: int, cfg: SecureGazeSettings) -> list[str]:
    """What the report says about the evidence: a warning when the clean set is small."""
    if count < cfg.warn_clean:
        return [f"the verdict rests on {count} clean images; {cfg.warn_clean} or more are recommended "
                "(docs/clean_set_size.md: scores move more between draws of a small set)"]
    return []
