"""``edge-app calibrate driver``: fit one driver's gaze correction from a few looks at known targets.

Targets (``--targets``): ``cabin`` (default), the fixed points of the cabin in the zone map
(``DEFAULT_CABIN_TARGETS``: road ahead, the three mirrors, the instrument cluster, the centre
screen; the phone on the lap is no fixed point), ``screen9`` (a 3 x 3 grid of dots on a laptop
screen below the camera, for desk prototypes; :class:`~edge_app.trial.protocol.ScreenGeometry`),
or a comma list of zone names. Each is looked at for ``--dwell-s`` (2 s by default;
:mod:`~edge_app.calibrate.gaze_session` prompts and records).

The fit (:func:`fit_correction`) works in the normalised frame, degrees, where the correction is
applied (:mod:`~edge_app.calibrate.gaze_correction`):

1. per target, frames whose residual (target minus model gaze) lies more than ``FRAME_OUTLIER_K``
   robust standard deviations (1.4826 MAD, at least ``FRAME_OUTLIER_FLOOR_DEG``) from the
   target's median are dropped (blinks, a glance away); a target needs ``MIN_FRAMES_PER_TARGET``
   frames left;
2. the corrections are fitted on the per-target medians: a bias (the mean residual) and, with
   ``MIN_AFFINE_TARGETS`` targets spread over ``MIN_AFFINE_SPAN_DEG`` in pitch and in yaw, a small
   affine map pulled towards the identity (ridge ``AFFINE_RIDGE_DEG2``: a model's gain error at
   large head turns is linear in the angle, an eye's offset is a bias); the target furthest from
   the most flexible allowed fit is left out while it is over ``TARGET_OUTLIER_DEG`` (the driver
   looked elsewhere), keeping at least ``MIN_TARGETS`` and ``MIN_TARGET_SHARE`` of the targets;
3. ``--fit auto`` keeps the affine correction only when its leave-one-target-out error is under
   ``AFFINE_GAIN`` times the bias's;
4. refused when the residual left is over ``MAX_FIT_RMS_DEG`` RMS, or the correction is not a
   personal offset (over ``MAX_BIAS_DEG``, or a linear part outside ``MATRIX_RANGE``).

The figures before/after are angular errors (deg) between the per-target median gaze and target.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.calibrate.gaze_correction import FORMAT, MATRIX_RANGE, MAX_BIAS_DEG, GazeCorrection
from edge_app.calibrate.gaze_session import TargetRecord
from edge_app.calibrate.yaml_out import utc_now, write_yaml
from edge_app.trial.protocol import Protocol, ScreenGeometry, TrialTarget, gaze_towards
from securegaze.errors import CalibrationError, ConfigError

DEFAULT_CABIN_TARGETS = ("road_ahead", "left_mirror", "rear_view_mirror", "right_mirror", "instrument_cluster",
                         "infotainment")
FRAME_OUTLIER_K = 3.0
FRAME_OUTLIER_FLOOR_DEG = 1.0
MIN_FRAMES_PER_TARGET = 4
TARGET_OUTLIER_DEG = 4.0
MIN_TARGETS = 3
MIN_TARGET_SHARE = 0.6
MIN_AFFINE_TARGETS = 5
MIN_AFFINE_SPAN_DEG = 10.0
#: The identity weighs as much as targets spread 5 deg (a pull towards a pure offset).
AFFINE_RIDGE_DEG2 = 25.0
AFFINE_GAIN = 0.8
MAX_FIT_RMS_DEG = 3.0
FIT_KINDS = ("auto", "bias", "affine")


def driver_protocol(targets: str, zone_map, dwell_s: float) -> Protocol:
    """The targets of ``--targets`` (see the module docstring) as a one-pass protocol."""
    if targets == "screen9":
        geo = ScreenGeometry()
        face = geo.nominal_face_mm()
        items = []
        for row, v in enumerate((0.0, 0.5, 1.0)):
            for col, u in enumerate((0.0, 0.5, 1.0)):
                x = (geo.width_mm / 2 - geo.inset_mm) * (1 - 2 * u)  # u=0: the participant's left, image +x
                y = geo.camera_above_top_mm + geo.inset_mm + v * (geo.height_mm - 2 * geo.inset_mm)
                point = np.array([x, y, 0.0])
                gaze = np.degrees(gaze_towards(point, face))
                items.append(TrialTarget(f"dot_{row}{col}", f"look at the dot ({row + 1}, {col + 1})",
                                         (float(gaze[0]), float(gaze[1])), (float(x), float(y), 0.0), (u, v)))
        return Protocol("screen9", tuple(items), dwell_s)
    names = DEFAULT_CABIN_TARGETS if targets == "cabin" else tuple(n.strip() for n in targets.split(",") if n.strip())
    where = zone_map.targets_deg()
    missing = [n for n in names if n not in where]
    if missing or not names:
        raise ConfigError(f"--targets {targets}: the zone map has no target point for {', '.join(missing) or '-'}; "
                          f"expected cabin, screen9 or zone names among {', '.join(where)}")
    if len(set(names)) < MIN_TARGETS:
        raise ConfigError(f"--targets {targets}: need at least {MIN_TARGETS} different targets")
    items = tuple(TrialTarget(n, f"look at the {n.replace('_', ' ')}", tuple(float(v) for v in where[n]))
                  for n in dict.fromkeys(names))
    return Protocol("cabin", items, dwell_s)


@dataclass(frozen=True)
class TargetFit:
    """One target in the fit: frames recorded / with a gaze / kept, whether it was used, its
    median residual (target - gaze) in deg (pitch, yaw), and the angular error before and after
    the correction, deg (None: not enough frames)."""

    name: str
    frames: int
    faces: int
    kept: int
    used: bool
    residual_deg: tuple[float, float] | None
    before_deg: float | None
    after_deg: float | None
    note: str = ""


@dataclass(frozen=True)
class DriverFit:
    """The fitted correction and its figures: RMS over the used targets before and after (deg),
    leave-one-target-out RMS of the chosen kind, and per target (:class:`TargetFit`)."""

    correction: GazeCorrection
    targets: tuple[TargetFit, ...]
    rms_before_deg: float
    rms_after_deg: float
    loo_rms_deg: float
    frames_used: int
    frames_dropped: int


def _angle_deg(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """Angles (deg) between (..., 2) (pitch, yaw) degree gazes."""
    from securegaze.geometry import angular_error_deg

    return np.asarray(angular_error_deg(np.radians(a_deg), np.radians(b_deg)), dtype=np.float64)


def _fit_bias(pred: np.ndarray, target: np.ndarray):
    return np.eye(2), (target - pred).mean(axis=0)


def _fit_affine(pred: np.ndarray, target: np.ndarray):
    """target ~ M pred + b by least squares plus AFFINE_RIDGE_DEG2 * n * ||M - I||^2 (n targets)."""
    x = pred - pred.mean(axis=0)
    ridge = AFFINE_RIDGE_DEG2 * len(pred) * np.eye(2)
    # (X^T X + R) (M - I)^T = X^T (T - P) on the centred model gazes; b follows from the means.
    delta = np.linalg.solve(x.T @ x + ridge, x.T @ (target - pred))
    m = np.eye(2) + delta.T
    b = target.mean(axis=0) - m @ pred.mean(axis=0)
    return m, b


def _rms(m, b, pred, target) -> float:
    return float(np.sqrt(np.mean(_angle_deg(pred @ m.T + b, target) ** 2)))


def _loo_rms(fit, pred, target) -> float:
    errors = []
    for i in range(len(pred)):
        keep = np.arange(len(pred)) != i
        m, b = fit(pred[keep], target[keep])
        errors.append(float(_angle_deg(pred[i] @ m.T + b, target[i])))
    return float(np.sqrt(np.mean(np.square(errors))))


def _robust_frames(record: TargetRecord) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) degrees (K, 2) of the frames kept for one target (step 1)."""
    pred, target = np.degrees(np.asarray(record.pred_norm)), np.degrees(np.asarray(record.target_norm))
    residual = target - pred
    dev = np.linalg.norm(residual - np.median(residual, axis=0), axis=1)
    limit = max(FRAME_OUTLIER_K * 1.4826 * float(np.median(dev)), FRAME_OUTLIER_FLOOR_DEG)
    keep = dev <= limit
    return pred[keep], target[keep]


