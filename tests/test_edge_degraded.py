"""Degraded mode (edge_app/degraded.py): head-pose-only distraction monitoring, driven by scripted
head-pose traces (no camera, no model), and the switch between gaze and degraded mode.

Each trace is a list of segments (seconds, head pose relative to the road pose, degrees) played at
10 frames a second; the expected alerts are listed with the time they must first appear. The
defaults: Euro NCAP's long distraction less the head's movement time (warning after 2.5 s of head
off the road, loud 4.5 s, critical 10.5 s), its time-sharing (10 s of 30 s), and openpilot's
head-pose limits (18.5 deg pitch, 17.8 deg yaw) around the road pose.
"""

import pytest

from edge_app.attention import AlertLevel, AttentionState
from edge_app.degraded import (
    HEAD_OFF_ROAD,
    MODE_DEGRADED,
    MODE_GAZE,
    DegradedSettings,
    HeadPoseMonitor,
    MonitoringModes,
    road_target_deg,
)
from edge_app.zones import load_zone_map

FPS = 10.0
ROAD = (12.0, 0.0)  # the default zone map's on-road target, where the reference starts


def _play(segments, monitor=None, road=ROAD):
    """Run (seconds, (d_pitch, d_yaw) or None for no face) segments; (t, output, observation) per frame."""
    monitor = monitor or HeadPoseMonitor(DegradedSettings(), ROAD)
    out, t = [], 0.0
    for seconds, head in segments:
        for _ in range(int(round(seconds * FPS))):
            pose = None if head is None else (road[0] + head[0], road[1] + head[1])
            att, obs = monitor.update(t, pose, "no face found")
            out.append((t, att, obs))
            t = round(t + 1 / FPS, 6)
    return out


def _first(trace, predicate):
    """Time of the first frame satisfying ``predicate(att)``, or None."""
    return next((t for t, att, _ in trace if predicate(att)), None)


DOWN = (-22.0, 0.0)  # head down to a phone on the lap: beyond the 18.5-deg pitch limit
SIDE = (0.0, -25.0)  # head turned to the side window: beyond the 17.8-deg yaw limit
LIZARD = (-10.0, 8.0)  # a glance made mostly with the eyes: inside the ellipse, invisible here
DIAGONAL = (-14.0, 12.0)  # neither axis past its own limit, together outside the ellipse
SCREEN = (-16.0, 14.0)  # the centre screen, head turned part-way

# (name, segments, {reason: first time s or None}, highest level)
TRACES = [
    ("road only", [(20, (0.0, 0.0))], {HEAD_OFF_ROAD: None, "time_sharing": None}, AlertLevel.NONE),
    ("phone 3 s: warning at 2.5 s", [(2, (0, 0)), (3, DOWN), (3, (0, 0))], {HEAD_OFF_ROAD: 4.5}, AlertLevel.WARNING),
    ("phone 2 s: silent", [(2, (0, 0)), (2, DOWN), (3, (0, 0))], {HEAD_OFF_ROAD: None}, AlertLevel.NONE),
    ("side window 4 s", [(1, (0, 0)), (4, SIDE), (2, (0, 0))], {HEAD_OFF_ROAD: 3.5}, AlertLevel.WARNING),
    ("eyes-only glance 6 s: not seen", [(1, (0, 0)), (6, LIZARD), (2, (0, 0))], {HEAD_OFF_ROAD: None},
     AlertLevel.NONE),
    ("diagonal 4 s: the ellipse catches it", [(1, (0, 0)), (4, DIAGONAL), (2, (0, 0))], {HEAD_OFF_ROAD: 3.5},
     AlertLevel.WARNING),
    ("escalation: 12 s down", [(1, (0, 0)), (12, DOWN), (2, (0, 0))], {HEAD_OFF_ROAD: 3.5}, AlertLevel.CRITICAL),
    ("no face 4 s counts as off road", [(1, (0, 0)), (4, None), (2, (0, 0))], {HEAD_OFF_ROAD: 3.5},
     AlertLevel.WARNING),
    # 2 s down, 0.3 s back (shorter than the 0.5-s recovery), down again: the timer goes on from 2 s.
    ("look back 0.3 s does not reset", [(1, (0, 0)), (2, DOWN), (0.3, (0, 0)), (1.5, DOWN), (2, (0, 0))],
     {HEAD_OFF_ROAD: 3.7}, AlertLevel.WARNING),
    ("look back 1 s resets", [(1, (0, 0)), (2, DOWN), (1, (0, 0)), (2, DOWN), (2, (0, 0))],
     {HEAD_OFF_ROAD: None}, AlertLevel.NONE),
    # Five 2.4-s looks at the centre screen with 1-s looks back: 10 s away within 30 s, no long glance.
    ("time-sharing: 5 screen glances", [(1, (0, 0))] + [(2.4, SCREEN), (1, (0, 0))] * 5,
     {"time_sharing": 14.9, HEAD_OFF_ROAD: None}, AlertLevel.WARNING),
]


