"""Issue 19, items 3 to 5 on the edge app: nothing a user already has is lost, output paths are
checked before the work, and SIGINT / SIGTERM stop a run or a trial cleanly with a code that says
"interrupted" (130 / 143).

One test per class, table-driven where the cases share a shape. Runs that a signal stops are real
processes (``python -m edge_app.cli``); the others call ``edge_app.cli.main`` in-process. The model is
a copy of ``models/default`` with a forged clean audit record, so only the tests about the start-up
scan pay for one (and stop it within seconds).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_app.cli import DEFAULT_MODEL, main
from edge_app.outputs import expand_placeholders, plan_output
from edge_app.signals import EXIT_SIGINT, EXIT_SIGTERM
from securegaze.errors import InputFileError

ROOT = Path(__file__).resolve().parents[1]
EARLIER = '{"frame": 0, "from": "an earlier drive"}\n'
QUICK = ("synthetic:\n  fps: 10\nintegrity:\n  policy: warn\n  clean_samples: 64\n"
         "  scan_settings: {steps: 60, eval_samples: 64, sensitivity_samples: 64}\n")


def _forge_clean_record(db: Path, model: Path, config: Path) -> None:
    """An audit record saying ``model`` scanned clean with ``config``'s scan settings (the record key
    the run asks for): the run starts without a scan (the verdicts are tests/test_edge_integrity.py's
    subject)."""
    from edge_app.integrity import IntegrityChecker
    from edge_app.startup import load_edge_config

    settings = load_edge_config(config, audit_db=db).integrity
    IntegrityChecker(settings).record_verdict(model, "clean", 1.0, 0.5,
                                              "none (forged by tests/test_reliability_outputs.py)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    model = root / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    config = root / "quick.yaml"
    config.write_text(QUICK)
    db = root / "audit.sqlite3"
    _forge_clean_record(db, model, config)
    return {"model": model, "config": config, "db": db}


def _run_args(setup, out, *extra, db=None) -> list[str]:
    return ["run", "--model", str(setup["model"]), "--config", str(setup["config"]), "--audit-db",
            str(db or setup["db"]), "--out", str(out), *extra]


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# -- 3 and 4: refused runs, checked before the scan, leave every file as it was ----------------------

def _existing(tmp):
    return tmp / "frames.jsonl", []


REFUSALS = [
    ("existing_recording_without_a_choice", _existing, [],
     ["frames.jsonl", "already exists", "--overwrite", "--append"]),
    ("overwrite_and_append_together", _existing, ["--overwrite", "--append"], ["--overwrite", "--append"]),
    ("bad_source_with_overwrite", _existing, ["--overwrite", "--source", "camera:7"], ["camera:7"]),
    ("out_in_a_missing_folder", lambda tmp: (tmp / "no-such-folder" / "frames.jsonl", []), [],
     ["no-such-folder", "does not exist"]),
    ("out_is_a_folder", lambda tmp: (tmp / "drives", []), [], ["drives", "is a folder"]),
    ("summary_in_a_missing_folder", _existing, ["--overwrite", "--summary", "NOFOLDER"], ["--summary", "nowhere"]),
]


@pytest.mark.parametrize("case,where,extra,words", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_a_refused_run_is_refused_before_the_scan_and_changes_no_file(setup, tmp_path, capsys, case, where,
                                                                      extra, words):
    (tmp_path / "frames.jsonl").write_text(EARLIER)
    (tmp_path / "drives").mkdir()
    out, _ = where(tmp_path)
    extra = [str(tmp_path / "nowhere" / "s.json") if a == "NOFOLDER" else a for a in extra]
    if "--source" not in extra:
        extra += ["--source", "synthetic:short"]
    before = _state(tmp_path)
    # A fresh audit database: a run that got as far as the integrity check would start a scan.
    code = main(_run_args(setup, out, "--max-frames", "2", *extra, db=tmp_path / "fresh-audit.sqlite3"))
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert all(w in errors[0] for w in words), errors[0]
    assert "integrity:" not in err  # refused at start, not after the scan
    assert _state(tmp_path) == before  # nothing written, emptied or left behind (no .part file)


# -- 3: a run that succeeds writes where the user chose, and only there --------------------------------

def _overwrite(tmp):
    (tmp / "frames.jsonl").write_text(EARLIER)
    return tmp / "frames.jsonl", ["--overwrite"], {"frames.jsonl": "new"}


def _numbered(tmp):
    for name in ("drive-1.jsonl", "drive-3.jsonl"):
        (tmp / name).write_text(EARLIER)
    (tmp / "drive-9.jsonl.bak").write_text(EARLIER)
    return tmp / "drive-{n}.jsonl", [], {"drive-1.jsonl": "earlier", "drive-3.jsonl": "earlier",
                                         "drive-9.jsonl.bak": "earlier", "drive-4.jsonl": "new"}


SUCCESSES = [("overwrite", _overwrite), ("new_file_per_run", _numbered)]


@pytest.mark.parametrize("case,prepare", SUCCESSES, ids=[c[0] for c in SUCCESSES])
def test_a_run_replaces_a_recording_only_when_told_to(setup, tmp_path, capsys, case, prepare):
    out, extra, expected = prepare(tmp_path)
    code = main(_run_args(setup, out, "--source", "synthetic:short", "--max-frames", "2", *extra))
    assert code in (0, 3), capsys.readouterr().err  # 3: two frames are too few for the drive's checks
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)  # no .part file left
    for name, what in expected.items():
        text = (tmp_path / name).read_text()
        if what == "earlier":
            assert text == EARLIER, name
        else:
            assert [x["frame"] for x in _lines(tmp_path / name)] == [0, 1] and "from" not in text, name


PLACEHOLDERS = [
    ("drive-{time}.jsonl", [], "drive-20250131T142501Z.jsonl"),
    ("drive-{n}.jsonl", [], "drive-1.jsonl"),
    ("drive-{n}.jsonl", ["drive-2.jsonl", "drive-10.jsonl", "drive-x.jsonl", "drive-11.json"], "drive-11.jsonl"),
    ("{time}-{n}.jsonl", ["20250131T142501Z-1.jsonl"], "20250131T142501Z-2.jsonl"),
    ("plain-{name}.jsonl", [], "plain-{name}.jsonl"),
]


@pytest.mark.parametrize("template,existing,expected", PLACEHOLDERS)
def test_placeholders_give_a_new_name_per_run(tmp_path, template, existing, expected):
    for name in existing:
        (tmp_path / name).write_text(EARLIER)
    now = datetime(2025, 1, 31, 14, 25, 1, tzinfo=UTC)
    assert expand_placeholders(str(tmp_path / template), now) == str(tmp_path / expected)


def test_the_service_unit_never_replaces_the_last_drive(tmp_path):
    """The Jetson unit restarts the app after a failure: each start must get a new file, and a stop
    by systemd (SIGTERM, exit 143) must count as a clean stop."""
    unit = (ROOT / "deploy" / "jetson" / "securegaze-edge.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, re.S | re.M).group(1).replace("\\\n", " ")
    argv = shlex.split(exec_start)
    assert "--overwrite" not in argv
    template = Path(argv[argv.index("--out") + 1])
    assert template.parent == Path("/var/lib/securegaze-edge")
    local = str(tmp_path / template.name)
    first = plan_output(local, append="--append" in argv)
    first.path.write_text(EARLIER)  # the drive before the restart
    second = plan_output(local, append="--append" in argv)
    assert second.path != first.path or second.mode == "append"
    success = re.search(r"^SuccessExitStatus=(.*)$", unit, re.M).group(1).split()
    assert str(EXIT_SIGTERM) in success and str(EXIT_SIGINT) in success
    with pytest.raises(InputFileError, match="--overwrite"):  # the fixed name of old would now be refused
        plan_output(str(first.path))


# -- 3 and 5: SIGINT and SIGTERM stop a run cleanly; the recording appears whole under its name ------

def _spawn(argv: list[str], err_path: Path, out_path: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(err_path, "w") as err, open(out_path or os.devnull, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "edge_app.cli", *argv], stdout=out, stderr=err, env=env,
                                cwd=ROOT)


def _wait_for(proc: subprocess.Popen, ready, what: str, err_path: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}: {err_path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.1)


def _part_lines(folder: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in folder.glob("frames.jsonl.*.part"))


STOPS = [("sigterm_overwrite", signal.SIGTERM, EXIT_SIGTERM, "--overwrite"),
         ("sigint_append", signal.SIGINT, EXIT_SIGINT, "--append")]


@pytest.mark.parametrize("case,sig,code,mode", STOPS, ids=[c[0] for c in STOPS])
def test_a_signal_stops_a_run_cleanly_with_its_outputs_and_the_interrupted_code(setup, tmp_path, case, sig, code,
                                                                               mode):
    out, summary = tmp_path / "frames.jsonl", tmp_path / "summary.json"
    out.write_text(EARLIER)
    err_path, stdout_path = tmp_path / "stderr.txt", tmp_path / "stdout.txt"
    proc = _spawn(_run_args(setup, out, "--source", "camera:synthetic", "--summary", str(summary), mode),
                  err_path, stdout_path)
    try:
        if mode == "--overwrite":  # the new lines go to a temporary file; the earlier drive stays whole
            _wait_for(proc, lambda: _part_lines(tmp_path) >= 3, "three frames", err_path)
            assert out.read_text() == EARLIER
        else:
            _wait_for(proc, lambda: len(out.read_text().splitlines()) >= 4, "three frames", err_path)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code, err_path.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report, err = stdout_path.read_text(), err_path.read_text()
    name = signal.Signals(sig).name
    assert f"(stopped by {name}" in report and f"interrupted by {name}" in report, report + err
    assert "Traceback" not in err
    data = json.loads(summary.read_text())
    assert data["interrupted"] is True and name in data["interrupted_by"]
    lines = _lines(out)
    if mode == "--append":
        assert lines[0] == json.loads(EARLIER)
        lines = lines[1:]
    # Every processed frame is written once, in order; a live camera source drops the frames that
    # come while one is processed (the first ones pay for the models' setup), so the source's frame
    # numbers may skip, but never repeat or go back.
    frames = [x["frame"] for x in lines]
    assert len(frames) == data["frames"] >= 3 and frames == sorted(set(frames)), frames
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.tmp"))


# -- 5: a signal during the start-up scan: nothing recorded, said in one line, the interrupted code ----

def _run_during_scan(setup, tmp_path):
    out = tmp_path / "frames.jsonl"
    out.write_text(EARLIER)
    argv = _run_args(setup, out, "--source", "synthetic:short", "--overwrite", db=tmp_path / "fresh.sqlite3")
    return argv, "interrupted by SIGTERM during the start-up integrity check: nothing recorded"


def _trial_during_scan(setup, tmp_path):
    argv = ["trial", "--db", str(tmp_path / "trial.db"), "--participant", "P09", "--model", str(setup["model"]),
            "--config", str(setup["config"]), "--audit-db", str(tmp_path / "fresh.sqlite3"), "--fps", "10"]
    return argv, "trial: interrupted by SIGTERM during the start-up integrity check; nothing recorded"


DURING_SCAN = [("run", _run_during_scan), ("trial", _trial_during_scan)]


@pytest.mark.parametrize("command,build", DURING_SCAN, ids=[c[0] for c in DURING_SCAN])
def test_sigterm_during_the_start_up_scan_says_so_and_exits_143(setup, tmp_path, command, build):
    argv, said = build(setup, tmp_path)
    before = {k: v for k, v in _state(tmp_path).items()}
    err_path = tmp_path / "stderr.txt"
    proc = _spawn(argv, err_path)
    try:
        _wait_for(proc, lambda: "integrity: scan" in err_path.read_text(), "scan", err_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == EXIT_SIGTERM, err_path.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_path.read_text()
    assert said in err and "Traceback" not in err, err[-2000:]
    after = _state(tmp_path)
    assert {k: after[k] for k in before} == before  # the earlier recording untouched
    assert not (tmp_path / "trial.db").exists() and not list(tmp_path.glob("*.part"))


# -- 5: a report tells a finished trial from an interrupted or killed one ------------------------------

def _trial_db(path: Path, ending: str) -> Path:
    from edge_app.trial.log import TrialLog

    log = TrialLog(path)
    log.start("P05", "screen4", [{"name": "clean", "trigger": False}], "m", "0" * 64, "clean", "scripted", "tape")
    for i in range(4):
        log.add({"frame": i, "t_s": i / 10, "phase": "clean", "phase_index": 0, "trigger_on": 0, "target": "t",
                 "face_found": 1, "latency_ms": 5.0, "target_pitch_deg": 0.0, "target_yaw_deg": 0.0,
                 "target_norm_pitch_deg": 0.0, "target_norm_yaw_deg": 0.0, "pred_pitch_deg": 1.0,
                 "pred_yaw_deg": 1.0, "pred_norm_pitch_deg": 1.0, "pred_norm_yaw_deg": 1.0})
    log.close(interrupted=ending == "signal")
    if ending == "killed":  # what SIGKILL leaves (tests/test_trial_sigkill.py): no end time, not marked
        import sqlite3

        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE trials SET ended_at = NULL, interrupted = 0")
        conn.close()
    return path


ENDINGS = [("finished", "finished"), ("signal", "interrupted"), ("killed", "interrupted")]


@pytest.mark.parametrize("ending,status", ENDINGS, ids=[e[0] for e in ENDINGS])
def test_a_report_shows_a_killed_or_stopped_trial_as_interrupted(tmp_path, capsys, ending, status):
    db = _trial_db(tmp_path / "trial.db", ending)
    html, numbers = tmp_path / "report.html", tmp_path / "report.json"
    assert main(["report", str(db), "--out", str(html), "--json", str(numbers)]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"trial 1 {status}\b", printed), printed
    trial = json.loads(numbers.read_text())["trials"][0]["trial"]
    assert trial["status"] == status and bool(trial["status_detail"]) == (status == "interrupted")
    assert f"<b>{status}</b>" in html.read_text()