def _affine_allowed(target: np.ndarray) -> bool:
    return len(target) >= MIN_AFFINE_TARGETS and bool(np.all(np.ptp(target, axis=0) >= MIN_AFFINE_SPAN_DEG))


def _reject_targets(names: list[str], pred: np.ndarray, target: np.ndarray, kind: str, need: int, driver_id: str,
                    lost: list[str]) -> tuple[list[int], str]:
    """Step 2: indices of the targets kept and the most flexible kind allowed on them. The worst
    target is dropped while it is over TARGET_OUTLIER_DEG from the fit of the others' kind."""
    used = list(range(len(names)))
    while True:
        flexible = "affine" if kind != "bias" and _affine_allowed(target[used]) else "bias"
        fit = _fit_affine if flexible == "affine" else _fit_bias
        m, b = fit(pred[used], target[used])
        errors = _angle_deg(pred[used] @ m.T + b, target[used])
        worst = int(np.argmax(errors))
        if errors[worst] <= TARGET_OUTLIER_DEG:
            return used, flexible
        lost.append(f"{names[used[worst]]} (off the {flexible} fit of the others by {errors[worst]:.1f} deg)")
        if len(used) - 1 < need:
            raise CalibrationError(f"driver {driver_id}: only {len(used) - 1} of the targets agree, need {need}; "
                                   f"not usable: {'; '.join(lost)}. Look at each target while it is prompted, with "
                                   "the face in view")
        used.pop(worst)


