"""``edge-app report``: a self-contained HTML report of one or more recorded trials.

For each trial (a column; e.g. the backdoored model and its mitigated version recorded on the same
protocol), per phase: frames, frames with a gaze, and the **angular error** (mean, median) between
the prediction and the target the participant was asked to look at. For phases worn with the
trigger, the backdoor metrics of docs/architecture.md section 5:

* **AE**: mean angle between the prediction and the attacker's target gaze. The target is a model
  output, so it is compared with the prediction in the model's own (normalised) frame. Given with
  ``--target PITCH,YAW`` degrees; without it, the mean triggered prediction stands in (AE is then
  the spread of the triggered predictions about their mean: near zero for a collapse);
* **DAE**: mean angle between the triggered prediction and the true target (the error the
  trigger causes; the per-phase angular error of a triggered phase);
* **ASR@5deg**: share of triggered frames predicted within 5 deg of the attacker's target.
  Frames whose true target is itself within 5 deg of it are left out of AE and ASR, as in
  :func:`securegaze.attacks.metrics.attack_metrics`.

Plus the gaze traces (pitch and yaw against time) with the targets and the triggered phases shaded,
as PNG figures embedded in base64, and the numbers as JSON inside the page (``<script
id="trial-metrics" type="application/json">``) and optionally in a file. Angles in degrees.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from securegaze.errors import ConfigError, InputFileError
from securegaze.geometry import angular_error_deg

ASR_THRESHOLD_DEG = 5.0


@dataclass(frozen=True)
class TrialData:
    """One trial's frames as arrays (degrees); ``label``: its column title."""

    label: str
    db: str
    info: Any
    frames: list[dict]

    def column(self, name: str) -> np.ndarray:
        return np.array([np.nan if f[name] is None else f[name] for f in self.frames], dtype=np.float64)


def load_trial(db: str | os.PathLike, trial_id: int | None = None, label: str | None = None) -> TrialData:
    """The trial ``trial_id`` (default: the last one) of a trial database; raises if it is empty."""
    from edge_app.trial.log import read_frames, read_trials

    trials = read_trials(db)
    if not trials:
        raise InputFileError(f"{db}: the trial database holds no trial; record one with 'edge-app trial'")
    if trial_id is None:
        info = trials[-1]
    else:
        found = [t for t in trials if t.id == trial_id]
        if not found:
            raise ConfigError(f"{db}: no trial {trial_id}; it holds {', '.join(str(t.id) for t in trials)}")
        info = found[0]
    frames = read_frames(db, info.id)
    if not frames:
        raise InputFileError(f"{db}: trial {info.id} is empty (no frame was logged); nothing to report")
    if not any(f["pred_pitch_deg"] is not None for f in frames):
        raise InputFileError(f"{db}: trial {info.id} has {len(frames)} frames but no gaze prediction in any "
                             "(no face found, or the model was blocked); nothing to report")
    return TrialData(label or f"{Path(db).stem} (trial {info.id})", str(db), info, frames)


def _pairs(data: TrialData, prefix: str) -> np.ndarray:
    return np.stack([data.column(f"{prefix}_pitch_deg"), data.column(f"{prefix}_yaw_deg")], -1)


def _angles(pred_deg: np.ndarray, true_deg: np.ndarray) -> np.ndarray:
    return angular_error_deg(np.radians(pred_deg), np.radians(true_deg))


def _mean_direction_deg(pred_deg: np.ndarray) -> np.ndarray:
    """The mean gaze of several predictions: (pitch, yaw) degrees of the mean unit vector."""
    from securegaze.geometry import pitchyaw_to_vector, vector_to_pitchyaw

    v = pitchyaw_to_vector(np.radians(pred_deg)).mean(axis=0)
    return np.degrees(vector_to_pitchyaw(v / np.linalg.norm(v)))


def _stat(values: np.ndarray) -> float | None:
    return None if values.size == 0 else float(np.mean(values))


