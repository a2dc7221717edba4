"""Startup integrity check: audit records, rescans, a swapped model caught and blocked, bad databases."""

import json
import shutil
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY_THRESHOLD, margin

from edge_app.cli import main
from edge_app.config import EdgeConfig
from edge_app.integrity import (
    EXIT_BLOCKED,
    SIDECAR_NAME,
    AuditDatabase,
    AuditRecord,
    IntegrityChecker,
    IntegrityError,
    IntegritySettings,
    sidecar_path,
)
from edge_app.pipeline import Pipeline
from edge_app.sources import Frame
from edge_app.zones import load_zone_map
from securegaze.defense import SCANNER_VERSION, create_detector
from securegaze.io import sha256_file

#: A quick scan for the tests whose subject is the bookkeeping, not the verdict.
FAST = {"steps": 60, "eval_samples": 64, "sensitivity_samples": 64}
#: Full scanner settings with the threshold of the tiny test models (see conftest.TINY_THRESHOLD).
TINY = {"threshold": TINY_THRESHOLD}


@pytest.fixture(scope="module")
def scenario(tiny_gaze_bundles, tmp_path_factory):
    """A benign bundle is scanned at first start; later its ONNX and manifest are swapped for a
    BadNets model's (an attacker who rewrites both, so every bundle check passes) and the app is
    started again. Full scanner settings: the verdicts are the subject here."""
    root = tmp_path_factory.mktemp("integrity")
    model = root / "model"
    shutil.copytree(tiny_gaze_bundles["benign"], model)
    db = root / "audit.sqlite3"
    events = []
    first = IntegrityChecker(IntegritySettings(audit_db=db, scan_settings=TINY)).check(model, progress=events.append)
    again_events = []
    again = IntegrityChecker(IntegritySettings(audit_db=db, scan_settings=TINY)).check(model, progress=again_events.append)
    benign_record = json.loads((model / SIDECAR_NAME).read_text())
    for name in ("model.onnx", "manifest.json"):
        shutil.copy(tiny_gaze_bundles["backdoored"] / name, model / name)
    out, summary = root / "frames.jsonl", root / "summary.json"
    code = main(["run", "--source", "synthetic:short", "--model", str(model), "--audit-db", str(db),
                 "--out", str(out), "--max-frames", "5", "--summary", str(summary)])
    return dict(model=model, db=db, first=first, events=events, again=again, again_events=again_events,
                benign_record=benign_record, code=code, out=out, summary=summary)


def test_first_start_scans_with_progress_and_records_everywhere(scenario):
    first = scenario["first"]
    margin("benign bundle score", first.record.score, ">", TINY_THRESHOLD)
    assert first.source == "scan" and first.verdict == "clean" and not first.blocked
    assert scenario["events"] and {e.stage for e in scenario["events"]} >= {"reverse", "evaluate"}
    record = scenario["benign_record"]
    assert record["model_sha256"] == first.model_sha256 and record["scanner_version"] == SCANNER_VERSION
    assert record["settings"] == create_detector("securegaze", **TINY).settings()
    assert record["report"]["verdict"] == "clean" and record["report"]["model_sha256"] == first.model_sha256


def test_second_start_uses_the_database_without_scanning(scenario):
    again = scenario["again"]
    assert again.source == "database" and again.verdict == "clean" and scenario["again_events"] == []
    assert again.record == scenario["first"].record


def test_swapped_model_is_scanned_again_and_blocked_at_start(scenario):
    assert scenario["code"] == EXIT_BLOCKED
    lines = [json.loads(line) for line in scenario["out"].read_text().splitlines()]
    # The model is never run: no gaze from it on any frame, and every frame is monitored in degraded
    # mode (head pose only), saying why.
    assert [x["frame"] for x in lines] == list(range(5))
    for line in lines:
        assert line["mode"] == "degraded_head_pose" and line["gaze_deg"] is None and line["zone"] is None
        assert "backdoored" in line["mode_reason"] and "blocked" in line["mode_reason"]
        assert line["face_found"] and line["head_monitor"] is not None and line["state"] == "ATTENTIVE"
    summary = json.loads(scenario["summary"].read_text())
    assert summary["blocked"] and summary["integrity"]["source"] == "scan"
    assert summary["tally"]["modes"] == {"degraded_head_pose": 5}
    new_sha = sha256_file(scenario["model"] / "model.onnx")
    assert summary["integrity"]["model_sha256"] == new_sha != scenario["first"].model_sha256
    db = AuditDatabase(scenario["db"])
    try:
        (swapped,) = db.records_for(new_sha)
        margin("backdoored bundle score", swapped.score, "<", TINY_THRESHOLD)
        assert [r.verdict for r in db.records_for(new_sha)] == ["backdoored"]
        assert [r.verdict for r in db.records_for(scenario["first"].model_sha256)] == ["clean"]
    finally:
        db.close()
    assert json.loads((scenario["model"] / SIDECAR_NAME).read_text())["verdict"] == "backdoored"
    # The flag was put to the vote of two more seeds (confirm_seeds, 2 by default), and the start-up says so.
    (confirmed,) = [n for n in summary["integrity"]["notes"] if n.startswith("seed confirmation:")]
    assert "seed 0" in confirmed and "seed 1" in confirmed and "flagged by" in confirmed and "of 3 runs" in confirmed


def test_policy_warn_runs_a_backdoored_model_and_says_so(scenario, tmp_path):
    result = IntegrityChecker(IntegritySettings(audit_db=scenario["db"], policy="warn", scan_settings=TINY)).check(scenario["model"])
    assert result.source == "database" and result.verdict == "backdoored" and not result.blocked
    assert "policy warn" in result.reason