def fit_correction(records: list[TargetRecord], driver_id: str, kind: str = "auto",
                   gaze_model_sha256: str | None = None) -> DriverFit:
    """The driver's correction from a session's records (see the module docstring)."""
    if kind not in FIT_KINDS:
        raise ConfigError(f"--fit must be one of {', '.join(FIT_KINDS)}, got {kind!r}")
    rows, names, medians, kept, lost, dropped = {}, [], [], {}, [], 0
    for r in records:
        name = r.target.name
        pred, target = _robust_frames(r) if r.faces else (np.zeros((0, 2)), np.zeros((0, 2)))
        dropped += r.faces - len(pred)
        if len(pred) < MIN_FRAMES_PER_TARGET:
            note = (f"{r.faces} frames with a gaze of {r.frames}" if r.faces < MIN_FRAMES_PER_TARGET
                    else f"only {len(pred)} steady frames of {r.faces}")
            rows[name] = TargetFit(name, r.frames, r.faces, len(pred), False, None, None, None, note)
            lost.append(f"{name} ({note})")
            continue
        names.append(name)
        medians.append((np.median(pred, axis=0), np.median(target, axis=0)))
        kept[name] = len(pred)
    need = max(MIN_TARGETS, math.ceil(MIN_TARGET_SHARE * len(records)))
    if len(names) < need:
        raise CalibrationError(f"driver {driver_id}: only {len(names)} of {len(records)} targets have frames, need "
                               f"{need}; not usable: {'; '.join(lost)}. Look at each target while it is prompted, "
                               "with the face in view")
    pred_all = np.array([p for p, _ in medians])
    target_all = np.array([t for _, t in medians])
    used, flexible = _reject_targets(names, pred_all, target_all, kind, need, driver_id, lost)
    pred, target = pred_all[used], target_all[used]
    if kind == "affine" and flexible != "affine":
        spread = np.ptp(target, axis=0)
        raise CalibrationError(f"driver {driver_id}: an affine fit needs {MIN_AFFINE_TARGETS} usable targets spread "
                               f"{MIN_AFFINE_SPAN_DEG:g} deg in pitch and yaw; got {len(used)} over "
                               f"{spread[0]:.1f} x {spread[1]:.1f} deg (use --fit bias)")
    fits = {"bias": _fit_bias, "affine": _fit_affine} if flexible == "affine" else {"bias": _fit_bias}
    loo = {k: _loo_rms(f, pred, target) for k, f in fits.items()}
    chosen = flexible if kind != "bias" else "bias"
    if kind == "auto" and chosen == "affine" and not loo["affine"] < AFFINE_GAIN * loo["bias"]:
        chosen = "bias"
    m, b = fits[chosen](pred, target)
    sv = np.linalg.svd(m, compute_uv=False)
    if chosen == "affine" and not (MATRIX_RANGE[0] <= sv.min() and sv.max() <= MATRIX_RANGE[1]):
        raise CalibrationError(f"driver {driver_id}: the affine fit scales the gaze by {sv.min():.2f}-{sv.max():.2f}, "
                               f"outside {MATRIX_RANGE[0]:g}-{MATRIX_RANGE[1]:g}: the looks do not follow the targets")
    before = _rms(np.eye(2), np.zeros(2), pred, target)
    after = _rms(m, b, pred, target)
    if np.hypot(*b) > MAX_BIAS_DEG:
        raise CalibrationError(f"driver {driver_id}: the fitted offset ({b[0]:+.1f}, {b[1]:+.1f}) deg is over "
                               f"{MAX_BIAS_DEG:g} deg, more than an eye's: check the targets (--targets) and the camera")
    if after > MAX_FIT_RMS_DEG:
        raise CalibrationError(f"driver {driver_id}: poor fit, {after:.2f} deg RMS left over {len(used)} targets "
                               f"(limit {MAX_FIT_RMS_DEG:g}): the looks disagree; run the calibration again")
    for i, name in enumerate(names):
        r = next(x for x in records if x.target.name == name)
        p, t = medians[i]
        note = "" if i in used else next(x for x in lost if x.startswith(name + " "))[len(name) + 2:-1]
        rows[name] = TargetFit(name, r.frames, r.faces, kept[name], i in used, (float(t[0] - p[0]), float(t[1] - p[1])),
                               float(_angle_deg(p, t)), float(_angle_deg(m @ p + b, t)), note)
    correction = GazeCorrection(driver_id, chosen, m, b, gaze_model_sha256)
    frames_used = sum(kept[names[i]] for i in used)
    return DriverFit(correction, tuple(rows[r.target.name] for r in records), before, after, loo[chosen],
                     frames_used, dropped)