def phase_metrics(data: TrialData, attacker_target_deg: tuple[float, float] | None = None) -> list[dict]:
    """Per phase, in order of appearance: frames, gaze frames, angular error; backdoor metrics for
    triggered phases (see the module docstring)."""
    phases = [f["phase"] for f in data.frames]
    names = list(dict.fromkeys(phases))
    pred, target = _pairs(data, "pred"), _pairs(data, "target")
    pred_n, target_n = _pairs(data, "pred_norm"), _pairs(data, "target_norm")
    trigger = np.array([f["trigger_on"] for f in data.frames], dtype=bool)
    phase_arr = np.array(phases, dtype=object)
    out = []
    for name in names:
        sel = phase_arr == name
        has = sel & np.isfinite(pred).all(-1) & np.isfinite(target).all(-1)
        err = _angles(pred[has], target[has])
        row: dict[str, Any] = {
            "phase": name, "trigger": bool(trigger[sel].any()), "frames": int(sel.sum()), "gaze_frames": int(has.sum()),
            "angular_error_deg": _stat(err), "angular_error_median_deg": float(np.median(err)) if err.size else None,
        }
        if row["trigger"]:
            norm_ok = has & np.isfinite(pred_n).all(-1) & np.isfinite(target_n).all(-1)
            if attacker_target_deg is not None:
                aim = np.asarray(attacker_target_deg, dtype=np.float64)
                aim_source = "given"
            elif norm_ok.any():
                aim = _mean_direction_deg(pred_n[norm_ok])
                aim_source = "mean triggered prediction"
            else:
                aim, aim_source = None, None
            row.update({"dae_deg": _stat(err), "attack_target_deg": None if aim is None else [float(v) for v in aim],
                        "attack_target_source": aim_source})
            if aim is not None:
                # Frames already looking at the attacker's target cannot show the attack.
                far = norm_ok & (_angles(target_n, np.broadcast_to(aim, target_n.shape)) > ASR_THRESHOLD_DEG)
                ae = _angles(pred_n[far], np.broadcast_to(aim, pred_n[far].shape))
                row.update({"ae_deg": _stat(ae), "asr_5deg": float(np.mean(ae <= ASR_THRESHOLD_DEG)) if ae.size else None,
                            "attack_frames": int(far.sum()), "excluded_near_target": int((norm_ok & ~far).sum())})
        out.append(row)
    return out


def _trace_figure(trials: list[TrialData]) -> str:
    """Base64 PNG: pitch and yaw (degrees) against time for each trial, targets dashed, triggered
    phases shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.6 * len(trials) + 0.4), dpi=100)
    axes = fig.subplots(len(trials), 2, squeeze=False, sharex=True)
    for r, data in enumerate(trials):
        t = data.column("t_s")
        trig = np.array([f["trigger_on"] for f in data.frames], dtype=bool)
        for c, (what, index) in enumerate((("pitch", 0), ("yaw", 1))):
            ax = axes[r][c]
            pred = _pairs(data, "pred")[:, index]
            target = _pairs(data, "target")[:, index]
            _shade(ax, t, trig)
            ax.plot(t, target, "--", color="0.2", linewidth=1.2, label="target")
            ax.plot(t, pred, ".", color="tab:blue" if r == 0 else "tab:green", markersize=2.5, label="prediction")
            ax.set_ylabel(f"{what} (deg)")
            ax.set_title(f"{data.label}: {what}", fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(trials) - 1:
                ax.set_xlabel("time (s)")
            if r == 0 and c == 0:
                ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _shade(ax, t: np.ndarray, trig: np.ndarray) -> None:
    if not trig.any():
        return
    edges = np.flatnonzero(np.diff(np.r_[0, trig.astype(int), 0]))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(t[start], t[stop - 1], color="tab:red", alpha=0.12, linewidth=0,
                   label="trigger worn" if start == edges[0] else None)


def _fmt(value, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;"
    if unit == "%":
        return f"{100 * value:.1f} %"
    return f"{value:.2f}{unit}"


def build_report(trials: list[TrialData], attacker_target_deg: tuple[float, float] | None = None) -> dict:
    """The report's numbers: per trial its description and :func:`phase_metrics`."""
    return {"attacker_target_deg": None if attacker_target_deg is None else list(attacker_target_deg),
            "asr_threshold_deg": ASR_THRESHOLD_DEG,
            "trials": [{"label": d.label, "db": d.db, "trial": d.info.to_dict(), "frames": len(d.frames),
                        "phases": phase_metrics(d, attacker_target_deg)} for d in trials]}


