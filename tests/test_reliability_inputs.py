"""Issue 19, items 1, 4 (``securegaze`` outputs) and 6: a cached integrity verdict answers only the
question asked, outputs are checked before the work, and every value and database shape is refused
or read with one clear line.

One test per class, table-driven where the cases share a shape. Every case runs the real command
line (``securegaze.cli.main`` / ``edge_app.cli.main`` in-process), a real SQLite file and a real model:
an untrained 32-px small CNN bundle, scanned with a short scan (the verdicts themselves are
tests/test_edge_integrity.py's subject; here the bookkeeping is).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml

from edge_app.cli import main as edge_main
from edge_app.integrity import SIDECAR_NAME, IntegrityChecker, IntegrityError, IntegritySettings
from securegaze.cli import main as sg_main

#: A scan of about a second on the tiny model (clean_samples at the scanner's minimum clean set).
QUICK_SCAN = {"steps": 20, "eval_samples": 32, "sensitivity_samples": 32, "probe_steps": 5, "probe_samples": 16}
QUICK_INTEGRITY = {"clean_samples": 32, "scan_settings": QUICK_SCAN}


def one_error_line(code: int, err: str, needles) -> str:
    """Exit 2, no traceback, the last stderr line the only ``error:`` line, holding every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert "Traceback" not in err, err
    assert code == 2, f"exit {code}: {err}"
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from securegaze.bundle import export_bundle
    from securegaze.models import create_model

    root = tmp_path_factory.mktemp("inputs-model")
    torch.manual_seed(0)
    export_bundle(create_model("small_cnn", input_size=32, width=8).eval(), root / "model", "tiny-untrained")
    return root / "model"


@pytest.fixture(scope="module")
def scanned(tiny_model, tmp_path_factory):
    """The tiny model scanned once by ``edge-app run`` with QUICK_INTEGRITY: audit record #1."""
    root = tmp_path_factory.mktemp("inputs-scanned")
    db = root / "audit.sqlite3"
    code, err = _edge_run(root, tiny_model, db, QUICK_INTEGRITY)
    assert code in (0, 3) and "[scan]" in err, err  # 3: one frame is too few for the drive's checks
    return {"db": db, "model": tiny_model}


def _edge_run(root: Path, model: Path, db: Path, integrity: dict) -> tuple[int, str]:
    """``edge-app run`` of one frame with ``integrity`` as the config's settings: (exit code, stderr)."""
    config = root / f"edge-{len(list(root.glob('edge-*.yaml')))}.yaml"
    config.write_text(yaml.safe_dump({"integrity": integrity}))
    out = root / f"frames-{config.stem}.jsonl"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = edge_main(["run", "--model", str(model), "--source", "synthetic:short", "--config", str(config),
                          "--audit-db", str(db), "--out", str(out), "--max-frames", "1"])
    return code, err.getvalue()


def _integrity_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("integrity: model ")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------------------------
# 19.1: a cached verdict answers the question that was asked
# ------------------------------------------------------------------------------------------------

#: (case, change to QUICK_INTEGRITY, words the log line must hold; None: the record applies)
QUESTIONS = [
    ("nothing_changed", {}, None),
    ("stricter_threshold", {"scan_settings": {**QUICK_SCAN, "threshold": 0.5}}, ["scan settings", "threshold", "-> 0.5"]),
    ("larger_clean_set", {"clean_samples": 40}, ["clean set synthetic:standard n=32", "now synthetic:standard n=40"]),
    ("other_clean_seed", {"clean_seed": 7}, ["seed=7"]),
    ("other_scan_setting", {"scan_settings": {**QUICK_SCAN, "steps": 25}}, ["steps 20 -> 25"]),
]