@pytest.mark.parametrize("name, segments, expected, top", TRACES, ids=[t[0] for t in TRACES])
def test_scripted_head_pose_traces(name, segments, expected, top):
    trace = _play(segments)
    for reason, at in expected.items():
        first = _first(trace, lambda a, r=reason: a.alert_reason == r)
        if at is None:
            assert first is None, f"{reason} raised at {first} s"
        else:
            assert first is not None and abs(first - at) <= 1.01 / FPS, f"{reason} at {first} s, expected {at} s"
    assert max(att.alert for _, att, _ in trace) == top


def test_escalation_timing_and_recovery():
    trace = _play([(1, (0, 0)), (12, DOWN), (2, (0, 0))])
    assert _first(trace, lambda a: a.alert == AlertLevel.LOUD) == pytest.approx(5.5, abs=0.11)
    assert _first(trace, lambda a: a.alert == AlertLevel.CRITICAL) == pytest.approx(11.5, abs=0.11)
    # Back on the road for the 0.5-s recovery time: the alert ends and the driver is attentive.
    t_end, att, _ = trace[-1]
    assert att.alert == AlertLevel.NONE and att.state == AttentionState.ATTENTIVE
    recovered = _first([x for x in trace if x[0] >= 13.0], lambda a: a.alert == AlertLevel.NONE)
    assert recovered == pytest.approx(13.5, abs=0.11)


def test_no_face_state_and_reason():
    trace = _play([(1, (0, 0)), (1, None)])
    _, att, obs = trace[-1]
    assert att.state == AttentionState.NO_FACE and att.reason == "no face found" and obs is None


def test_the_reference_learns_the_drivers_own_road_pose():
    """A driver whose head sits at (+6, -5) deg from the cabin's road direction on the road (posture,
    the generic face model): the reference moves there, and a glance 20 deg down from that pose,
    only 14 deg below the unlearnt reference (inside its 18.5-deg limit), is then caught."""
    monitor = HeadPoseMonitor(DegradedSettings(), ROAD)
    own = (6.0, -5.0)
    _play([(90, own)], monitor)
    assert monitor.reference_deg == pytest.approx((ROAD[0] + own[0], ROAD[1] + own[1]), abs=0.3)
    glance = (own[0] - 20.0, own[1])
    fixed = HeadPoseMonitor(DegradedSettings(learn_reference=False), ROAD)
    assert not fixed.observe((ROAD[0] + glance[0], ROAD[1] + glance[1])).off_road
    assert monitor.observe((ROAD[0] + glance[0], ROAD[1] + glance[1])).off_road


def test_the_reference_stays_near_its_start_and_ignores_off_road_frames():
    monitor = HeadPoseMonitor(DegradedSettings(max_reference_shift_deg=4.0), ROAD)
    _play([(120, (15.0, 0.0))], monitor)  # inside the ellipse but far: learnt up to the 4-deg bound
    assert monitor.reference_deg == pytest.approx((ROAD[0] + 4.0, ROAD[1]), abs=1e-6)
    other = HeadPoseMonitor(DegradedSettings(), ROAD)
    _play([(120, DOWN)], other)  # a head that is always off the road teaches nothing
    assert other.reference_deg == ROAD