def test_a_blocked_pipeline_yields_no_gaze_and_says_why(scenario):
    result = IntegrityChecker(IntegritySettings(audit_db=scenario["db"], scan_settings=TINY)).check(scenario["model"])
    assert result.blocked
    pipeline = Pipeline(EdgeConfig(), None, load_zone_map(), integrity=result)
    try:
        rec = pipeline.process(Frame(np.full((480, 640, 3), 90, np.uint8), 0.0, 0, 0.0))
    finally:
        pipeline.close()
    # No face in this frame: degraded mode reports NO_FACE, and says why it is degraded.
    assert rec.mode == "degraded_head_pose" and "backdoored" in rec.mode_reason
    assert rec.attention.state.value == "NO_FACE" and rec.attention.alert.label == "none"
    assert rec.gaze is None and rec.zone is None
    assert rec.to_json()["gaze_deg"] is None and rec.to_json()["mode_reason"] == result.reason


def test_stale_and_untrusted_sidecars_cause_a_rescan(tiny_gaze_bundles, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_gaze_bundles["benign"], model)
    settings = IntegritySettings(audit_db=tmp_path / "a.sqlite3", scan_settings=FAST, clean_samples=64)
    first = IntegrityChecker(settings).check(model)
    record = first.record.to_dict()
    # The same record from an older scanner, found next to the model in a fresh database: stale.
    (model / SIDECAR_NAME).write_text(json.dumps({**record, "scanner_version": "0.1"}))
    stale = IntegrityChecker(settings.model_copy(update={"audit_db": tmp_path / "b.sqlite3"})).check(model)
    assert stale.source == "scan" and any("stale" in n for n in stale.notes)
    # A current record only beside the model is not trusted by default, and is when told to.
    (model / SIDECAR_NAME).write_text(json.dumps(record))
    untrusted = IntegrityChecker(settings.model_copy(update={"audit_db": tmp_path / "c.sqlite3"})).check(model)
    assert untrusted.source == "scan" and any("not trusted" in n for n in untrusted.notes)
    (model / SIDECAR_NAME).write_text(json.dumps(record))
    trusted = IntegrityChecker(settings.model_copy(update={"audit_db": tmp_path / "d.sqlite3",
                                                            "trust_model_sidecar": True})).check(model)
    assert trusted.source == "sidecar" and trusted.record.to_dict() == record


def test_sidecar_location():
    from pathlib import Path

    assert sidecar_path(Path("models/default")) == Path("models/default") / SIDECAR_NAME
    assert sidecar_path(Path("x/gaze.onnx")) == Path("x/gaze.onnx.audit.json")


def test_corrupt_audit_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "audit.sqlite3"
    bad.write_bytes(b"this is not a database, just bytes " * 200)
    with pytest.raises(IntegrityError, match="audit.sqlite3: not a readable audit database"):
        AuditDatabase(bad)
    code = main(["run", "--source", "synthetic:short", "--audit-db", str(bad), "--max-frames", "1"])
    assert code == 2


def test_audit_database_transactions_and_schema(tmp_path):
    path = tmp_path / "audit.sqlite3"
    db = AuditDatabase(path)
    rec = AuditRecord("a" * 64, "m", "securegaze", "1.0", {}, "clean", 0.1, 0.01, "x", "2026-01-01T00:00:00+00:00",
                      {"verdict": "clean"}, settings_hash="b" * 64, clean_set="synthetic:standard n=8 seed=0",
                      calibration="1.0")
    db.add(rec)
    assert db.find(rec.key).record == rec and db.find(replace(rec.key, scanner_version="2.0")) is None
    db.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(IntegrityError, match="schema 99"):
        AuditDatabase(path)


def test_policy_warn_on_the_command_line_marks_every_line(scenario, tmp_path):
    out = tmp_path / "frames.jsonl"
    code = main(["run", "--source", "synthetic:short", "--model", str(scenario["model"]), "--audit-db",
                 str(scenario["db"]), "--policy", "warn", "--out", str(out), "--max-frames", "3"])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0 and len(lines) == 3
    assert all("backdoored" in line["integrity_warning"] for line in lines)


def test_the_start_up_scan_prints_a_few_lines_a_stage_when_stages_take_turns():
    import io

    from rich.console import Console

    from edge_app.startup import ScanProgressPrinter
    from securegaze.defense.base import ScanProgress

    stream = io.StringIO()
    now = [100.0]
    printer = ScanProgressPrinter(Console(file=stream, width=200), clock=lambda: now[0])
    for step in range(1, 201):  # two stages reporting in turns, as the scan's side-by-side runs do
        printer(ScanProgress("securegaze", "reverse", step, 200))
        printer(ScanProgress("securegaze", "probe", min(step, 60), 60))
        now[0] += 2.0  # two seconds a step of each
    lines = stream.getvalue().splitlines()
    heads = [line.split(" (")[0] for line in lines]
    assert len(lines) == 10 and heads[0] == "integrity: scan reverse 1/200" and heads[-1] == "integrity: scan reverse 200/200"
    assert sum("probe" in line for line in heads) == 5
    assert lines[0] == "integrity: scan reverse 1/200 (0 s into the scan)", lines[0]
    # the reverse stage at step 50: 98 s since its first step, 150 steps left at 2 s each
    assert "integrity: scan reverse 50/200 (1 min 38 s into the scan; this stage ends in about 5 min 00 s)" in lines, lines
    assert lines[-1] == "integrity: scan reverse 200/200 (6 min 38 s into the scan)", lines