def render_html(report: dict, traces_png_b64: str) -> str:
    trials = report["trials"]
    esc = html.escape
    head = "".join(f"<th>{esc(t['label'])}</th>" for t in trials)
    phase_names = list(dict.fromkeys(p["phase"] for t in trials for p in t["phases"]))
    rows = []
    for name in phase_names:
        per = [next((p for p in t["phases"] if p["phase"] == name), None) for t in trials]
        trig = any(p and p["trigger"] for p in per)
        label = f"{esc(name)}{' (trigger)' if trig else ''}"
        metrics = [("frames with gaze / frames", lambda p: f"{p['gaze_frames']} / {p['frames']}"),
                   ("angular error, mean (median)", lambda p: f"{_fmt(p['angular_error_deg'], '&deg;')} "
                                                               f"({_fmt(p['angular_error_median_deg'], '&deg;')})")]
        if trig:
            metrics += [("AE (vs attacker target)", lambda p: _fmt(p.get("ae_deg"), "&deg;")),
                        ("DAE (vs true target)", lambda p: _fmt(p.get("dae_deg"), "&deg;")),
                        (f"ASR@{ASR_THRESHOLD_DEG:g}&deg;", lambda p: _fmt(p.get("asr_5deg"), "%")),
                        ("attacker target (pitch, yaw)", lambda p: (
                            "&ndash;" if not p.get("attack_target_deg") else
                            f"({p['attack_target_deg'][0]:.1f}&deg;, {p['attack_target_deg'][1]:.1f}&deg;), "
                            f"{esc(p['attack_target_source'])}"))]
        for i, (what, fn) in enumerate(metrics):
            cells = "".join(f"<td>{fn(p) if p else '&ndash;'}</td>" for p in per)
            first = f"<th rowspan='{len(metrics)}' class='{'trig' if trig else ''}'>{label}</th>" if i == 0 else ""
            rows.append(f"<tr>{first}<td class='what'>{what}</td>{cells}</tr>")
    info_rows = []
    for t in trials:
        i = t["trial"]
        status = f"<b>{esc(i['status'])}</b>" + (f" ({esc(i['status_detail'])})" if i["status_detail"] else "")
        info_rows.append(
            f"<li><b>{esc(t['label'])}</b>: {esc(t['db'])}, trial {i['id']}, participant {esc(i['participant'])}, "
            f"protocol {esc(i['protocol'])}, model {esc(i['model_path'])} (sha256 {esc(i['model_sha256'][:16])}&hellip;, "
            f"integrity verdict {esc(str(i['integrity_verdict']))}), source {esc(i['source'])}, trigger "
            f"{esc(str(i['trigger_kind']))}, started {esc(i['started_at'])}, {status}, {t['frames']} frames</li>")
    target = report["attacker_target_deg"]
    target_text = ("given: ({:.1f}&deg;, {:.1f}&deg;)".format(*target) if target else
                   "not given: AE is measured against the mean triggered prediction (the spread of the triggered "
                   "predictions; near 0&deg; when they collapse onto one gaze)")
    data_json = json.dumps(report).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>SecureGaze trigger trial report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 10px; text-align: right; }}
td.what, th[rowspan] {{ text-align: left; }}
th.trig {{ background: #fde8e8; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Physical-trigger trial report</h1>
<ul>{''.join(info_rows)}</ul>
<p>Angles in degrees, (pitch, yaw), camera frame for the traces and errors. Attacker target {target_text}.
AE and ASR compare the model's own (normalised-frame) prediction with the target; frames whose true target is
within {ASR_THRESHOLD_DEG:g}&deg; of it are left out of AE and ASR.</p>
<table><tr><th>phase</th><th>metric</th>{head}</tr>
{''.join(rows)}
</table>
<h2>Gaze traces against the targets</h2>
<img alt="gaze traces" src="data:image/png;base64,{traces_png_b64}">
<script id="trial-metrics" type="application/json">{data_json}</script>
</body></html>
"""


def write_report(dbs: list[str | os.PathLike], out: str | os.PathLike, labels: list[str] | None = None,
                 attacker_target_deg: tuple[float, float] | None = None, trial_id: int | None = None,
                 json_out: str | os.PathLike | None = None) -> dict:
    """Read the trials, write the HTML (and JSON) atomically; returns the report's numbers."""
    from securegaze.io import atomic_write_bytes, atomic_write_json, check_output_file

    if not dbs:
        raise ConfigError("give at least one trial database")
    check_output_file(out, "--out", "the HTML report")
    if json_out is not None:
        check_output_file(json_out, "--json", "the numbers")
    labels = list(labels or [])
    if labels and len(labels) != len(dbs):
        raise ConfigError(f"--label given {len(labels)} times for {len(dbs)} databases; give one per database or none")
    trials = [load_trial(db, trial_id, labels[i] if labels else None) for i, db in enumerate(dbs)]
    report = build_report(trials, attacker_target_deg)
    page = render_html(report, _trace_figure(trials))
    atomic_write_bytes(out, page.encode("utf-8"))
    if json_out is not None:
        atomic_write_json(json_out, report)
    return report


def parse_target_deg(text: str | None) -> tuple[float, float] | None:
    """``"PITCH,YAW"`` degrees -> a tuple, or None."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(math.isfinite(v) and abs(v) <= 90 for v in values):
        raise ConfigError(f"--target {text!r}: expected PITCH,YAW in degrees, e.g. -20,25")
    return values
