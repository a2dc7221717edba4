"""Attention logic on scripted traces (table-driven), One Euro smoothing and the zone map."""

import math
from pathlib import Path

import numpy as np
import pytest

from edge_app.attention import AlertLevel, AttentionMonitor, AttentionSettings, AttentionState
from edge_app.smoothing import OneEuroFilter, OneEuroSettings
from edge_app.zones import load_zone_map
from securegaze.errors import ConfigError

FPS = 10.0


def _trace(*segments):
    """Segments (what, seconds) -> per-frame list; what: a zone name, None (no face), "DARK" (no face:
    the camera image too dark) or "BLOCK"."""
    frames = []
    for what, seconds in segments:
        frames += [what] * int(round(seconds * FPS))
    return frames


def _run(frames, settings=None):
    monitor = AttentionMonitor(settings or AttentionSettings())
    outs = []
    for i, what in enumerate(frames):
        t = i / FPS
        if what == "BLOCK":
            outs.append(monitor.update(t, None, False, blocked_reason="scanned backdoored"))
        elif what == "DARK":
            outs.append(monitor.update(t, None, False, no_face_reason="camera image too dark",
                                       camera_unavailable=True))
        else:
            outs.append(monitor.update(t, what, what == "road_ahead"))
    return outs


# (name, trace, highest alert, alert reasons seen, final state, final alert)
CASES = [
    ("road only", _trace(("road_ahead", 20)), AlertLevel.NONE, set(), AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("1 s mirror check", _trace(("road_ahead", 2), ("left_mirror", 1), ("road_ahead", 3)),
     AlertLevel.NONE, set(), AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("2.5 s glance stays silent", _trace(("road_ahead", 2), ("phone_lap", 2.5), ("road_ahead", 3)),
     AlertLevel.NONE, set(), AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("3.5 s phone glance warns, then recovers", _trace(("road_ahead", 2), ("phone_lap", 3.5), ("road_ahead", 3)),
     AlertLevel.WARNING, {"eyes_off_road"}, AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("6 s is loud", _trace(("road_ahead", 1), ("infotainment", 6), ("road_ahead", 2)),
     AlertLevel.LOUD, {"eyes_off_road"}, AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("12 s is critical", _trace(("road_ahead", 1), ("off", 12)),
     AlertLevel.CRITICAL, {"eyes_off_road"}, AttentionState.DISTRACTED, AlertLevel.CRITICAL),
    ("a 0.2 s look back does not reset the glance",
     _trace(("road_ahead", 1), ("phone_lap", 2), ("road_ahead", 0.2), ("phone_lap", 1.5)),
     AlertLevel.WARNING, {"eyes_off_road"}, AttentionState.DISTRACTED, AlertLevel.WARNING),
    ("a 1 s look back does", _trace(("road_ahead", 1), ("phone_lap", 2), ("road_ahead", 1), ("phone_lap", 2)),
     AlertLevel.NONE, set(), AttentionState.DISTRACTED, AlertLevel.NONE),
    ("time sharing: 5 x 2.4 s glances within 17 s",
     _trace(("road_ahead", 1), *[s for _ in range(5) for s in (("road_ahead", 1), ("infotainment", 2.4))]),
     AlertLevel.WARNING, {"time_sharing"}, AttentionState.DISTRACTED, AlertLevel.WARNING),
    ("time-sharing warning clears after recovery",
     _trace(*[s for _ in range(5) for s in (("infotainment", 2.4), ("road_ahead", 1))], ("road_ahead", 2)),
     AlertLevel.WARNING, {"time_sharing"}, AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("glances spread over more than 30 s never add up",
     _trace(*[s for _ in range(6) for s in (("infotainment", 2.4), ("road_ahead", 6))]),
     AlertLevel.NONE, set(), AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("no face is its own state and escalates", _trace(("road_ahead", 1), (None, 4)),
     AlertLevel.WARNING, {"eyes_off_road"}, AttentionState.NO_FACE, AlertLevel.WARNING),
    ("blocked: never an alarm", _trace(("BLOCK", 15)), AlertLevel.NONE, set(), AttentionState.BLOCKED, AlertLevel.NONE),
    ("a dark camera says monitoring is off, never eyes off road", _trace(("road_ahead", 1), ("DARK", 20)),
     AlertLevel.WARNING, {"monitoring_unavailable"}, AttentionState.NO_FACE, AlertLevel.WARNING),
    ("2 s of dark camera is silent", _trace(("road_ahead", 1), ("DARK", 2), ("road_ahead", 3)),
     AlertLevel.NONE, set(), AttentionState.ATTENTIVE, AlertLevel.NONE),
    ("a dark spell neither feeds nor ends a glance",
     _trace(("road_ahead", 1), ("phone_lap", 2), ("DARK", 5), ("phone_lap", 1.5)),
     AlertLevel.WARNING, {"monitoring_unavailable", "eyes_off_road"}, AttentionState.DISTRACTED, AlertLevel.WARNING),
]


@pytest.mark.parametrize("name,frames,top,reasons,final_state,final_alert", CASES, ids=[c[0] for c in CASES])
def test_scripted_trace(name, frames, top, reasons, final_state, final_alert):
    outs = _run(frames)
    assert max(o.alert for o in outs) == top
    assert {o.alert_reason for o in outs if o.alert_reason} == reasons
    assert outs[-1].state == final_state and outs[-1].alert == final_alert


def test_warning_arrives_at_three_seconds_and_escalates_in_order():
    outs = _run(_trace(("road_ahead", 1), ("phone_lap", 12)))
    first = {}
    for i, o in enumerate(outs):
        first.setdefault(o.alert, i / FPS)
    # Off the road from t = 1.0 s: warning at 3 s, loud at 5 s, critical at 11 s of it.
    assert first[AlertLevel.WARNING] == pytest.approx(4.0, abs=0.11)
    assert first[AlertLevel.LOUD] == pytest.approx(6.0, abs=0.11)
    assert first[AlertLevel.CRITICAL] == pytest.approx(12.0, abs=0.11)
    levels = [o.alert for o in outs]
    assert levels == sorted(levels)  # never drops while the glance lasts


def test_no_face_setting_and_blocked_reason():
    settings = AttentionSettings(no_face_counts_as_off_road=False)
    outs = _run(_trace(("road_ahead", 1), (None, 6)), settings)
    assert max(o.alert for o in outs) == AlertLevel.NONE and outs[-1].state == AttentionState.NO_FACE
    blocked = _run(["BLOCK"])[0]
    assert blocked.reason == "scanned backdoored" and blocked.alert == AlertLevel.NONE


def test_the_dark_camera_warning_comes_after_its_setting_and_clears_with_a_face():
    outs = _run(_trace(("road_ahead", 1), ("DARK", 6), ("road_ahead", 1)), AttentionSettings(unavailable_warning_s=4.0))
    first = next(i for i, o in enumerate(outs) if o.alert_reason == "monitoring_unavailable") / FPS
    assert first == pytest.approx(5.0, abs=0.11)  # 4 s after the image went dark at 1 s
    assert all(o.eyes_off_road_s == 0.0 for o in outs) and outs[-1].alert == AlertLevel.NONE
    assert outs[20].reason == "camera image too dark" and outs[20].state == AttentionState.NO_FACE


def test_a_stalled_source_is_not_counted_as_looking_away():
    monitor = AttentionMonitor()
    monitor.update(0.0, "phone_lap", False)
    out = monitor.update(20.0, "phone_lap", False)  # 20 s gap: a stalled camera
    assert out.alert == AlertLevel.NONE and out.eyes_off_road_s == 0.0


@pytest.mark.parametrize("values,match", [
    ({"warning_after_s": 6.0}, "warning_after_s < loud_after_s"),
    ({"time_sharing_total_s": 40.0}, "shorter than"),
    ({"warning_after_s": -1.0}, "greater than 0"),
])
def test_settings_reject_inconsistent_values(values, match):
    with pytest.raises(ValueError, match=match):
        AttentionSettings(**values)


def test_one_euro_filter_smooths_fixation_noise_and_follows_a_saccade():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(OneEuroSettings())
    t = np.arange(0, 2, 1 / 30)
    target = np.where(t < 1.0, 0.0, math.radians(30))
    noisy = target + rng.normal(0, math.radians(2), len(t))
    out = np.array([f.filter(ti, [x, 0.0])[0] for ti, x in zip(t, noisy, strict=True)])
    still = slice(10, 30)
    assert np.std(out[still]) < 0.5 * np.std(noisy[still])
    # 0.2 s after the step the filtered value is within 3 deg of the new target.
    after = np.searchsorted(t, 1.2)
    assert abs(out[after] - math.radians(30)) < math.radians(3)


def test_one_euro_filter_restarts_after_a_gap():
    f = OneEuroFilter()
    f.filter(0.0, [0.0, 0.0])
    f.filter(0.033, [0.0, 0.0])
    assert np.allclose(f.filter(2.0, [0.5, -0.5]), [0.5, -0.5])  # face lost for 2 s: no blending


def test_default_zone_map_classifies_its_targets():
    zones = load_zone_map()
    for zone in zones.zones:
        assert zones.classify(np.radians(zone.target_deg)) == zone.name
    assert zones.classify(np.radians([80.0, 0.0])) == "off"
    assert zones.is_on_road("road_ahead") and not zones.is_on_road("left_mirror")


@pytest.mark.parametrize("text,match", [
    ("zones:\n  - {name: road, on_road: true, pitch_deg: [5, 1], yaw_deg: [0, 1]}\n", "low < high"),
    ("zones:\n  - {name: road, pitch_deg: [0, 1], yaw_deg: [0, 1]}\n", "on_road: true"),
    ("zones:\n  - {name: road, on_road: true, pitch_deg: [0, 1], yaw_deg: [0, 1], colour: red}\n", "colour"),
    ("zones:\n  - {name: road, on_road: true, pitch_deg: [0, 1], yaw_deg: [0, 1], target_deg: [9, 9]}\n",
     "outside its box"),
])
def test_bad_zone_maps_are_one_clear_error(tmp_path, text, match):
    path = Path(tmp_path) / "zones.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_zone_map(path)