@pytest.mark.parametrize("case,change,words", QUESTIONS, ids=[q[0] for q in QUESTIONS])
def test_a_cached_verdict_answers_only_the_question_asked(scanned, tmp_path, case, change, words):
    db = tmp_path / "audit.sqlite3"
    shutil.copy(scanned["db"], db)
    model = tmp_path / "model"
    shutil.copytree(scanned["model"], model)
    key = IntegrityChecker(IntegritySettings(**QUICK_INTEGRITY, audit_db=db)).key_for(model)
    code, err = _edge_run(tmp_path, model, db, {**QUICK_INTEGRITY, **change})
    line = _integrity_line(err)
    assert code in (0, 3), err
    if words is None:  # answered from the record, which the line names with why it applies
        assert line.endswith("[database]") and "integrity: scan" not in err, err
        for needle in (f"audit record #1 from {db}", "same model sha256", f"settings {key.settings_hash[:12]}",
                       f"clean set {key.clean_set}", "scanned 20"):
            assert needle in line, line
        return
    assert line.endswith("[scan]") and "integrity: scan reverse" in err, err  # a real rescan ran
    # 32-40 clean images are below the scanner's warn_clean (64): the log says the verdict rests on few.
    assert "integrity: note: scan warning: the verdict rests on" in err, err
    assert f"audit record #1 from {db} does not apply" in line and f"stored as audit record #2 in {db}" in line
    for needle in words:
        assert needle in line, line
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, settings_hash, clean_set FROM audit_records ORDER BY id").fetchall()
    assert len(rows) == 2 and rows[0][1:] != rows[1][1:]
    assert json.loads((model / SIDECAR_NAME).read_text())["settings_hash"] == rows[1][1]


