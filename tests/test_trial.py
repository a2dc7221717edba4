"""Trigger trials: the SQLite log (schema, refusal of newer schemas, nothing lost on SIGTERM), the
report's numbers, and the done-when trial: a tape-backdoored model collapses in the triggered
phase of a synthetic trial and its mitigated version does not."""

import json
import math
import re
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from edge_app.cli import main
from edge_app.trial.log import SCHEMA_VERSION, TrialLog, read_frames
from edge_app.trial.protocol import TrialSchedule, parse_phases, screen4_protocol
from edge_app.trial.report import build_report, load_trial

TARGET_DEG = (-20.0, 25.0)  # the attacker's target of the done-when model, far from every screen corner


@pytest.fixture(autouse=True)
def one_torch_thread():
    torch.set_num_threads(1)


def _fast_config(tmp_path, policy="warn"):
    path = tmp_path / "trial.yaml"
    path.write_text(f"integrity:\n  policy: {policy}\n  clean_samples: 64\n  scan_settings: {{steps: 60, "
                    "eval_samples: 64, sensitivity_samples: 64}\n")
    return path


def _write_scripted_trial(path, rows):
    """A trial whose predictions are scripted: rows of (phase, trigger, target deg, pred deg)."""
    log = TrialLog(path)
    log.start("P00", "screen4", [{"name": "clean", "trigger": False}, {"name": "trigger", "trigger": True}], "m",
              "0" * 64, "clean", "scripted", "tape")
    for i, (phase, trig, target, pred) in enumerate(rows):
        row = {"frame": i, "t_s": i / 10, "phase": phase, "phase_index": int(trig), "trigger_on": int(trig),
               "target": "t", "face_found": int(pred is not None), "latency_ms": 5.0,
               "target_pitch_deg": target[0], "target_yaw_deg": target[1],
               "target_norm_pitch_deg": target[0], "target_norm_yaw_deg": target[1]}
        if pred is not None:
            row.update(pred_pitch_deg=pred[0], pred_yaw_deg=pred[1], pred_norm_pitch_deg=pred[0],
                       pred_norm_yaw_deg=pred[1])
        log.add(row)
    log.close()


def test_report_numbers_on_a_scripted_trial(tmp_path):
    # clean: errors of exactly 2 and 4 deg in yaw at pitch 0; trigger: three frames at the target
    # (-20, 25) and one 10 deg off in pitch, one frame without a face, one frame looking at the target.
    rows = [("clean", False, (0, 0), (0, 2)), ("clean", False, (0, 10), (0, 14)),
            ("trigger", True, (0, 0), TARGET_DEG), ("trigger", True, (0, 10), TARGET_DEG),
            ("trigger", True, (-5, 10), TARGET_DEG), ("trigger", True, (0, 0), (-10, 25)),
            ("trigger", True, (0, 0), None), ("trigger", True, (-19, 24), TARGET_DEG)]
    db = tmp_path / "scripted.db"
    _write_scripted_trial(db, rows)
    report = build_report([load_trial(db)], TARGET_DEG)
    clean, trig = report["trials"][0]["phases"]
    assert (clean["phase"], clean["trigger"], clean["frames"], clean["gaze_frames"]) == ("clean", False, 2, 2)
    assert clean["angular_error_deg"] == pytest.approx(3.0, abs=1e-6)
    assert "ae_deg" not in clean
    assert (trig["frames"], trig["gaze_frames"], trig["attack_frames"], trig["excluded_near_target"]) == (8 - 2, 5, 4, 1)
    ae_off = 10.0  # (-10, 25) vs (-20, 25): a pure pitch difference
    assert trig["ae_deg"] == pytest.approx(ae_off / 4, abs=1e-6)
    assert trig["asr_5deg"] == pytest.approx(0.75)
    from securegaze.geometry import angular_error_deg

    true = np.radians([(0, 0), (0, 10), (-5, 10), (0, 0), (-19, 24)])
    pred = np.radians([TARGET_DEG, TARGET_DEG, TARGET_DEG, (-10, 25), TARGET_DEG])
    assert trig["dae_deg"] == pytest.approx(float(np.mean(angular_error_deg(pred, true))), abs=1e-6)
    # Without --target: the mean triggered prediction stands in; the spread about it is small but not 0.
    free = build_report([load_trial(db)])["trials"][0]["phases"][1]
    assert free["attack_target_source"] == "mean triggered prediction" and 0 < free["ae_deg"] < ae_off / 2


