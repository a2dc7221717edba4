"""``edge-app calibrate driver``: a synthetic driver whose eyes show a known personal offset is calibrated,
and ``edge-app run --driver`` then tracks them as well as a driver without an offset; the fit's
outlier handling and refusals on recorded looks made up here."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_app.calibrate.driver import MIN_FRAMES_PER_TARGET, fit_correction
from edge_app.calibrate.gaze_correction import read_gaze_correction
from edge_app.calibrate.gaze_session import TargetRecord
from edge_app.cli import main
from edge_app.trial.protocol import TrialTarget
from securegaze.bundle import load_bundle
from securegaze.errors import CalibrationError

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
OFFSET = (2.0, -4.0)  # pitch, yaw deg: a kappa-sized personal offset


def _config(root: Path, name: str, offset=(0.0, 0.0)) -> Path:
    path = root / name
    path.write_text(f"synthetic:\n  fps: 5\n  seed: 0\n  personal_offset_deg: [{offset[0]}, {offset[1]}]\n"
                    "integrity:\n  policy: warn\ndriver:\n  store: drivers\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A copy of the default model with a forged clean audit record for both configs (the integrity
    check's verdicts are tests/test_edge_integrity.py's subject), and the configs of the driver
    with and without the offset."""
    from edge_app.integrity import IntegrityChecker
    from edge_app.startup import load_edge_config

    root = tmp_path_factory.mktemp("driver")
    model = root / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    db = root / "audit.sqlite3"
    configs = {"zero": _config(root, "zero.yaml"), "offset": _config(root, "offset.yaml", OFFSET)}
    for path in configs.values():
        IntegrityChecker(load_edge_config(path, audit_db=db).integrity).record_verdict(
            model, "clean", 1.0, 0.5, "none (forged by tests/test_calibrate_driver.py)")
    return {"root": root, "model": model, "db": db, **configs}


def _run_error(setup, config: str, *extra) -> float:
    summary = setup["root"] / "summary.json"
    code = main(["run", "--source", "synthetic:short", "--config", str(setup[config]), "--audit-db", str(setup["db"]),
                 "--model", str(setup["model"]), "--summary", str(summary), "--out", str(setup["root"] / "f.jsonl"),
                 "--overwrite", *extra])
    assert code == 0
    return json.loads(summary.read_text())["mean_angular_error_deg"]


def test_calibrated_driver_with_an_offset_is_tracked_like_one_without(setup, capsys):
    code = main(["calibrate", "driver", "--driver-id", "D1", "--source", "synthetic", "--config", str(setup["offset"]),
                 "--audit-db", str(setup["db"]), "--model", str(setup["model"])])
    out = capsys.readouterr().out
    assert code == 0, out
    path = setup["root"] / "drivers" / "D1.yaml"  # driver.store of the config, relative to it
    correction = read_gaze_correction(path)
    assert correction.driver_id == "D1" and "error over the targets" in out
    zero = _run_error(setup, "zero")
    offset = _run_error(setup, "offset")
    calibrated = _run_error(setup, "offset", "--driver", "D1")
    err = capsys.readouterr().err
    assert "driver calibration: driver D1" in err
    # The offset costs the uncalibrated driver degrees (measured 1.11 -> 4.95 deg, seed 0); after the
    # calibration the error is within 0.5 deg of the driver without one (measured 1.17, a margin of
    # 0.44 deg on this seed; docs/calibration.md has seeds 0-4, all within the bound, one by 0.02).
    assert calibrated < zero + 0.5, (zero, offset, calibrated)
    # The same file named by its path.
    assert _run_error(setup, "offset", "--driver", str(path)) == pytest.approx(calibrated, abs=1e-9)


def _record(name, pred_deg, target_deg, n=8, noise=0.3, seed=0, faces=None) -> TargetRecord:
    rng = np.random.default_rng(seed)
    r = TargetRecord(TrialTarget(name, f"look at {name}", tuple(target_deg)))
    r.frames = n
    r.faces = n if faces is None else faces
    for _ in range(r.faces):
        r.pred_norm.append(np.radians(np.asarray(pred_deg) + rng.normal(0, noise, 2)))
        r.target_norm.append(np.radians(np.asarray(target_deg, dtype=float)))
    return r


TARGETS = {"a": (10.0, 0.0), "b": (5.0, -30.0), "c": (20.0, 25.0), "d": (-5.0, 0.0), "e": (-15.0, 28.0),
           "f": (4.0, 45.0)}


