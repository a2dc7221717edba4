"""``edge-app calibrate cabin``: a zone map from the synthetic driver looking at each zone of a cabin that
is not the default one; how the boxes are placed, trimmed and refused, on made-up recordings."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_app.calibrate.cabin import ZoneRecording, build_zone_map, cabin_protocol_for, summarise_zone
from edge_app.zones import ZoneMap, load_zone_map
from securegaze.errors import CalibrationError, ConfigError

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
FALLBACK = load_zone_map()
PROMPTED = "road_ahead,rear_view_mirror,left_mirror,instrument_cluster,infotainment"
#: Another car: its rear-view mirror lower and further right, its screen higher and further right
#: (both outside the default map's boxes for these zones), camera-frame degrees.
MOVED = {"rear_view_mirror": (15.0, 33.0), "infotainment": (-3.0, 36.0)}


def test_zone_map_follows_the_cabin_the_driver_looks_at(tmp_path):
    from edge_app.calibrate.cabin import write_cabin_yaml
    from edge_app.calibrate.gaze_session import GazeRecorder, record_session, synthetic_session_source
    from edge_app.config import EdgeConfig
    from edge_app.engines import create_engine
    from edge_app.pipeline import Pipeline

    config = EdgeConfig.model_validate({"synthetic": {"fps": 5, "seed": 0}})
    protocol = cabin_protocol_for(FALLBACK, PROMPTED, 1.6)
    recorder = GazeRecorder(protocol)
    pipeline = Pipeline(config, create_engine("onnxruntime", DEFAULT_MODEL), FALLBACK)
    assert record_session(pipeline, synthetic_session_source(protocol, config, MOVED), recorder)
    recordings = [summarise_zone(r) for r in recorder.records]
    assert all(z.used for z in recordings), recordings
    cabin = build_zone_map(FALLBACK, recordings)
    new = ZoneMap.model_validate(cabin.data)
    for r in recorder.records:
        name = r.target.name
        share_new = np.mean([new.classify(g) == name for g in r.gaze_cam])
        share_old = np.mean([FALLBACK.classify(g) == name for g in r.gaze_cam])
        assert share_new >= 0.9, (name, share_new)
        if name in MOVED:  # the default map misses the moved zones entirely
            assert share_old < 0.5, (name, share_old)
    # Zones not prompted come from the fallback, behind the recorded ones; on_road is kept.
    names = [z.name for z in new.zones]
    assert names[:5] == PROMPTED.split(",") and set(names[5:]) == {"right_mirror", "phone_lap"}
    assert new.is_on_road("road_ahead") and not new.is_on_road("rear_view_mirror")
    assert "right_mirror: not prompted, the fallback's box" in cabin.notes
    out = write_cabin_yaml(cabin, tmp_path / "zones.yaml", "synthetic", "zones_default.yaml")
    assert load_zone_map(out) == new


def _rec(name, median, spread=0.5, note=""):
    return ZoneRecording(name, 10, 10, 10, median, spread, note)


def test_recordings_of_one_place_for_two_zones_are_refused():
    with pytest.raises(CalibrationError, match="zones road_ahead and instrument_cluster were recorded 1.0 deg apart"):
        build_zone_map(FALLBACK, [_rec("road_ahead", (12.0, 0.0)), _rec("instrument_cluster", (11.0, 0.0))])
    with pytest.raises(CalibrationError, match="zones road_ahead and instrument_cluster overlap by 87% of the smaller"):
        build_zone_map(FALLBACK, [_rec("road_ahead", (12.0, 0.0)), _rec("instrument_cluster", (8.0, 0.0))])
    with pytest.raises(CalibrationError, match="no zone was recorded .road_ahead: gaze unsteady"):
        build_zone_map(FALLBACK, [_rec("road_ahead", (12.0, 0.0), 9.0, "gaze unsteady (spread 9.0 deg > 5)")])


def test_small_overlaps_are_split_and_fallback_zones_trimmed():
    # The road ahead recorded 5 deg right of the default target and the cluster 3 deg up: their boxes
    # overlap a little (split halfway); the fallback rear-view mirror is overlapped by the road box.
    cabin = build_zone_map(FALLBACK, [_rec("road_ahead", (12.0, 5.0)), _rec("instrument_cluster", (-2.0, 0.0))])
    new = ZoneMap.model_validate(cabin.data)
    zones = {z.name: z for z in new.zones}
    road, cluster, mirror = zones["road_ahead"], zones["instrument_cluster"], zones["rear_view_mirror"]
    assert road.pitch_deg[0] == pytest.approx(cluster.pitch_deg[1]) == pytest.approx(4.5)  # split at the middle
    assert road.yaw_deg == pytest.approx((-15.0, 23.0))  # moved with its target, size kept
    assert mirror.yaw_deg[0] == pytest.approx(23.0) and mirror.contains_deg(24, 24)  # trimmed to the road's edge
    assert any("rear_view_mirror (fallback) trimmed to the edge of road_ahead" in n for n in cabin.notes)
    changed = {"road_ahead", "instrument_cluster", "rear_view_mirror"}  # (the default map's own overlaps stay)
    for i, a in enumerate(new.zones):  # no zone recorded or trimmed overlaps another
        for b in new.zones[i + 1:]:
            assert {a.name, b.name}.isdisjoint(changed) or (min(a.pitch_deg[1], b.pitch_deg[1]) <= max(a.pitch_deg[0], b.pitch_deg[0])
                    or min(a.yaw_deg[1], b.yaw_deg[1]) <= max(a.yaw_deg[0], b.yaw_deg[0])), (a.name, b.name)


def test_unsteady_or_short_recordings_count_as_not_recorded():
    from edge_app.calibrate.gaze_session import TargetRecord
    from edge_app.trial.protocol import TrialTarget

    rng = np.random.default_rng(0)
    shaky = TargetRecord(TrialTarget("left_mirror", "look", (4.0, -32.0)), frames=12, faces=12,
                         gaze_cam=[np.radians([4.0, -32.0] + rng.normal(0, 8.0, 2)) for _ in range(12)])
    assert "gaze unsteady" in summarise_zone(shaky).note
    short = TargetRecord(TrialTarget("left_mirror", "look", (4.0, -32.0)), frames=6, faces=2,
                         gaze_cam=[np.radians([4.0, -32.0])] * 2)
    assert summarise_zone(short).note == "2 frames with a gaze of 6"


def test_cabin_command_with_the_window(tmp_path, capsys):
    """``edge-app calibrate cabin --gui`` offscreen: prompts in the overlay, a map the app reads."""
    from edge_app.cli import main
    from edge_app.integrity import IntegrityChecker
    from edge_app.startup import load_edge_config

    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    config = tmp_path / "edge.yaml"
    config.write_text("synthetic:\n  fps: 5\nintegrity:\n  policy: warn\n")
    db = tmp_path / "audit.sqlite3"
    IntegrityChecker(load_edge_config(config, audit_db=db).integrity).record_verdict(
        model, "clean", 1.0, 0.5, "none (forged by tests/test_calibrate_cabin.py)")
    out = tmp_path / "zones.yaml"
    base = ["calibrate", "cabin", "--source", "synthetic", "--config", str(config), "--audit-db", str(db),
            "--model", str(model), "--out", str(out)]
    assert main([*base, "--zones", "road_ahead,sunroof"]) == 2
    assert "unknown zone(s) sunroof" in capsys.readouterr().err
    code = main([*base, "--zones", "road_ahead,left_mirror,instrument_cluster", "--dwell-s", "1.5", "--gui"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    new = load_zone_map(out)
    assert [z.name for z in new.zones][:3] == ["road_ahead", "left_mirror", "instrument_cluster"]
    assert "cabin: road_ahead" in printed and "not prompted, the fallback's box" in printed


def test_bad_zone_lists():
    with pytest.raises(ConfigError, match="unknown zone"):
        cabin_protocol_for(FALLBACK, "road_ahead,,nowhere", 2.0)
    assert [t.name for t in cabin_protocol_for(FALLBACK, None, 2.0).targets] == [z.name for z in FALLBACK.zones]
