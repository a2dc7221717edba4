"""A trial killed with SIGKILL in the middle of writing: the database still opens, passes SQLite's
integrity check, holds the committed frames from the first one on without a gap, and the report
reads it. (SIGTERM, which the app handles, is tests/test_trial.py's subject; SIGKILL cannot be
handled, so this is what the WAL log with a commit per batch of frames must give on its own.)"""

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from edge_app.cli import DEFAULT_MODEL, main
from edge_app.trial.log import committed_frame_count


def _clean_audit_record(audit_path: Path, model: Path) -> None:
    """An audit record saying the model is clean, keyed for the default settings the trial uses, so
    the trial starts without a scan (the integrity check is tests/test_edge_integrity.py's subject,
    not this test's)."""
    from edge_app.integrity import IntegrityChecker
    from edge_app.startup import load_edge_config

    settings = load_edge_config(None, audit_db=audit_path).integrity
    IntegrityChecker(settings).record_verdict(model, "clean", 0.5, 0.2, "test")


def test_sigkill_mid_trial_keeps_the_committed_frames(tmp_path):
    # A copy of the default model: the integrity check writes its audit file next to the model it
    # checks, and this test's made-up "clean" record must never land beside the repository's model.
    model = shutil.copytree(DEFAULT_MODEL, tmp_path / "default", ignore=shutil.ignore_patterns("securegaze_audit.json"))
    audit = tmp_path / "audit.db"
    _clean_audit_record(audit, model)
    db = tmp_path / "killed.db"
    cmd = [sys.executable, "-m", "edge_app.cli", "trial", "--db", str(db), "--participant", "P04", "--model", str(model),
           "--audit-db", str(audit), "--fps", "30", "--dwell-s", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = 0, time.monotonic() + 120
        while proc.poll() is None and seen < 10 and time.monotonic() < deadline:  # kill it in full flow
            time.sleep(0.05)
            seen = committed_frame_count(db) if db.exists() else 0
        assert proc.poll() is None and seen >= 10, f"{seen} frames committed; " + (
            proc.stderr.read()[-2000:] if proc.poll() is not None else "still running")
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert "frames logged" not in err  # it really died without its clean-up

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        frames = [r[0] for r in conn.execute("SELECT frame FROM frames WHERE trial_id = 1 ORDER BY frame")]
        ended, interrupted = conn.execute("SELECT ended_at, interrupted FROM trials WHERE id = 1").fetchone()
    finally:
        conn.close()
    assert len(frames) >= seen >= 10  # every frame seen committed before the kill is still there
    assert frames == list(range(len(frames)))  # consecutive from the first
    assert ended is None and interrupted == 0  # the trial never got to mark its end
    assert main(["report", str(db), "--out", str(tmp_path / "report.html")]) == 0
    assert not (Path(DEFAULT_MODEL) / "securegaze_audit.json").exists(), "the test wrote beside the repository's model"