def _face_folder(folder: Path, count: int) -> Path:
    """``count`` synthetic faces as a user's folder holds them: PNG and JPEG, 48 and 80 px, no labels."""
    from PIL import Image

    from securegaze.data.synthetic import render_dataset

    folder.mkdir(parents=True, exist_ok=True)
    for size, start in ((48, 0), (80, count // 2)):
        faces = render_dataset(count - count // 2 if start else count // 2, size, seed=size).images
        for i, face in enumerate(faces):
            Image.fromarray(face).save(folder / f"face{start + i:03d}.{'png' if i % 2 else 'jpg'}")
    return folder


def test_the_start_up_scan_takes_the_users_face_folder(tiny_model, tmp_path):
    """``edge-app run --clean FOLDER``: the scan reads the folder (note in the log), the record is keyed by
    the folder's contents and the draw, a second start answers from it, and an added image is a new
    question; a missing folder and one with too few images each get one error line before any scan."""
    faces = _face_folder(tmp_path / "faces", 40)
    db = tmp_path / "audit.sqlite3"
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"integrity": QUICK_INTEGRITY}))

    def start(clean: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = edge_main(["run", "--model", str(model), "--source", "synthetic:short", "--config", str(config),
                              "--audit-db", str(db), "--out", str(tmp_path / "frames.jsonl"), "--overwrite",
                              "--max-frames", "1", "--clean", clean])
        return code, err.getvalue()

    code, err = start(str(faces))
    assert code in (0, 3) and _integrity_line(err).endswith("[scan]"), err
    assert "integrity: note: clean set: 32 of 40 images" in err and "48x48..80x80 to 32x32" in err, err
    with sqlite3.connect(db) as conn:
        (clean_set, record), = conn.execute("SELECT clean_set, record_json FROM audit_records").fetchall()
    assert clean_set.startswith(f"folder:{faces.resolve()} n=40 sha256=") and clean_set.endswith(" samples=32 seed=20250505")
    assert json.loads(record)["report"]["details"]["clean_set"]["identity"] in clean_set
    code, err = start(str(faces))
    assert code in (0, 3) and _integrity_line(err).endswith("[database]") and f"clean set {clean_set}" in err, err
    shutil.copy(faces / "face000.jpg", faces / "face999.jpg")
    code, err = start(str(faces))
    line = _integrity_line(err)
    assert code in (0, 3) and line.endswith("[scan]") and "n=40" in line and "now folder:" in line and "n=41" in line
    code, err = start(str(tmp_path / "no-faces"))
    one_error_line(code, err, ["--clean", "no-faces", "no such folder"])
    few = _face_folder(tmp_path / "few", 10)
    code, err = start(str(few))
    one_error_line(code, err, [str(few), "10", "32"])
    assert "integrity: scan" not in err


_SCHEMA_1 = """
CREATE TABLE audit_records (id INTEGER PRIMARY KEY AUTOINCREMENT, model_sha256 TEXT NOT NULL,
    scanner_version TEXT NOT NULL, detector TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('clean', 'backdoored')), scanned_at TEXT NOT NULL,
    record_json TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_an_old_audit_database_opens_and_its_records_are_rescanned(tiny_model, tmp_path):
    """A schema-1 database (records keyed by sha256, scanner version and detector only) is migrated:
    its record, which says nothing about the settings, never answers; the model is scanned again."""
    from securegaze.defense import SCANNER_VERSION, model_file_sha256

    db = tmp_path / "audit.sqlite3"
    sha = model_file_sha256(tiny_model)
    old = {"model_sha256": sha, "model_path": "m", "detector": "securegaze", "scanner_version": SCANNER_VERSION,
           "settings": {}, "verdict": "backdoored", "score": 0.01, "threshold": 0.2, "clean_images": "old",
           "scanned_at": "2025-01-01T00:00:00+00:00", "report": {}, "schema_version": 1}
    with sqlite3.connect(db) as conn:
        conn.executescript(_SCHEMA_1)
        conn.execute("INSERT INTO audit_records (model_sha256, scanner_version, detector, verdict, scanned_at, "
                     "record_json) VALUES (?, ?, 'securegaze', 'backdoored', ?, ?)",
                     (sha, SCANNER_VERSION, old["scanned_at"], json.dumps(old)))
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    result = IntegrityChecker(IntegritySettings(**QUICK_INTEGRITY, audit_db=db)).check(model)
    assert result.source == "scan" and result.verdict == "clean" and not result.blocked
    assert "audit record #1" in result.reason and "predates keyed records" in result.reason
    with sqlite3.connect(db) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(audit_records)")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        rows = conn.execute("SELECT verdict, settings_hash, clean_set, calibration FROM audit_records "
                            "ORDER BY id").fetchall()
    assert {"settings_hash", "clean_set", "calibration"} <= columns and version == "2"
    assert rows[0] == ("backdoored", "", "", "") and rows[1][0] == "clean" and all(rows[1][1:])


# ------------------------------------------------------------------------------------------------
# 19.6: a read-only audit database is read, and refused only when a record must be written
# ------------------------------------------------------------------------------------------------


def _read_only_file(db: Path) -> Path:
    db.chmod(0o444)
    return db


def _read_only_folder(db: Path) -> Path:
    db.parent.chmod(0o555)
    return db.parent


@pytest.mark.parametrize("make_read_only", [_read_only_file, _read_only_folder], ids=["file", "folder"])
def test_a_read_only_audit_database_is_read(scanned, tmp_path, make_read_only):
    folder = tmp_path / "audit"
    folder.mkdir()
    db = folder / "audit.sqlite3"
    shutil.copy(scanned["db"], db)
    model = tmp_path / "model"
    shutil.copytree(scanned["model"], model)
    before = db.read_bytes()
    locked = make_read_only(db)
    try:
        settings = IntegritySettings(**QUICK_INTEGRITY, audit_db=db)
        events = []
        result = IntegrityChecker(settings).check(model, progress=events.append)
        assert result.source == "database" and result.verdict == "clean" and events == []
        assert f"audit record #1 from {db}" in result.reason
        stricter = settings.model_copy(update={"scan_settings": {**QUICK_SCAN, "threshold": 0.5}})
        with pytest.raises(IntegrityError) as refused:
            IntegrityChecker(stricter).check(model, progress=events.append)
        assert events == []  # refused before the scan, not after it
        for needle in (str(db), "readonly", "does not apply", "threshold"):
            assert needle in str(refused.value)
    finally:
        locked.chmod(0o755 if locked.is_dir() else 0o644)
    assert db.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["audit.sqlite3"]


# ------------------------------------------------------------------------------------------------
# 19.6: trial databases of every shape
# ------------------------------------------------------------------------------------------------

TRIAL_SHAPES = [
    ("schema_holds_text", "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                          "INSERT INTO schema_version VALUES ('one');", ["holds 'one'", "not a schema number"]),
    ("schema_holds_a_fraction", "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                                "INSERT INTO schema_version VALUES (1.5);", ["holds 1.5"]),
    ("no_trials_table", "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                        "INSERT INTO schema_version VALUES (1);"
                        "CREATE TABLE frames (trial_id INTEGER);", ["no trials table"]),
]


@pytest.mark.parametrize("case,sql,words", TRIAL_SHAPES, ids=[t[0] for t in TRIAL_SHAPES])
@pytest.mark.parametrize("command", ["report", "trial"])
def test_trial_databases_of_the_wrong_shape_get_one_line(tmp_path, capsys, case, sql, words, command):
    db = tmp_path / "trial.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(sql)
    before = db.read_bytes()
    if command == "report":
        argv = ["report", str(db), "--out", str(tmp_path / "report.html")]
    else:
        argv = ["trial", "--db", str(db), "--participant", "P01", "--model", str(tmp_path / "no-model")]
    code = edge_main(argv)
    one_error_line(code, capsys.readouterr().err, ["trial.db", *words])
    assert db.read_bytes() == before and not (tmp_path / "report.html").exists()


# ------------------------------------------------------------------------------------------------
# 19.6: values: sample counts, widths, rates, data paths
# ------------------------------------------------------------------------------------------------

HUGE = str(10**12)
VALUES = [
    ("scan_samples", ["scan", "MODEL", "--samples", HUGE, "--out", "OUT"], ["--samples", HUGE]),
    ("mitigate_samples", ["mitigate", "MODEL", "--out", "OUT", "--samples", HUGE], ["--samples", HUGE]),
    ("mitigate_test_samples", ["mitigate", "MODEL", "--out", "OUT", "--test-samples", HUGE], ["--test-samples"]),
    ("train_samples", ["train", "--out", "OUT", "--train-samples", HUGE], ["--train-samples", HUGE]),
    ("train_val_samples", ["train", "--out", "OUT", "--val-samples", HUGE], ["--val-samples", HUGE]),
    ("attack_samples", ["attack", "badnets", "--out", "OUT", "--train-samples", HUGE], ["--train-samples"]),
    ("zoo_samples", ["zoo", "build", "--out", "OUT", "--test-samples", HUGE], ["--test-samples", HUGE]),
    ("bench_detect_samples", ["bench", "detect", "--zoo", "OUT", "--calibration", "OUT", "--out", "OUT",
                              "--samples", HUGE], ["--samples", HUGE]),
    ("bench_mitigate_samples", ["bench", "mitigate", "--zoo", "OUT", "--out", "OUT", "--samples", HUGE],
     ["--samples", HUGE]),
    ("train_width_zero", ["train", "--out", "OUT", "--width", "0"], ["--width", "0"]),
    ("zoo_width_zero", ["zoo", "build", "--out", "OUT", "--width", "0"], ["--width", "0"]),
    ("train_data_missing", ["train", "--out", "OUT", "--data", "NOWHERE"], ["--data", "no-such-data",
                                                                              "no such file or folder"]),
]


@pytest.mark.parametrize("case,argv,words", VALUES, ids=[v[0] for v in VALUES])
def test_bad_values_get_one_line_before_any_work(tiny_model, tmp_path, capsys, case, argv, words):
    out = tmp_path / "out"
    names = {"MODEL": str(tiny_model), "OUT": str(out), "NOWHERE": str(tmp_path / "no-such-data")}
    code = sg_main([names.get(a, a) for a in argv])
    one_error_line(code, capsys.readouterr().err, words)
    assert not out.exists()


@pytest.mark.parametrize("fps", ["0", "-2", "nan", "1000"])
def test_trial_fps_zero_is_refused_like_the_other_bad_rates(tmp_path, capsys, fps):
    db = tmp_path / "trial.db"
    code = edge_main(["trial", "--db", str(db), "--participant", "P01", "--fps", fps, "--max-frames", "1"])
    one_error_line(code, capsys.readouterr().err, ["--fps", "1..240"])
    assert not db.exists()


# ------------------------------------------------------------------------------------------------
# 19.4: securegaze outputs checked before the work
# ------------------------------------------------------------------------------------------------


def _file(root: Path, name: str) -> Path:
    (root / name).write_text("earlier\n")
    return root / name


def _folder_with(root: Path, inner: str, as_folder: bool) -> Path:
    out = root / "earlier-out"
    (out / inner).parent.mkdir(parents=True, exist_ok=True)
    (out / inner).mkdir() if as_folder else (out / inner).write_text("earlier\n")
    return out


#: (case, command before --out, build the --out path, words); the model does not exist, so an --out
#: checked after the model was read would give the model's error instead.
OUTPUTS = [
    ("scan_out_is_a_file", ["scan", "NOMODEL", "--samples", "32"], lambda r: _file(r, "scan"), ["is a file"]),
    ("scan_out_under_a_file", ["scan", "NOMODEL", "--samples", "32"], lambda r: _file(r, "plain") / "scan",
     ["plain is a file", "cannot be created"]),
    ("scan_report_is_a_folder", ["scan", "NOMODEL", "--samples", "32"],
     lambda r: _folder_with(r, "report.json", True), ["report.json is a folder"]),
    ("mitigate_out_is_a_file", ["mitigate", "NOMODEL"], lambda r: _file(r, "mitigated"), ["is a file"]),
    ("mitigate_scan_dir_is_a_file", ["mitigate", "NOMODEL"], lambda r: _folder_with(r, "scan_after", False),
     ["scan_after is a file"]),
    ("train_out_is_a_file", ["train"], lambda r: _file(r, "run"), ["is a file"]),
    ("attack_out_under_a_file", ["attack", "badnets"], lambda r: _file(r, "plain") / "run", ["plain is a file"]),
    ("export_out_is_a_file", ["export", "NOMODEL"], lambda r: _file(r, "bundle"), ["is a file"]),
    ("zoo_out_is_a_file", ["zoo", "build"], lambda r: _file(r, "zoo"), ["is a file"]),
]


@pytest.mark.parametrize("case,argv,build,words", OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_securegaze_outputs_are_checked_before_the_work(tmp_path, capsys, case, argv, build, words):
    out = build(tmp_path)
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    argv = [str(tmp_path / "no-model.onnx") if a == "NOMODEL" else a for a in argv]
    code = sg_main([*argv, "--out", str(out)])
    one_error_line(code, capsys.readouterr().err, ["--out", str(out), *words])
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before


# ------------------------------------------------------------------------------------------------
# 19.6: an unsafe checkpoint is refused without advice to load it unsafely
# ------------------------------------------------------------------------------------------------


class _Removes:
    """Unpickling this removes ``marker`` (a file the test made): proof that nothing unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.remove, (self.marker,))


