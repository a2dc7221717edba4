"""Bad-input and fault sweep: every case runs the real command line and must be refused cleanly.

96 cases tried, 96 handled (94 refusals, plus two documented successes: mixed image sizes are
resized, and a run that succeeds with ``--overwrite`` replaces an existing ``--out``); 17 of them failed
before the fixes.
Defects found and fixed:

1. usage errors (``--samples -3``, ``--max-frames 0``, ``--target 999``, a missing argument) printed
   Typer's multi-line box and no ``error:`` line: the command line's support module reports them as one line;
2. a ``.pt`` holding a pickled object was refused (never unpickled) with torch's multi-paragraph
   message: securegaze/training.py keeps its one "Unsupported global" line;
3. ``--samples 1000000000000`` (evaluate, scan) ended in a MemoryError traceback: bounded by
   ``MAX_SAMPLES`` in the securegaze command line;
4. ``evaluate --seed -1`` ran (exit 0) and ``scan --seed -1`` was refused only after loading the model
   and the data, without naming ``--seed``: both check ``--seed >= 0`` first;
5. ``evaluate --json FOLDER`` and ``scan --out FILE`` failed with a traceback after all the work:
   checked first by the securegaze command line;
6. ``edge-app run --out`` into a missing folder or onto a folder: a traceback after the integrity
   check; now refused before it (edge_app/cli.py);
7. ``edge-app run`` emptied an existing ``--out`` when a check after the integrity check refused the
   run (e.g. a mistyped ``engine.providers``): the JSON-lines file is now opened after every check;
8. ``edge-app run --summary FOLDER`` and ``edge-app report --out FOLDER`` / ``--json FOLDER`` failed
   with a traceback after all the work: checked first (securegaze.io.check_output_file).

Each case calls ``securegaze.cli.main`` / ``edge_app.cli.main`` in-process (a subprocess only where
a real process is needed: the read-only audit database, which root would otherwise write anyway)
and asserts (a) exit code 2, (b) exactly one ``error:`` line on stderr, the last one, naming the
offending file or value and what was expected, and no traceback, (c) nothing already written
changed: existing outputs (``--out``, ``--json``, ``--summary``), an existing audit database and
the model files are compared byte for byte and by mtime before and after.

Cases already covered elsewhere and not repeated here (tests/test_trial.py::test_bad_trial_databases):
``report`` on a trial without frames, on a database without a trial, on a newer schema, on a
SQLite file of another program and on a missing file, and ``--target up``; (tests/test_cli.py):
``evaluate --samples 0``, ``attack`` with an unknown name / ``--target 50,0`` / ``--rate 1.5``;
(tests/test_edge_cli.py): ``camera:97``, a missing video, ``attention.warning_after_s: 0``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edge_app.cli import main as edge_main
from securegaze.cli import main as sg_main

SIZE = 32  # the tiny bundle's input size
RAW = 8  # input size of the hand-built ONNX graphs
#: Settings that keep any integrity scan that does start short (none should: every case is refused first).
QUICK_CONFIG = ("integrity:\n  clean_samples: 8\n"
                "  scan_settings: {steps: 5, eval_samples: 8, sensitivity_samples: 8}\n")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def snapshot(*roots: Path) -> dict:
    """Every file and folder under ``roots``: bytes and mtime for files, the listing for folders."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            state[dirpath] = sorted(dirnames + filenames)
            for name in filenames:
                path = Path(dirpath) / name
                state[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return state


def assert_unchanged(before: dict, *roots: Path) -> None:
    after = snapshot(*roots)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a refused run changed {changed}"


def assert_refused(code: int, err: str, needles, alone: bool = True) -> str:
    """Exit 2 and one ``error:`` line (the last line) holding every needle; returns that line.
    ``alone``: stderr holds nothing else (the edge app prints its integrity steps before)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code == 2, f"exit {code}: {err}"
    assert len(errors) == 1 and lines[-1] == errors[0], err
    if alone:
        assert len(lines) == 1, err
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def _save_graph(path: Path, shape_in, outputs: int, weight: np.ndarray) -> Path:
    """x -> Flatten -> Gemm(weight) -> gaze (and copies of it as further outputs)."""
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["gaze"])]
    names = ["gaze"]
    for i in range(1, outputs):
        nodes.append(helper.make_node("Identity", ["gaze"], [f"copy{i}"]))
        names.append(f"copy{i}")
    graph = helper.make_graph(
        nodes, "fault", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2]) for n in names],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(2, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: a file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _forge_clean_record(db: Path, model: Path) -> None:
    """An audit record saying ``model`` scanned clean with QUICK_CONFIG's scan settings (the record
    key the run asks for), so a run reaches the steps after the check."""
    import yaml

    from edge_app.integrity import IntegrityChecker, IntegritySettings

    settings = IntegritySettings(**yaml.safe_load(QUICK_CONFIG)["integrity"], audit_db=db)
    IntegrityChecker(settings).record_verdict(model, "clean", 1.0, 0.5, "none (forged by the fault sweep)")


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The bad models (and one good bundle) every model case reads; built once (~2 s)."""
    from securegaze.bundle import export_bundle
    from securegaze.models import create_model

    root = tmp_path_factory.mktemp("fault-models")
    torch.manual_seed(0)
    good = root / "good"
    export_bundle(create_model("small_cnn", input_size=SIZE, width=8).eval(), good, "tiny-untrained")
    onnx_bytes = (good / "model.onnx").read_bytes()
    m = {"good": good}
    m["empty"] = root / "empty.onnx"
    m["empty"].write_bytes(b"")
    m["truncated"] = root / "truncated.onnx"
    m["truncated"].write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    m["random"] = root / "random.onnx"
    m["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    weight = (np.random.default_rng(1).standard_normal((2 * RAW * RAW, 2)) * 0.1).astype(np.float32)
    m["wrong_input"] = _save_graph(root / "wrong_input.onnx", ["N", 2, RAW, RAW], 1, weight)  # (grey is read)
    weight3 = (np.random.default_rng(1).standard_normal((3 * RAW * RAW, 2)) * 0.1).astype(np.float32)
    m["three_outputs"] = _save_graph(root / "three_outputs.onnx", ["N", 3, RAW, RAW], 3, weight3)
    nan_weight = np.full((3 * SIZE * SIZE, 2), np.nan, np.float32)
    m["nan"] = _save_graph(root / "nan_output.onnx", ["N", 3, SIZE, SIZE], 1, nan_weight)
    m["bundle_wrong_size"] = root / "bundle_wrong_size"
    shutil.copytree(good, m["bundle_wrong_size"])
    _edit_manifest(m["bundle_wrong_size"], lambda d: (d["input"].update(size=48), d["config"].update(input_size=48)))
    m["wrong_sha"] = root / "bundle_wrong_sha"
    shutil.copytree(good, m["wrong_sha"])
    _edit_manifest(m["wrong_sha"], lambda d: d.update(onnx_sha256="0" * 64))
    m["missing_keys"] = root / "bundle_missing_keys"
    shutil.copytree(good, m["missing_keys"])
    _edit_manifest(m["missing_keys"], lambda d: d.pop("input"))
    m["no_manifest"] = root / "bundle_no_manifest"
    shutil.copytree(good, m["no_manifest"])
    (m["no_manifest"] / "manifest.json").unlink()
    m["safetensors"] = root / "corrupt.safetensors"
    m["safetensors"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": garbage" + bytes(range(256)))
    m["marker"] = root / "UNPICKLED"
    m["pickle"] = root / "model.pt"
    torch.save({"format": 1, "model": _Payload(m["marker"]), "model_config": {"architecture": "small_cnn"}},
               m["pickle"])
    m["root"] = root
    return m


@pytest.fixture()
def outputs(tmp_path):
    """Outputs that exist before the call: a refused run must leave every one as it was."""
    from edge_app.integrity import AuditDatabase

    o = {"root": tmp_path}
    o["jsonl"] = tmp_path / "frames.jsonl"
    o["jsonl"].write_text('{"frame": 0, "from": "an earlier run"}\n')
    o["summary"] = tmp_path / "summary.json"
    o["summary"].write_text('{"earlier": true}\n')
    o["json"] = tmp_path / "eval.json"
    o["json"].write_text('{"earlier": true}\n')
    o["html"] = tmp_path / "report.html"
    o["html"].write_text("<p>earlier report</p>\n")
    o["scan_out"] = tmp_path / "scan-out"
    o["scan_out"].mkdir()
    (o["scan_out"] / "report.json").write_text('{"earlier": true}\n')
    o["db"] = tmp_path / "audit.sqlite3"
    AuditDatabase(o["db"]).close()
    o["config"] = tmp_path / "quick.yaml"
    o["config"].write_text(QUICK_CONFIG)
    return o


def _edge_run(o: dict, *args: str) -> list[str]:
    """``--overwrite``: a refused run must leave the existing ``--out`` whole even when it was allowed
    to replace it (without it, an existing recording is refused first)."""
    return ["run", "--audit-db", str(o["db"]), "--out", str(o["jsonl"]), "--summary", str(o["summary"]),
            "--max-frames", "2", "--overwrite", *args]


def _edge_args(o: dict, model: Path) -> list[str]:
    return _edge_run(o, "--model", str(model), "--source", "synthetic:short", "--config", str(o["config"]))


# ------------------------------------------------------------------------------------------------
# model files: evaluate, scan, edge-app run
# ------------------------------------------------------------------------------------------------

#: (case, words the error line must hold besides the file's name)
MODEL_CASES = [
    ("empty", ["empty"]),
    ("truncated", ["truncated or corrupt"]),
    ("random", ["not a readable ONNX model"]),
    ("wrong_input", ["(N, 2, 8, 8)", "(N, 3, S, S)"]),
    ("bundle_wrong_size", ["(N, 3, 48, 48)"]),
    ("three_outputs", ["outputs", "one (N, 2)"]),
    ("nan", ["NaN"]),
    ("wrong_sha", ["sha256", "does not match"]),
    ("missing_keys", ["input", "manifest"]),
    ("no_manifest", ["manifest.json"]),
    ("safetensors", ["safetensors"]),
    ("pickle", []),
]
COMMANDS = ["evaluate", "scan", "edge-run"]


def _named(path: Path) -> str:
    return path.name


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case,words", MODEL_CASES, ids=[c for c, _ in MODEL_CASES])
def test_bad_model_files_are_refused(world, outputs, capsys, case, words, command):
    model = world[case]
    if case == "pickle" and command == "evaluate":
        words = ["neither a directory"]
    elif case == "pickle":
        words = ["checkpoint"]
    before = snapshot(outputs["root"], world["root"])
    if command == "evaluate":
        code = sg_main(["evaluate", str(model), "--samples", "4", "--json", str(outputs["json"])])
    elif command == "scan":
        code = sg_main(["scan", str(model), "--samples", "8", "--out", str(outputs["scan_out"])])
    else:
        code = edge_main(_edge_args(outputs, model))
    err = capsys.readouterr().err
    assert_refused(code, err, [_named(model), *words], alone=command != "edge-run")
    assert not world["marker"].exists(), "the .pt pickle was unpickled"
    assert_unchanged(before, outputs["root"], world["root"])


def test_the_pickle_payload_is_live(world, tmp_path):
    """Control for the pickle cases: unpickled for real, the payload does create its marker."""
    import pickle

    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


# ------------------------------------------------------------------------------------------------
# data: evaluate --data, scan --clean
# ------------------------------------------------------------------------------------------------


def _png(path: Path, h: int = SIZE, w: int = SIZE, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path.name


def _labelled(root: Path, rows: list[str], header: str = "image,subject,pitch,yaw", sizes=None) -> Path:
    """A folder+CSV dataset: ``rows`` are the CSV cells after the image name (one image per row)."""
    lines = [header]
    for i, cells in enumerate(rows):
        h, w = sizes[i] if sizes else (SIZE, SIZE)
        lines.append(f"{_png(root / f'face{i}.png', h, w, i)},{cells}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _data_empty(root: Path) -> Path:
    root.mkdir()
    return root


def _data_not_images(root: Path) -> Path:
    root.mkdir()
    for i in range(3):
        (root / f"notes{i}.txt").write_text("not a face\n")
    return root


def _data_images_without_labels(root: Path) -> Path:
    for i in range(3):
        _png(root / f"face{i}.png", seed=i)
    return root


def _data_corrupt_png(root: Path) -> Path:
    _labelled(root, ["s1,0.1,0.2", "s1,0.0,-0.1", "s2,-0.1,0.1"])
    (root / "face1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, then nothing
    return root


DATA_CASES = [
    ("empty_folder", _data_empty, []),
    ("non_images", _data_not_images, []),
    ("images_without_labels", _data_images_without_labels, []),
    ("corrupt_png", _data_corrupt_png, ["face1.png", "not an image"]),
    ("labels_nan", lambda r: _labelled(r, ["s1,0.1,0.2", "s1,nan,0.1"]), ["labels.csv", "line 3", "pitch"]),
    ("labels_string", lambda r: _labelled(r, ["s1,0.1,0.2", "s1,0.1,left"]), ["labels.csv", "'left'", "yaw"]),
    ("labels_missing_column", lambda r: _labelled(r, ["s1,0.1", "s1,0.2"], header="image,subject,pitch"),
     ["labels.csv", "missing column 'yaw'"]),
    ("labels_missing_subject", lambda r: _labelled(r, ["0.1,0.1", "0.2,0.2"], header="image,pitch,yaw"),
     ["labels.csv", "missing column 'subject'"]),
]


@pytest.mark.parametrize("command", ["evaluate", "scan"])
@pytest.mark.parametrize("case,build,words", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_refused(world, outputs, tmp_path, capsys, case, build, words, command):
    data = build(tmp_path / "data")
    before = snapshot(outputs["root"], world["root"])
    if command == "evaluate":
        code = sg_main(["evaluate", str(world["good"]), "--data", str(data), "--samples", "4",
                        "--json", str(outputs["json"])])
    else:
        code = sg_main(["scan", str(world["good"]), "--clean", str(data), "--samples", "8",
                        "--out", str(outputs["scan_out"])])
    assert_refused(code, capsys.readouterr().err, words or [str(data)])
    assert_unchanged(before, outputs["root"], world["root"])


def test_mixed_image_sizes_are_resized_not_refused(world, outputs, tmp_path, capsys):
    """Documented (securegaze/data/folder_csv.py): crops may differ in size; they are resized to the
    model's input size. So this is the one data case that must succeed, and write its result."""
    data = _labelled(tmp_path / "data", ["s1,0.1,0.2", "s1,0.0,-0.1", "s2,-0.1,0.1"],
                     sizes=[(SIZE, SIZE), (48, 40), (20, 24)])
    code = sg_main(["evaluate", str(world["good"]), "--data", str(data), "--json", str(outputs["json"])])
    assert code == 0, capsys.readouterr().err
    assert json.loads(outputs["json"].read_text())["count"] == 3


# ------------------------------------------------------------------------------------------------
# edge-app run: sources, config, audit database, --out
# ------------------------------------------------------------------------------------------------


def _video_empty(o: dict) -> list[str]:
    video = o["root"] / "empty.mp4"
    video.write_bytes(b"")
    return ["--source", str(video)]


def _video_text(o: dict) -> list[str]:
    video = o["root"] / "notes.mp4"
    video.write_text("this is a text file renamed to .mp4\n" * 50)
    return ["--source", str(video)]


def _config(text: str):
    def build(o: dict) -> list[str]:
        o["config"].write_text(text)
        return ["--source", "synthetic:short"]
    return build


def _audit_random(o: dict) -> list[str]:
    o["db"].write_bytes(np.random.default_rng(3).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    return ["--source", "synthetic:short"]


def _audit_folder(o: dict) -> list[str]:
    o["db"].unlink()
    o["db"].mkdir()
    return ["--source", "synthetic:short"]


def _recorded(extra):
    """The model already scanned clean (a forged record), so the run gets past the integrity check."""
    def build(o: dict, model: Path) -> list[str]:
        _forge_clean_record(o["db"], model)
        return ["--source", "synthetic:short", *extra(o)]
    return build


def _out_missing_folder(o: dict) -> list[str]:
    o["jsonl"] = o["root"] / "no-such-folder" / "frames.jsonl"
    return []


def _out_folder(o: dict) -> list[str]:
    o["jsonl"] = o["root"] / "scan-out"
    return []


def _summary_folder(o: dict) -> list[str]:
    o["summary"] = o["scan_out"]
    return []


def _summary_missing_folder(o: dict) -> list[str]:
    o["summary"] = o["root"] / "no-such-folder" / "summary.json"
    return []


def _bad_provider(o: dict) -> list[str]:
    o["config"].write_text(QUICK_CONFIG + "engine:\n  providers: [nosuch]\n")
    return []


EDGE_CASES = [
    ("camera_7", lambda o: ["--source", "camera:7"], ["camera:7", "no camera at index 7"]),
    ("video_zero_bytes", _video_empty, ["empty.mp4", "not a readable video"]),
    ("video_text", _video_text, ["notes.mp4", "not a readable video"]),
    ("config_unknown_key", _config("camera:\n  widht: 640\n"), ["quick.yaml", "camera.widht", "unknown setting"]),
    ("config_out_of_range", _config("face:\n  min_detection_confidence: 1.5\n"),
     ["quick.yaml", "face.min_detection_confidence", "less than or equal to 1", "1.5"]),
    ("config_wrong_type", _config("synthetic:\n  fps: fast\n"), ["quick.yaml", "synthetic.fps", "'fast'"]),
    ("config_not_yaml", _config("attention: [warning_after_s: 3\n"), ["quick.yaml", "not a readable YAML"]),
    ("config_not_mapping", _config("- policy\n- warn\n"), ["quick.yaml", "expected a mapping"]),
    ("config_binary", _config("\x00\x01\x02"), ["quick.yaml"]),
    ("audit_db_random_bytes", _audit_random, ["audit.sqlite3", "not a readable audit database"]),
    ("audit_db_is_folder", _audit_folder, ["audit.sqlite3", "not a file"]),
    ("out_missing_folder", _recorded(_out_missing_folder), ["no-such-folder"]),
    ("out_is_folder", _recorded(_out_folder), ["scan-out", "folder"]),
    ("engine_provider_typo", _recorded(_bad_provider), ["nosuch", "provider"]),
    ("summary_is_folder", _recorded(_summary_folder), ["--summary", "scan-out", "folder"]),
    ("summary_missing_folder", _recorded(_summary_missing_folder), ["--summary", "no-such-folder"]),
]


@pytest.mark.parametrize("case,build,words", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_run_refuses_bad_sources_configs_databases_and_outputs(world, outputs, capsys, case, build, words):
    o = dict(outputs)
    o["config"].write_text(QUICK_CONFIG)
    extra = build(o, world["good"]) if case.startswith(("out_", "engine_", "summary_")) else build(o)
    before = snapshot(o["root"], world["root"])
    args = _edge_run(o, "--model", str(world["good"]), "--config", str(o["config"]), *extra)
    if "--source" not in extra:
        args += ["--source", "synthetic:short"]
    code = edge_main(args)
    assert_refused(code, capsys.readouterr().err, words, alone=False)
    if case == "engine_provider_typo":
        # Refused with the settings file, before the integrity check could write next to the model.
        assert not (world["good"] / "securegaze_audit.json").exists()
    assert_unchanged(before, o["root"], world["root"])


def test_read_only_audit_database_is_refused_before_the_scan(world, outputs):
    """A real process: root writes a chmod-444 file anyway, so as root the run loses the capability
    that lets it (setpriv drops CAP_DAC_OVERRIDE)."""
    db, out = outputs["db"], outputs["jsonl"]
    db.chmod(0o444)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: a read-only file cannot be made")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    before = snapshot(outputs["root"], world["root"])
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "edge_app.cli", "run", "--model", str(world["good"]), "--source",
         "synthetic:short", "--config", str(outputs["config"]), "--audit-db", str(db), "--out", str(out),
         "--max-frames", "2", "--overwrite"], capture_output=True, text=True, timeout=120)
    assert_refused(result.returncode, result.stderr, ["audit.sqlite3", "readonly"], alone=False)
    assert "integrity: scan" not in result.stderr  # refused before the scan, not after a minute of it
    assert_unchanged(before, outputs["root"], world["root"])


def test_existing_out_is_replaced_only_by_a_run_that_succeeds(world, outputs, capsys):
    """What a successful run with ``--overwrite`` does to an existing ``--out``: it is replaced (not
    appended to) with this run's lines. A refused run leaves it as it was (the cases above); without
    ``--overwrite`` or ``--append`` an existing recording is refused (tests/test_reliability_outputs.py)."""
    _forge_clean_record(outputs["db"], world["good"])
    code = edge_main(_edge_args(outputs, world["good"]))
    assert code in (0, 3), capsys.readouterr().err  # 3: two frames are too few for the drive's checks
    lines = [json.loads(x) for x in outputs["jsonl"].read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1]
    assert "from" not in lines[0]


# ------------------------------------------------------------------------------------------------
# trial reports
# ------------------------------------------------------------------------------------------------


def _db_zero_bytes(o: dict) -> list[str]:
    db = o["root"] / "trial.db"
    db.write_bytes(b"")
    return [str(db)]


def _db_random(o: dict) -> list[str]:
    db = o["root"] / "trial.db"
    db.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return [str(db)]


def _db_text(o: dict) -> list[str]:
    db = o["root"] / "trial.db"
    db.write_text("SQLite format 3 is what this line pretends to be\n")
    return [str(db)]


def _target(text: str):
    def build(o: dict) -> list[str]:
        return [*_db_zero_bytes(o), f"--target={text}"]
    return build


REPORT_CASES = [
    ("zero_bytes", _db_zero_bytes, ["trial.db", "not a trial database"]),
    ("random_bytes", _db_random, ["trial.db", "not a readable trial database"]),
    ("text_file", _db_text, ["trial.db", "trial database"]),
    ("target_999_0", _target("999,0"), ["--target", "999,0", "PITCH,YAW"]),
    ("target_nan", _target("nan,0"), ["--target", "nan,0", "PITCH,YAW"]),
]


@pytest.mark.parametrize("option,what", [("--out", "the HTML report"), ("--json", "the numbers")])
def test_report_outputs_are_checked_before_the_databases_are_read(outputs, capsys, option, what):
    """A folder where the report's file should go: refused at once, not after reading every trial."""
    paths = {"--out": outputs["html"], "--json": outputs["json"], option: outputs["scan_out"]}
    dbs = _db_zero_bytes(outputs)
    before = snapshot(outputs["root"])
    code = edge_main(["report", *dbs, "--out", str(paths["--out"]), "--json", str(paths["--json"])])
    assert_refused(code, capsys.readouterr().err, [option, "scan-out", "is a folder", what])
    assert_unchanged(before, outputs["root"])


@pytest.mark.parametrize("case,build,words", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_report_refuses_bad_databases_and_targets(outputs, capsys, case, build, words):
    args = build(outputs)
    before = snapshot(outputs["root"])
    code = edge_main(["report", *args, "--out", str(outputs["html"]), "--json", str(outputs["json"])])
    assert_refused(code, capsys.readouterr().err, words)
    assert_unchanged(before, outputs["root"])


# ------------------------------------------------------------------------------------------------
# command-line values
# ------------------------------------------------------------------------------------------------

HUGE = str(10**12)
VALUE_CASES = [
    ("evaluate_samples_negative", ["evaluate", "GOOD", "--samples", "-3"], ["--samples", "-3"]),
    ("evaluate_samples_huge", ["evaluate", "GOOD", "--samples", HUGE], ["--samples", HUGE]),
    ("evaluate_seed_negative", ["evaluate", "GOOD", "--samples", "4", "--seed", "-1"], ["--seed", "-1"]),
    ("scan_samples_zero", ["scan", "GOOD", "--samples", "0"], ["--samples", "0"]),
    ("scan_samples_negative", ["scan", "GOOD", "--samples", "-1"], ["--samples", "-1"]),
    ("scan_samples_huge", ["scan", "GOOD", "--samples", HUGE], ["--samples", HUGE]),
    ("scan_seed_negative", ["scan", "GOOD", "--samples", "8", "--seed", "-1"], ["--seed", "-1"]),
    ("scan_threshold_zero", ["scan", "GOOD", "--samples", "8", "--threshold", "0"], ["threshold", "0"]),
    ("scan_threshold_nan", ["scan", "GOOD", "--samples", "8", "--threshold", "nan"], ["threshold", "nan"]),
    ("scan_threshold_inf", ["scan", "GOOD", "--samples", "8", "--threshold", "inf"], ["threshold", "inf"]),
    ("evaluate_json_is_folder", ["evaluate", "GOOD", "--samples", "4", "--json", "OUT"], ["--json", "scan-out"]),
    ("scan_out_is_file", ["scan", "GOOD", "--samples", "8", "--out", "JSON"], ["--out", "eval.json"]),
    ("attack_unknown_name", ["attack", "nosuch", "--out", "OUT"], ["unknown attack 'nosuch'"]),
    ("attack_target_999_0", ["attack", "badnets", "--out", "OUT", "--target", "999,0"], ["999", "gaze range"]),
    ("attack_target_one_value", ["attack", "badnets", "--out", "OUT", "--target", "999"], ["--target", "'999'"]),
]


@pytest.mark.parametrize("case,argv,words", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_bad_values_are_refused(world, outputs, capsys, case, argv, words):
    given = set(argv)
    argv = [{"GOOD": str(world["good"]), "OUT": str(outputs["scan_out"]), "JSON": str(outputs["json"])}.get(a, a)
            for a in argv]
    if argv[0] == "evaluate" and "--json" not in given:
        argv += ["--json", str(outputs["json"])]
    elif argv[0] == "scan" and "--out" not in given:
        argv += ["--out", str(outputs["scan_out"])]
    before = snapshot(outputs["root"], world["root"])
    code = sg_main(argv)
    assert_refused(code, capsys.readouterr().err, words)
    assert_unchanged(before, outputs["root"], world["root"])


EDGE_VALUE_CASES = [
    ("run_max_frames_zero", ["--max-frames", "0"], ["--max-frames"]),
    ("run_max_frames_negative", ["--max-frames", "-5"], ["--max-frames"]),
    ("run_policy_unknown", ["--policy", "maybe"], ["--policy", "'maybe'"]),
]


@pytest.mark.parametrize("case,extra,words", EDGE_VALUE_CASES, ids=[c[0] for c in EDGE_VALUE_CASES])
def test_edge_run_bad_values_are_refused(world, outputs, capsys, case, extra, words):
    before = snapshot(outputs["root"], world["root"])
    code = edge_main([*_edge_args(outputs, world["good"]), *extra])
    assert_refused(code, capsys.readouterr().err, words)
    assert_unchanged(before, outputs["root"], world["root"])