def test_settings_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DegradedSettings(yaw_deg=0)
    with pytest.raises(ValidationError):
        DegradedSettings(reference_deg=(100.0, 0.0))
    assert road_target_deg(load_zone_map()) == ROAD


def _modes_trace(untrusted_from, untrusted_to, head_segments, gaze_on_road=True):
    """MonitoringModes fed an attentive gaze throughout and the given head trace; the gaze is
    untrusted in [untrusted_from, untrusted_to)."""
    modes = MonitoringModes(road_target_deg=ROAD)
    out, t = [], 0.0
    for seconds, head in head_segments:
        for _ in range(int(round(seconds * FPS))):
            pose = (ROAD[0] + head[0], ROAD[1] + head[1])
            why = "gaze_model_anomaly: test" if untrusted_from <= t < untrusted_to else None
            out.append((t, modes.update(t, "road_ahead", gaze_on_road, pose, "no face found", why)))
            t = round(t + 1 / FPS, 6)
    return out


def test_untrusted_gaze_switches_to_head_pose_and_back():
    # The gaze says "on the road" all along; the head goes down at 4 s for 4 s; the gaze is untrusted
    # from 2 s to 6 s (a run-time monitor's alarm), while the head is still down.
    trace = _modes_trace(2.0, 6.0, [(4, (0, 0)), (4, DOWN), (4, (0, 0))])
    modes = {round(t, 1): o.mode for t, o in trace}
    assert modes[1.0] == MODE_GAZE and modes[2.0] == MODE_DEGRADED and modes[5.9] == MODE_DEGRADED
    # Trusted again at 6 s, but the head has been down for 2 s: degraded mode holds; its warning
    # comes at 6.5 s and clears 0.5 s after the head is back on the road at 8 s; then gaze mode.
    head_alert = [t for t, o in trace if o.attention.alert_reason == HEAD_OFF_ROAD]
    assert head_alert and head_alert[0] == pytest.approx(6.5, abs=0.11)
    assert all(o.mode == MODE_DEGRADED for t, o in trace if 6.0 <= t < 8.4)
    back = next(t for t, o in trace if t >= 6.0 and o.mode == MODE_GAZE)
    assert back == pytest.approx(8.5, abs=0.11)
    reasons = {o.mode_reason for t, o in trace if o.mode == MODE_DEGRADED}
    assert "gaze_model_anomaly: test" in reasons
    assert any(r.startswith("gaze trusted again; head-pose glance") for r in reasons)
    assert all(o.mode_reason is None for t, o in trace if o.mode == MODE_GAZE)


def test_untrusted_gaze_neither_raises_nor_suppresses_an_alarm():
    # The gaze claims off road for 10 s while untrusted: no eyes_off_road alarm from it...
    modes = MonitoringModes(road_target_deg=ROAD)
    outs = [modes.update(k / FPS, "phone_lap", False, ROAD, "x", "blocked") for k in range(100)]
    assert all(o.attention.alert == AlertLevel.NONE and o.mode == MODE_DEGRADED for o in outs)
    # ... and it claims on road while the head is down for 4 s: the head-pose alarm is raised.
    trace = _modes_trace(0.0, 100.0, [(1, (0, 0)), (4, DOWN)])
    assert trace[-1][1].attention.alert_reason == HEAD_OFF_ROAD


def test_the_head_monitor_runs_in_gaze_mode_too():
    """In gaze mode the head-pose monitor is warm: a switch finds its timers current."""
    trace = _modes_trace(4.0, 100.0, [(1, (0, 0)), (3.5, DOWN)])
    t, o = trace[-1]
    assert o.mode == MODE_DEGRADED and o.attention.alert_reason == HEAD_OFF_ROAD  # at 4.4 s: 3.4 s down
    first = next(t for t, o in trace if o.attention.alert_reason == HEAD_OFF_ROAD)
    assert first == pytest.approx(4.0, abs=0.01)  # raised at 3.5 s in the background, shown from the switch
    assert trace[20][1].head is not None and trace[20][1].head.off_road and trace[20][1].mode == MODE_GAZE