def test_fit_recovers_a_bias_and_leaves_out_a_target_not_looked_at():
    bias = np.array([-1.5, 3.0])
    records = [_record(n, np.array(t) - bias, t, seed=i) for i, (n, t) in enumerate(TARGETS.items())]
    records[2] = _record("c", np.array(TARGETS["c"]) - bias + [0.0, 12.0], TARGETS["c"])  # looked elsewhere
    fit = fit_correction(records, "D2", "bias")
    assert fit.correction.kind == "bias"
    assert np.allclose(fit.correction.bias_deg, bias, atol=0.3)
    assert [t.name for t in fit.targets if not t.used] == ["c"] and "off the bias fit" in fit.targets[2].note
    assert fit.rms_after_deg < 0.5 < fit.rms_before_deg
    # A gain error (a model that under-reads large turns) is what the affine correction is for.
    gain = [_record(n, (np.array(t) - 2.0) / 1.2, t, seed=i) for i, (n, t) in enumerate(TARGETS.items())]
    auto = fit_correction(gain, "D3", "auto")
    assert auto.correction.kind == "affine" and auto.rms_after_deg < 1.0
    with pytest.raises(CalibrationError, match="poor fit, 3.0"):  # a bias alone leaves 3 deg
        fit_correction(gain, "D3", "bias")


@pytest.mark.parametrize("case,needle", [
    ("no_face", "targets have frames, need 4; not usable: a (0 frames with a gaze of 8)"),
    ("scattered", "of the targets agree, need 4; not usable: e (off the bias fit of the others by"),
    ("affine_few", "an affine fit needs 5 usable targets"),
])
def test_fit_refusals_name_what_is_missing(case, needle):
    records = [_record(n, t, t, seed=i) for i, (n, t) in enumerate(TARGETS.items())]
    kind = "auto"
    if case == "no_face":
        records = [_record("a", TARGETS["a"], TARGETS["a"], faces=0)] + [
            _record(n, TARGETS[n], TARGETS[n], faces=MIN_FRAMES_PER_TARGET - 1) for n in "bcd"] + records[4:]
    elif case == "scattered":
        rng = np.random.default_rng(5)
        records = [_record(n, np.array(t) + rng.uniform(-15, 15, 2), t, seed=i) for i, (n, t) in enumerate(TARGETS.items())]
        kind = "bias"
    else:
        records, kind = records[:4], "affine"
    with pytest.raises(CalibrationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        fit_correction(records, "D4", kind)


def test_driver_files_and_options_refused_in_one_line(setup, tmp_path, capsys):
    def error(args):
        assert main(args) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1
        return lines[0]

    base = ["--config", str(setup["offset"]), "--audit-db", str(setup["db"]), "--model", str(setup["model"])]
    assert "no calibration for driver nobody" in error(["run", "--source", "synthetic:short", "--driver", "nobody",
                                                         *base])
    bad = tmp_path / "D5.yaml"
    bad.write_text("format: securegaze-driver-calibration/1\ndriver_id: D5\ncreated_utc: x\ncorrection: bias\n"
                   "matrix: [[1, 0], [0, 1]]\nbias_deg: [30, 0]\n")
    assert "not a personal offset" in error(["run", "--source", "synthetic:short", "--driver", str(bad), *base])
    other = tmp_path / "D6.yaml"
    other.write_text(bad.read_text().replace("driver_id: D5", "driver_id: D9").replace("[30, 0]", "[1, 0]"))
    assert "holds the calibration of driver D9, not D6" in error(["run", "--source", "synthetic:short", "--driver",
                                                                  str(other), *base])
    fitted = tmp_path / "D8.yaml"
    fitted.write_text(other.read_text().replace("driver_id: D9", "driver_id: D8") + f"gaze_model_sha256: {'ab' * 32}\n")
    sha = load_bundle(setup["model"]).sha256[:12]
    assert f"was calibrated for gaze model abababababab, this run's model is {sha}" in error(
        ["run", "--source", "synthetic:short", "--driver", str(fitted), "--max-frames", "1", *base])
    assert "--driver-id 'a b'" in error(["calibrate", "driver", "--driver-id", "a b", "--source", "synthetic", *base])
    assert "--targets sunroof" in error(["calibrate", "driver", "--driver-id", "D7", "--targets", "sunroof", *base])
    assert "--dwell-s 0.2" in error(["calibrate", "driver", "--driver-id", "D7", "--dwell-s", "0.2", *base])
