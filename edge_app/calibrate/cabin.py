"""``edge-app calibrate cabin``: the cabin zone map from the driver looking at each zone in turn.

Cars differ: the mirrors, the screen and the camera sit elsewhere in each cabin, and the default
map (``calibration/zones_default.yaml``) is one left-hand-drive geometry. Here the driver is
prompted to look at each zone (``--zones``; default every zone of the fallback map that has a
target point) for ``--dwell-s``, and the pipeline records the camera-frame gaze (the same gaze the
zones will classify, with the driver's correction when ``--driver`` names one). Per zone:

* frames further than ``FRAME_OUTLIER_K`` robust standard deviations (at least
  ``FRAME_OUTLIER_FLOOR_DEG``) from the zone's median are dropped; a zone needs
  ``MIN_FRAMES_PER_ZONE`` frames and a spread (1.4826 MAD of the distances) under
  ``MAX_SPREAD_DEG``, else it counts as not recorded;
* its box is the fallback zone's box moved so that the fallback's target point lands on the
  recorded median (the box keeps the fallback's size, which encodes how far a glance at that zone
  strays), and the median becomes the zone's ``target_deg``.

Zones not recorded keep the fallback's box. Then overlaps are settled: two recorded zones whose
boxes overlap by more than ``MAX_OVERLAP_SHARE`` of the smaller box, or whose medians are under
``MIN_SEPARATION_DEG`` apart, are refused (the driver looked at the same place twice); a smaller
overlap is split halfway across the overlap, along the axis where it is thinner; a fallback
zone overlapping a recorded one is trimmed back to the recorded box's edge where that keeps its
target point, and otherwise listed after it (zones are tried in order: the recorded one wins).
Every recorded target must stay ``MIN_TARGET_MARGIN_DEG`` inside its box. The map is written in
the format :func:`edge_app.zones.load_zone_map` reads, atomically, after reading it back.

Angles: camera-frame (pitch, yaw) degrees, the zone map's convention (:mod:`edge_app.zones`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.calibrate.gaze_session import TargetRecord
from edge_app.calibrate.yaml_out import utc_now, write_yaml
from edge_app.trial.protocol import Protocol, TrialTarget
from securegaze.errors import CalibrationError, ConfigError

FRAME_OUTLIER_K = 3.0
FRAME_OUTLIER_FLOOR_DEG = 1.5
MIN_FRAMES_PER_ZONE = 4
MAX_SPREAD_DEG = 5.0
MAX_OVERLAP_SHARE = 0.3
MIN_SEPARATION_DEG = 4.0
MIN_TARGET_MARGIN_DEG = 1.0
LIMITS = {"pitch_deg": 90.0, "yaw_deg": 180.0}


def cabin_protocol_for(zone_map, zones: str | None, dwell_s: float) -> Protocol:
    """The zones to prompt: ``zones`` (comma list of the map's zone names; None: every zone with a
    target point, in the map's order), each aimed at its target point (or its box centre)."""
    by_name = {z.name: z for z in zone_map.zones}
    names = ([z.name for z in zone_map.zones if z.target_deg is not None] if zones is None
             else [n.strip() for n in zones.split(",") if n.strip()])
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        raise ConfigError(f"--zones {zones}: unknown zone(s) {', '.join(unknown) or '-'}; the map has "
                          f"{', '.join(by_name)}")
    targets = []
    for n in dict.fromkeys(names):
        z = by_name[n]
        aim = z.target_deg or ((z.pitch_deg[0] + z.pitch_deg[1]) / 2, (z.yaw_deg[0] + z.yaw_deg[1]) / 2)
        targets.append(TrialTarget(n, f"look at the {n.replace('_', ' ')}", (float(aim[0]), float(aim[1]))))
    return Protocol("cabin", tuple(targets), dwell_s)


@dataclass(frozen=True)
class ZoneRecording:
    """One prompted zone: frames recorded / with a gaze / kept, the median gaze (deg) and its spread
    (deg), and ``note`` why it was not used (empty when used)."""

    name: str
    frames: int
    faces: int
    kept: int
    median_deg: tuple[float, float] | None
    spread_deg: float | None
    note: str = ""

    @property
    def used(self) -> bool:
        return not self.note


def summarise_zone(record: TargetRecord) -> ZoneRecording:
    """The robust median and spread of one zone's camera-frame gaze (see the module docstring)."""
    name = record.target.name
    if record.faces < MIN_FRAMES_PER_ZONE:
        return ZoneRecording(name, record.frames, record.faces, 0, None, None,
                             f"{record.faces} frames with a gaze of {record.frames}")
    gaze = np.degrees(np.asarray(record.gaze_cam))
    dev = np.linalg.norm(gaze - np.median(gaze, axis=0), axis=1)
    keep = dev <= max(FRAME_OUTLIER_K * 1.4826 * float(np.median(dev)), FRAME_OUTLIER_FLOOR_DEG)
    gaze = gaze[keep]
    median = np.median(gaze, axis=0)
    spread = 1.4826 * float(np.median(np.linalg.norm(gaze - median, axis=1)))
    rec = ZoneRecording(name, record.frames, record.faces, int(keep.sum()), (float(median[0]), float(median[1])),
                        spread)
    if len(gaze) < MIN_FRAMES_PER_ZONE:
        return ZoneRecording(**{**rec.__dict__, "note": f"only {len(gaze)} steady frames"})
    if spread > MAX_SPREAD_DEG:
        return ZoneRecording(**{**rec.__dict__, "note": f"gaze unsteady (spread {spread:.1f} deg > {MAX_SPREAD_DEG:g})"})
    return rec


def _box(zone: dict) -> np.ndarray:
    return np.array([zone["pitch_deg"], zone["yaw_deg"]], dtype=np.float64)  # [[p0, p1], [y0, y1]]


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    lo, hi = np.maximum(a[:, 0], b[:, 0]), np.minimum(a[:, 1], b[:, 1])
    return None if np.any(hi <= lo) else np.stack([lo, hi], axis=1)


def _area(box: np.ndarray) -> float:
    return float(np.prod(box[:, 1] - box[:, 0]))


def _inside(box: np.ndarray, point, margin: float) -> bool:
    return bool(np.all(box[:, 0] + margin <= point) and np.all(point <= box[:, 1] - margin))


def _set_box(zone: dict, box: np.ndarray) -> None:
    zone["pitch_deg"] = [round(float(box[0, 0]), 2), round(float(box[0, 1]), 2)]
    zone["yaw_deg"] = [round(float(box[1, 0]), 2), round(float(box[1, 1]), 2)]


def _split(a: dict, b: dict, inter: np.ndarray) -> None:
    """Two recorded zones overlapping a little: the boundary halfway across the overlap, along its thinner axis."""
    axis = int(np.argmin(inter[:, 1] - inter[:, 0]))
    cut = float(inter[axis].mean())
    first, second = (a, b) if a["target_deg"][axis] <= b["target_deg"][axis] else (b, a)
    for zone, side in ((first, 1), (second, 0)):
        box = _box(zone)
        box[axis, side] = cut
        _set_box(zone, box)


def _trim(fallback: dict, recorded: dict) -> bool:
    """Cut ``fallback``'s box back to ``recorded``'s edge, keeping the most area and its target
    point inside; False when no cut keeps the target."""
    box, other = _box(fallback), _box(recorded)
    aim = fallback.get("target_deg")
    best = None
    for axis in (0, 1):
        for side, edge in ((1, other[axis, 0]), (0, other[axis, 1])):
            cand = box.copy()
            cand[axis, side] = edge
            if cand[axis, 1] - cand[axis, 0] <= 1.0:
                continue
            if aim is not None and not _inside(cand, aim, MIN_TARGET_MARGIN_DEG):
                continue
            if best is None or _area(cand) > _area(best):
                best = cand
    if best is None:
        return False
    _set_box(fallback, best)
    return True


@dataclass(frozen=True)
class CabinMap:
    """The new zone map (``data``, the YAML mapping), the per-zone recordings, and ``notes`` on what
    was trimmed, reordered or taken from the fallback."""

    data: dict
    zones: tuple[ZoneRecording, ...]
    notes: tuple[str, ...]


def build_zone_map(fallback, recordings: list[ZoneRecording]) -> CabinMap:
    """The zone map from ``recordings`` over the ``fallback`` :class:`~edge_app.zones.ZoneMap`."""
    used = {r.name: r for r in recordings if r.used}
    if not used:
        why = "; ".join(f"{r.name}: {r.note}" for r in recordings) or "no zone prompted"
        raise CalibrationError(f"no zone was recorded ({why}): keep the face in view and look at each zone when prompted")
    names = list(used)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            gap = math.dist(used[a].median_deg, used[b].median_deg)
            if gap < MIN_SEPARATION_DEG:
                raise CalibrationError(f"zones {a} and {b} were recorded {gap:.1f} deg apart (under "
                                       f"{MIN_SEPARATION_DEG:g}): the driver looked at the same place for both; "
                                       "run the calibration again")
    zones, notes = [], []
    for z in fallback.zones:
        zone = {"name": z.name, "on_road": z.on_road, "pitch_deg": list(z.pitch_deg), "yaw_deg": list(z.yaw_deg),
                "target_deg": list(z.target_deg) if z.target_deg is not None else None, "recorded": z.name in used}
        if zone["recorded"]:
            ref = np.array(z.target_deg) if z.target_deg is not None else _box(zone).mean(axis=1)
            median = np.array(used[z.name].median_deg)
            box = _box(zone) + (median - ref)[:, None]
            for axis, limit in enumerate(LIMITS.values()):
                box[axis] = np.clip(box[axis], -limit, limit)
            _set_box(zone, box)
            zone["target_deg"] = [round(float(median[0]), 2), round(float(median[1]), 2)]
        zones.append(zone)
    zones.sort(key=lambda zone: not zone["recorded"])  # recorded zones first; stable within each group
    for i, a in enumerate(zones):
        for b in zones[i + 1:]:
            inter = _overlap(_box(a), _box(b))
            if inter is None or not (a["recorded"] or b["recorded"]):
                continue
            if a["recorded"] and b["recorded"]:
                share = _area(inter) / min(_area(_box(a)), _area(_box(b)))
                if share > MAX_OVERLAP_SHARE:
                    raise CalibrationError(
                        f"zones {a['name']} and {b['name']} overlap by {share:.0%} of the smaller box (limit "
                        f"{MAX_OVERLAP_SHARE:.0%}): recorded at {_deg(a['target_deg'])} and {_deg(b['target_deg'])}; "
                        "look at each zone when prompted, or record fewer zones (--zones)")
                _split(a, b, inter)
                notes.append(f"{a['name']} / {b['name']}: overlap of {_area(inter):.0f} deg^2 split")
            elif _trim(b, a):
                notes.append(f"{b['name']} (fallback) trimmed to the edge of {a['name']}")
            else:
                notes.append(f"{b['name']} (fallback) overlaps {a['name']}, which is tried first")
    for zone in zones:
        if zone["recorded"] and not _inside(_box(zone), zone["target_deg"], MIN_TARGET_MARGIN_DEG):
            raise CalibrationError(f"zone {zone['name']}: its recorded direction {_deg(zone['target_deg'])} ends up "
                                   "at the edge of its box after the overlaps were settled; record the zones apart")
    data = {"default_zone": fallback.default_zone, "zones": []}
    for zone in zones:
        entry = {"name": zone["name"]}
        if zone["on_road"]:
            entry["on_road"] = True
        entry.update({"pitch_deg": zone["pitch_deg"], "yaw_deg": zone["yaw_deg"]})
        if zone["target_deg"] is not None:
            entry["target_deg"] = zone["target_deg"]
        data["zones"].append(entry)
    prompted = {r.name for r in recordings}
    notes += [f"{z.name}: not prompted, the fallback's box" for z in fallback.zones if z.name not in prompted]
    return CabinMap(data, tuple(recordings), tuple(notes))


def _deg(point) -> str:
    return f"({point[0]:.1f}, {point[1]:.1f}) deg"


def write_cabin_yaml(cabin: CabinMap, out: str | os.PathLike, source: str, fallback_path: str) -> Path:
    """Write the zone map atomically, read back with :func:`edge_app.zones.load_zone_map` first."""
    from edge_app.zones import load_zone_map

    lines = [f"Cabin zone map, written {utc_now()} by",
             f"  edge-app calibrate cabin --source {source} --fallback {fallback_path}",
             "Boxes in camera-frame gaze angles, degrees (pitch up +, yaw towards the image's left +), tried in",
             "order; a gaze in none of them is in default_zone (edge_app/zones.py). Recorded zones: the fallback's",
             "box moved onto the recorded median gaze (target_deg).", ""]
    for z in cabin.zones:
        if z.used:
            lines.append(f"{z.name}: recorded, {z.kept} of {z.frames} frames, median {_deg(z.median_deg)}, "
                         f"spread {z.spread_deg:.2f} deg")
        else:
            lines.append(f"{z.name}: not recorded ({z.note}); the fallback's box")
    lines += list(cabin.notes)
    return write_yaml(out, cabin.data, "\n".join(lines), check=load_zone_map)
