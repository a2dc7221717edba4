"""Recorded drives replayed through the live trigger alarm (benchmarks/anomaly_replay.py): a drive of
the real pipeline (MediaPipe, ONNX Runtime, the default model) recorded with the conditions
benchmark's trace replays to the very states the live run had, other settings change them, and bad
input is refused in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import anomaly_replay, conditions  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One full synthetic drive (46 s at 5 FPS, daylight, identity 1) recorded as a trace folder."""
    folder = tmp_path_factory.mktemp("traces")
    case = next(c for c in conditions.CASES if c[0] == "daylight")
    frames: list = []
    result = conditions.run_case(case, 1, 5.0, ROOT / "models" / "default" / "model.onnx", trace=frames)
    path = folder / "daylight-s1-fps5-test.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in frames))
    return folder, frames, result


def test_a_replay_gives_the_recorded_states_and_other_settings_change_them(recorded, capsys):
    folder, frames, result = recorded
    assert len(frames) == result["frames"] and all(f["monitor_inputs"] is not None for f in frames)
    assert anomaly_replay.main([str(folder), "--check"]) == 0
    assert "0 runs differ" in capsys.readouterr().out
    assert anomaly_replay.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "| daylight | 1 |" in out and "benign: 0 false alarms" in out
    # A monitor that calls a fraction of a degree of jitter a collapse, and alarms at once: the same
    # drive now raises it, and the replay no longer matches the recording.
    touchy = ["--set", "min_motion_deg=0.2", "--set", "noise_factor=0", "--set", "alarm_after_s=0",
              "--set", "still_share=0.9", "--set", "follow_share=1.0", "--set", "max_binocular_share=10"]
    assert anomaly_replay.main([str(folder), *touchy]) == 0
    assert "benign: 0 false alarms" not in capsys.readouterr().out
    assert anomaly_replay.main([str(folder), "--check", *touchy]) == 1
    assert anomaly_replay.main([str(folder), "--show", "daylight-s1", "--around", "20"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("daylight-s1") and len(shown) >= 20  # 4 s at 5 FPS, one line a frame


@pytest.mark.parametrize("args, needle", [
    (["--set", "window_s"], "expected KEY=VALUE"),
    (["--set", "window_s=-1"], "window_s"),
    (["--set", "no_such_setting=1"], "no_such_setting"),
    (["--show", "nothing-like-it"], "no trace file starts with 'nothing-like-it'"),
])
def test_bad_arguments_are_refused_in_one_line(recorded, capsys, args, needle):
    folder, _, _ = recorded
    assert anomaly_replay.main([str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1


def test_traces_without_monitor_inputs_and_missing_folders_are_refused(tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    (old / "daylight-s0-fps10-x.jsonl").write_text(json.dumps({"t_s": 0.0, "anomaly": None}) + "\n")
    assert anomaly_replay.main([str(old)]) == 2
    err = capsys.readouterr().err
    assert "daylight-s0-fps10-x.jsonl: line 1 has no monitor_inputs" in err
    assert anomaly_replay.main([str(tmp_path / "absent")]) == 2
    assert "not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert anomaly_replay.main([str(empty)]) == 2
    assert "no trace files" in capsys.readouterr().err
