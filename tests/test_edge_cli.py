"""``edge-app run`` headless, end to end on the synthetic driver, and its user errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_app.cli import main

FIELDS = {"frame", "timestamp_s", "face_found", "gaze_deg", "zone", "state", "alert", "latency_ms", "mode",
          "mode_reason", "head_monitor"}


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """The short scripted drive (a 1-s mirror check, a 3-s phone glance) at 10 fps through the real
    face stage and the default model. The integrity scan is a quick one under policy warn (ten steps,
    no probe: the full scan of this 128-px model takes minutes on two cores): the scanner's verdict
    on the default model is the scanner's tests' business, not this one's."""
    root = tmp_path_factory.mktemp("drive")
    config = root / "edge.yaml"
    config.write_text(
        "synthetic:\n  fps: 10\n"
        "integrity:\n  policy: warn\n  clean_samples: 64\n"
        "  scan_settings: {steps: 10, eval_every: 5, batch_size: 8, eval_samples: 32, sensitivity_samples: 32,\n"
        "                  probe: false}\n")
    model = root / "model"
    shutil.copytree(Path(__file__).resolve().parent.parent / "models" / "default", model)
    out, summary = root / "frames.jsonl", root / "summary.json"
    code = main(["run", "--source", "synthetic:short", "--model", str(model), "--config", str(config),
                 "--audit-db", str(root / "audit.sqlite3"), "--out", str(out), "--summary", str(summary),
                 "--benchmark"])
    return dict(code=code, lines=[json.loads(x) for x in out.read_text().splitlines()],
                summary=json.loads(summary.read_text()), root=root, model=model, config=config)


def test_phone_glance_warns_and_mirror_check_does_not(drive):
    assert drive["code"] == 0
    checks = {c["label"]: c for c in drive["summary"]["checks"]}
    assert checks["phone on the lap 3 s"]["observed_level"] == "warning"
    assert checks["phone on the lap 3 s"]["passed"]
    assert checks["mirror check 1 s"]["observed_level"] == "none" and checks["mirror check 1 s"]["passed"]


def test_every_frame_is_a_json_line_with_the_documented_fields(drive):
    lines = drive["lines"]
    assert len(lines) == drive["summary"]["frames"] == 115  # 11.5 s at 10 fps, none dropped
    for line in lines:
        assert FIELDS <= set(line)
        assert {"face", "normalise", "infer", "attend", "total"} <= set(line["latency_ms"]) or not line["face_found"]
    assert sum(line["face_found"] for line in lines) >= 110  # the face stage finds the rendered driver
    phone = [line for line in lines if line["truth"]["zone"] == "phone_lap" and line["gaze_deg"]]
    assert sum(line["zone"] == "phone_lap" for line in phone) > 0.8 * len(phone)


def test_accuracy_and_benchmark_figures_are_reported(drive):
    s = drive["summary"]
    # Whole-pipeline error against the camera-frame ground truth (measured ~4 deg; the model alone is 2.6).
    assert 0 < s["mean_angular_error_deg"] < 8.0 and s["gaze_frames"] >= 110
    assert {"face", "head_pose", "normalise", "infer", "total", "end_to_end"} <= set(s["latency_ms"])
    assert s["fps"] > 0 and s["integrity"]["policy"] == "warn"


def test_the_run_summary_counts_faces_modes_zones_and_alerts(drive):
    """What the printed summary is made of (--summary's tally): every frame in gaze mode, the zones
    looked at, and the phone glance's warning as one event that starts after 3 s of the glance."""
    tally = drive["summary"]["tally"]
    assert tally["frames"] == 115 and tally["face_frames"] >= 110 and tally["modes"] == {"gaze": 115}
    assert tally["zones"]["road_ahead"] > 50 and tally["zones"].get("phone_lap", 0) >= 20
    (event,) = [e for e in tally["alert_events"] if e["reason"] == "eyes_off_road"]
    assert event["level"] == "warning" and 9.0 <= event["start_s"] <= 10.0 and 0 < event["duration_s"] < 2.5
    assert all(line["mode"] == "gaze" and line["mode_reason"] is None for line in drive["lines"])


@pytest.mark.parametrize("args,needle", [
    (["--source", "camera:97", "--max-frames", "1"], "no camera at index 97"),
    (["--source", "nowhere.mp4"], "nowhere.mp4"),
    (["--source", "synthetic:longest"], "unknown synthetic script"),
    (["--policy", "maybe", "--source", "synthetic:short"], "--policy must be block or warn"),
    (["--model", "no/such/bundle", "--source", "synthetic:short"], "no/such/bundle"),
])
def test_user_errors_exit_2_with_one_line(args, needle, capsys, tmp_path):
    code = main(["run", "--audit-db", str(tmp_path / "a.sqlite3"), *args])
    err = capsys.readouterr().err
    assert code == 2
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err


@pytest.mark.parametrize("text,needle", [
    ("attention:\n  warning_after_s: 0\n", "attention.warning_after_s"),
    ("integrity:\n  scan_settings: {stepz: 5}\n", "integrity.detector / integrity.scan_settings"),
])
def test_bad_config_exits_2(tmp_path, capsys, text, needle):
    config = tmp_path / "edge.yaml"
    config.write_text(text)
    assert main(["run", "--source", "synthetic:short", "--config", str(config),
                 "--audit-db", str(tmp_path / "a.sqlite3")]) == 2
    assert needle in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "edge-app"
    exe = str(exe) if exe.exists() else shutil.which("edge-app")
    assert exe, "the edge-app console script is not installed"
    out = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--source" in out and "--benchmark" in out


def test_json_lines_go_to_stdout_and_the_recorded_scan_is_reused(drive, capsys):
    code = main(["run", "--source", "synthetic:short", "--model", str(drive["model"]), "--config",
                 str(drive["config"]), "--audit-db", str(drive["root"] / "audit.sqlite3"), "--max-frames", "3"])
    captured = capsys.readouterr()
    assert code == 0
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2] and all(FIELDS <= set(x) for x in lines)
    # The human summary goes to stderr, and the second start found the audit record: no scan.
    assert "[database]" in captured.err and "integrity: scan" not in captured.err


def test_an_image_that_does_not_decode_is_skipped_as_a_dropped_frame(drive, tmp_path, capsys):
    """A folder recording with one photo cut short (its header passes the start-up check, its pixels
    do not decode): the frames around it are monitored, the gap keeps its frame number, and the
    summary names the file instead of the run stopping there."""
    import cv2

    from securegaze.data.synthetic import render_dataset

    faces = render_dataset(3, 160, seed=4).images
    for i, face in enumerate(faces):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    whole = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(whole[: len(whole) // 3])
    out, summary = tmp_path / "frames.jsonl", tmp_path / "summary.json"
    code = main(["run", "--source", str(tmp_path), "--model", str(drive["model"]), "--config",
                 str(drive["config"]), "--audit-db", str(drive["root"] / "audit.sqlite3"), "--out", str(out),
                 "--summary", str(summary)])
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert code == 0, printed
    assert [json.loads(x)["frame"] for x in out.read_text().splitlines()] == [0, 2]
    assert json.loads(summary.read_text())["unreadable_images"] == [str(tmp_path / "1.png")]
    assert f"warning: 1 image(s) did not decode and were skipped as dropped frames: {tmp_path / '1.png'}" in printed