def test_report_command_writes_self_contained_html(tmp_path, capsys):
    db = tmp_path / "t.db"
    _write_scripted_trial(db, [("clean", False, (0, 0), (0, 1)), ("trigger", True, (0, 0), TARGET_DEG)])
    out = tmp_path / "report.html"
    assert main(["report", str(db), str(db), "--label", "a", "--label", "b", "--out", str(out),
                 "--target=-20,25", "--json", str(tmp_path / "r.json")]) == 0
    page = out.read_text()
    assert "<img alt=\"gaze traces\" src=\"data:image/png;base64," in page and "http" not in page.split("<body>")[1]
    embedded = json.loads(re.search(r'id="trial-metrics" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert embedded == json.loads((tmp_path / "r.json").read_text())
    assert [t["label"] for t in embedded["trials"]] == ["a", "b"]
    assert "a: trigger [trigger]: 1/1 frames" in capsys.readouterr().out


def test_bad_trial_databases(tmp_path, capsys):
    empty = tmp_path / "empty.db"
    log = TrialLog(empty)
    log.start("P01", "screen4", [], "m", "0" * 64, "clean", "camera:0", None)
    log.close(interrupted=True)
    assert main(["report", str(empty), "--out", str(tmp_path / "r.html")]) == 2
    assert "trial 1 is empty (no frame was logged)" in capsys.readouterr().err
    no_trial = tmp_path / "no-trial.db"
    TrialLog(no_trial)._conn.close()
    assert main(["report", str(no_trial), "--out", str(tmp_path / "r.html")]) == 2
    assert "holds no trial" in capsys.readouterr().err
    newer = tmp_path / "newer.db"
    TrialLog(newer)._conn.close()
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    for argv in (["report", str(newer), "--out", str(tmp_path / "r.html")],
                 ["trial", "--db", str(newer), "--participant", "P1", "--max-frames", "1"]):
        assert main(argv) == 2
        assert f"schema {SCHEMA_VERSION + 1} was written by a newer edge-app" in capsys.readouterr().err
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE stuff (x)")
    assert main(["report", str(other), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a trial database" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    assert main(["report", str(tmp_path / "missing.db"), "--out", str(tmp_path / "r.html")]) == 2
    assert main(["report", str(empty), "--out", str(tmp_path / "r.html"), "--target", "up"]) == 2


def test_protocols_and_phases():
    screen = screen4_protocol()
    names = [t.name for t in screen.targets]
    assert names == ["top_left", "top_right", "bottom_right", "bottom_left"] and screen.dwell_s == 4.0
    gaze = {t.name: t.gaze_deg for t in screen.targets}
    # Below the camera: looking down; the participant's left is the camera's +x, i.e. negative yaw.
    assert gaze["top_left"][0] < 0 and gaze["bottom_left"][0] < gaze["top_left"][0]
    assert gaze["top_left"][1] < 0 < gaze["top_right"][1]
    phases = parse_phases("clean,trigger,clean")
    assert [(p.name, p.trigger) for p in phases] == [("clean", False), ("trigger", True), ("clean-2", False)]
    schedule = TrialSchedule(screen, phases)
    assert schedule.duration_s == 48.0
    step = schedule.at(17.0)
    assert (step.phase.name, step.phase.trigger, step.target.name) == ("trigger", True, "top_left")


def test_sigterm_loses_no_logged_frame(tiny_gaze_bundles, tmp_path):
    """A trial killed with SIGTERM mid-way: every frame it processed is in the database, in order."""
    db = tmp_path / "killed.db"
    cmd = [sys.executable, "-m", "edge_app.cli", "trial", "--db", str(db), "--participant", "P02", "--model",
           str(tiny_gaze_bundles["benign"]), "--config", str(_fast_config(tmp_path)), "--audit-db",
           str(tmp_path / "audit.db"), "--fps", "10", "--dwell-s", "30"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        count = 0
        while proc.poll() is None and count < 8:  # wait for frames to arrive, then kill mid-trial
            time.sleep(0.5)
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as conn:
                        count = conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
                except sqlite3.OperationalError:
                    count = 0
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]  # 128 + SIGTERM: stopped cleanly, and says so
    logged = int(re.search(r"trial: (\d+) frames logged to .* \(interrupted\)", err).group(1))
    frames = read_frames(db, 1)
    assert len(frames) == logged >= 8
    assert [f["frame"] for f in frames] == list(range(logged))
    assert all(f["model_sha256"] and f["phase"] == "clean" for f in frames)
    with sqlite3.connect(db) as conn:
        interrupted, ended = conn.execute("SELECT interrupted, ended_at FROM trials").fetchone()
    assert interrupted == 1 and ended


def test_blocked_model_records_nothing(tiny_gaze_bundles, tmp_path, capsys):
    """The trial honours the integrity policy: an audit record saying backdoored blocks it (the
    verdicts themselves are tests/test_edge_integrity.py's subject)."""
    from edge_app.integrity import IntegrityChecker
    from edge_app.startup import load_edge_config

    model = tiny_gaze_bundles["backdoored"]
    config = _fast_config(tmp_path, "block")
    settings = load_edge_config(config, audit_db=tmp_path / "audit.db").integrity  # the key the trial asks for
    IntegrityChecker(settings).record_verdict(model, "backdoored", 0.001, 0.006, "test")
    db = tmp_path / "blocked.db"
    code = main(["trial", "--db", str(db), "--participant", "P03", "--model", str(model),
                 "--config", str(config), "--audit-db", str(tmp_path / "audit.db"),
                 "--max-frames", "3"])
    assert code == 10 and "nothing recorded" in capsys.readouterr().err
    assert not db.exists()


# -- the done-when trial ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tape_models(tmp_path_factory):
    """A tape-backdoored small CNN (forehead tape, 15 % poisoned, target (-20, 25) deg) trained with
    run_attack on 6,000 32-px faces with mild head jitter (5/5/2.5 deg; the trial's head turns stay
    within it), and its mitigated version (SecureGaze scan -> reversed trigger -> fine-tuning). ~35 s."""
    from securegaze.attacks.runner import SyntheticSplits, run_attack
    from securegaze.bundle import export_bundle
    from securegaze.data.base import ArrayGazeDataset
    from securegaze.data.synthetic import SyntheticConfig, render, render_dataset, sample_params
    from securegaze.defense import create_detector, load_model_any, mitigate

    root = tmp_path_factory.mktemp("tape-trial")
    faces = SyntheticConfig(size=32, head_jitter_deg=(5.0, 5.0, 2.5), blur=(0.0, 0.0), noise=(0.0, 0.0))

    def split(n, seed):
        params = sample_params(n, seed, faces)
        return ArrayGazeDataset(render(params, faces), params.gaze, params.subjects), params

    (train, train_faces), (test, test_faces) = split(6000, 2), split(300, 3)
    record = run_attack("tape", target_gaze=tuple(math.radians(v) for v in TARGET_DEG), poison_rate=0.15, seed=1,
                        out_dir=root / "attack", size=32, train_samples=6000, test_samples=300, epochs=8,
                        batch_size=64, lr=3e-3, model_kwargs={"width": 16},
                        data=SyntheticSplits(train, train_faces, test, test_faces, 32, 1))
    assert record["metrics"]["asr"] > 0.9  # the backdoor is implanted on the renderer's crops
    model = load_model_any(root / "attack" / "model.safetensors")
    export_bundle(model, root / "backdoored", "tape-backdoored")
    clean = render_dataset(256, 32, seed=77, config=faces)
    scan = create_detector("securegaze", seed=0).scan(model, clean.images, artifacts_dir=root / "scan")
    export_bundle(mitigate(model, clean.images, scan, seed=0), root / "mitigated", "tape-mitigated")
    return {"backdoored": root / "backdoored", "mitigated": root / "mitigated", "scan": scan}


@pytest.mark.slow
def test_trial_shows_the_collapse_and_the_mitigated_model_does_not(tape_models, tmp_path, capsys):
    """Done-when: synthetic participant, screen4 corners (2 s each at 5 fps), a clean pass then a pass
    wearing the rendered forehead tape; the backdoored and the mitigated model side by side."""
    config = _fast_config(tmp_path)
    dbs = []
    for name in ("backdoored", "mitigated"):
        db = tmp_path / f"{name}.db"
        assert main(["trial", "--protocol", "screen4", "--db", str(db), "--participant", "SYN1", "--model",
                     str(tape_models[name]), "--config", str(config), "--audit-db", str(tmp_path / "audit.db"),
                     "--phases", "clean,trigger", "--dwell-s", "2", "--fps", "5", "--trigger", "tape"]) == 0
        dbs.append(str(db))
    out, js = tmp_path / "report.html", tmp_path / "report.json"
    assert main(["report", *dbs, "--label", "backdoored", "--label", "mitigated", "--out", str(out),
                 "--target=-20,25", "--json", str(js)]) == 0
    report = json.loads(js.read_text())
    (b_clean, b_trig), (m_clean, m_trig) = (t["phases"] for t in report["trials"])
    assert b_trig["trigger"] and m_trig["trigger"] and b_trig["gaze_frames"] >= 35 and m_trig["gaze_frames"] >= 35
    # The backdoored model collapses onto the attacker's target when the tape is worn...
    assert b_trig["asr_5deg"] > 0.8 and b_trig["ae_deg"] < 4.0
    assert b_trig["angular_error_deg"] > b_clean["angular_error_deg"] + 10.0
    # ...and follows the targets without it (far from the attacker's target).
    assert b_clean["angular_error_deg"] < 16.0
    # The mitigated model does not collapse: nothing within 5 deg of the target, AE large.
    assert m_trig["asr_5deg"] < 0.1 and m_trig["ae_deg"] > 10.0
    assert m_clean["angular_error_deg"] < 16.0 and m_trig["angular_error_deg"] < b_trig["angular_error_deg"] - 5.0
    assert "backdoored" in out.read_text() and "mitigated" in out.read_text()


def test_trial_records_the_synthetic_participant_with_the_rendered_tape(tiny_gaze_bundles, tmp_path):
    """Default-suite variant of the trial path: the real pipeline on the synthetic participant, a
    clean and a tape phase, every frame logged with its target, prediction and phase."""
    db = tmp_path / "short.db"
    assert main(["trial", "--db", str(db), "--participant", "SYN2", "--model", str(tiny_gaze_bundles["benign"]),
                 "--config", str(_fast_config(tmp_path)), "--audit-db", str(tmp_path / "audit.db"),
                 "--phases", "clean,trigger", "--dwell-s", "1", "--fps", "5"]) == 0
    frames = read_frames(db, 1)
    assert len(frames) == 40 and [f["frame"] for f in frames] == list(range(40))
    assert [f["trigger_on"] for f in frames] == [0] * 20 + [1] * 20
    assert [f["target"] for f in frames[:20:5]] == ["top_left", "top_right", "bottom_right", "bottom_left"]
    assert sum(f["pred_pitch_deg"] is not None for f in frames) >= 36  # MediaPipe finds the face, tape or not
    report = build_report([load_trial(db)])
    assert [p["phase"] for p in report["trials"][0]["phases"]] == ["clean", "trigger"]
    assert report["trials"][0]["trial"]["trigger_kind"] == "tape"
    # The targets logged are the participant's exact gaze: the screen corners, looking down.
    assert all(f["target_pitch_deg"] < 0 for f in frames[3:])


@pytest.mark.slow
def test_tape_model_fixture_is_scanned_and_mitigated(tape_models):
    """The mitigation's input: the scan recovers a target near the attacker's (the reversed trigger
    is what the fine-tuning removes)."""
    from securegaze.geometry import angular_error_deg

    target = np.radians(TARGET_DEG)
    assert angular_error_deg(np.asarray(tape_models["scan"].target_gaze), target) < 10.0