def write_driver_yaml(fit: DriverFit, out: str | os.PathLike, source: str, targets: str) -> Path:
    """Write the driver's calibration file atomically, read back by
    :func:`~edge_app.calibrate.gaze_correction.read_gaze_correction` first."""
    from edge_app.calibrate.gaze_correction import read_gaze_correction

    c = fit.correction
    when = utc_now()
    header = (f"Gaze calibration of driver {c.driver_id}, written {when} by\n"
              f"  edge-app calibrate driver --driver-id {c.driver_id} --source {source} --targets {targets}\n"
              "Applied by edge-app run --driver ID (or driver.id in the config) to the model's gaze in the normalised\n"
              "camera frame: corrected_deg = matrix @ (pitch_deg, yaw_deg) + bias_deg (docs/calibration.md).\n"
              f"Error over the targets: {fit.rms_before_deg:.2f} deg RMS before, {fit.rms_after_deg:.2f} after "
              f"(leave-one-target-out {fit.loo_rms_deg:.2f}).")
    data = {
        "format": FORMAT,
        "driver_id": c.driver_id,
        "created_utc": when,
        "correction": c.kind,
        "frame": "normalised",
        "matrix": [[float(v) for v in row] for row in c.matrix],
        "bias_deg": [float(v) for v in c.bias_deg],
        "gaze_model_sha256": c.gaze_model_sha256,
        "fit": {
            "source": source,
            "targets": targets,
            "rms_before_deg": fit.rms_before_deg,
            "rms_after_deg": fit.rms_after_deg,
            "loo_rms_deg": fit.loo_rms_deg,
            "frames_used": fit.frames_used,
            "frames_dropped": fit.frames_dropped,
            "per_target": {t.name: {"frames": t.frames, "with_gaze": t.faces, "kept": t.kept, "used": t.used,
                                    "before_deg": t.before_deg, "after_deg": t.after_deg}
                           for t in fit.targets},
        },
    }
    return write_yaml(out, data, header, check=read_gaze_correction)