class _Plain:
    """An ordinary class: not on torch's list of safe globals."""


def _torch_reduce(path: Path, marker: Path) -> None:
    torch.save({"format": 1, "model": _Removes(marker), "model_config": {"architecture": "small_cnn"}}, path)


def _torch_class(path: Path, marker: Path) -> None:
    torch.save({"format": 1, "model": _Plain(), "model_config": {"architecture": "small_cnn"}}, path)


def _raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"model": _Removes(marker)}, protocol=4))


UNSAFE = [("torch_save_reduce", _torch_reduce), ("torch_save_class", _torch_class), ("raw_pickle", _raw_pickle)]
#: Words of torch's advice on loading a refused file anyway.
ADVICE = ("weights_only", "False", "trust", "safe_globals", "Re-running", "allowlist")


@pytest.mark.parametrize("case,write", UNSAFE, ids=[u[0] for u in UNSAFE])
def test_an_unsafe_checkpoint_is_refused_without_advice_to_load_it_unsafely(tmp_path, capsys, case, write):
    marker = tmp_path / "marker"
    marker.write_text("still here\n")
    checkpoint = tmp_path / "model.pt"
    write(checkpoint, marker)
    code = sg_main(["scan", str(checkpoint), "--samples", "32", "--out", str(tmp_path / "scan")])
    line = one_error_line(code, capsys.readouterr().err, ["model.pt", "refused without unpickling"])
    assert marker.exists()
    for word in ADVICE:
        assert word not in line, line
