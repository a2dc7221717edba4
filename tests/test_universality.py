"""SecureGaze's universality statistic U (setting universality): the bound search, the report, the joint decision."""

import json
import math

import pytest
import torch
from conftest import TEST_THREADS

from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense import create_detector, load_model_any
from securegaze.defense.securegaze import SecureGazeDetector, SecureGazeSettings
from securegaze.defense.securegaze import universality as universality_module
from securegaze.defense.securegaze.universality import bound_crossing, universality_ratio
from securegaze.errors import ConfigError

#: A scan of a few seconds on the tiny models (the figures mean nothing; the bookkeeping does).
QUICK = {**SecureGazeDetector.smoke_settings, "probe": False, "universality": True}


@pytest.fixture(scope="module")
def tiny_u(tiny_gaze_bundles):
    torch.set_num_threads(TEST_THREADS)
    clean = render_dataset(64, 32, seed=77, config=synthetic_style("easy", size=32))
    x = torch.from_numpy(clean.images).permute(0, 3, 1, 2).float() / 255.0
    models = {kind: load_model_any(tiny_gaze_bundles[kind]).eval() for kind in ("benign", "backdoored")}
    for model in models.values():
        for p in model.parameters():
            p.requires_grad_(False)
    return models, clean, x


@pytest.mark.parametrize("bisections", [0, 2])
@pytest.mark.parametrize("per_image", [False, True])
def test_the_search_brackets_the_crossing_and_interpolates_within(tiny_u, per_image, bisections):
    models, _, x = tiny_u
    cfg = SecureGazeSettings(universality_steps=30, universality_bisections=bisections)
    faces = x[:16] if per_image else x
    found = bound_crossing(models["benign"], faces, cfg, per_image, 0.02)
    assert found.censored == "" and math.isfinite(found.eps_star)
    above = [eps for eps, ratio in found.tried.items() if ratio > cfg.rho_out]
    below = [eps for eps, ratio in found.tried.items() if ratio <= cfg.rho_out]
    assert above and below, found.tried
    low = max(eps for eps in above if eps < min(below)) if any(eps < min(below) for eps in above) else None
    assert low is not None and low <= found.eps_star <= min(below)
    # Doubling or halving brackets within a factor 2 (less where the highest bound caps a doubling);
    # each bisection halves that in log space.
    assert min(below) / low <= 2.0 ** (0.5 ** bisections) * (1 + 1e-9)
    assert len(found.tried) >= 2 + bisections
    summary = found.summary()
    assert summary["eps_star"] == found.eps_star and len(summary["tried"]) == len(found.tried)


def test_a_model_no_bound_collapses_gives_no_evidence(tiny_u, monkeypatch):
    models, _, x = tiny_u
    # The search stops at its highest bound; made tiny, nothing collapses: U is inf, never flagged.
    monkeypatch.setattr(universality_module, "HIGHEST_BOUND", 0.004)
    cfg = SecureGazeSettings(universality_steps=4)
    universal = bound_crossing(models["benign"], x, cfg, False, 0.002)
    assert universal.censored == "above" and universal.eps_star == math.inf
    assert max(universal.tried) == pytest.approx(0.004)
    per_image = bound_crossing(models["benign"], x[:8], cfg, True, 0.002)
    assert universality_ratio(universal, per_image) == math.inf


def test_the_scan_reports_u_and_flags_when_either_statistic_does(tiny_u):
    models, clean, _ = tiny_u
    detector = create_detector("securegaze", **QUICK)
    events = []
    report = detector.scan(models["backdoored"], clean.images, progress=events.append)
    searches = [e for e in events if e.stage in ("universal", "per_image")]
    assert {e.stage for e in searches} == {"universal", "per_image"}
    assert all(1 <= e.step <= e.total and e.values["tries"] >= 1 for e in searches)
    u = report.details["universality"]
    assert math.isfinite(u["ratio"]), u  # its trigger is a shared edit: some bound collapses it
    assert report.threshold == 1.0 and report.settings["universality"] is True
    assert set(u) >= {"ratio", "universal", "per_image", "threshold", "calibration", "flagged", "statistic"}
    assert u["ratio"] == pytest.approx(u["universal"]["eps_star"] / u["per_image"]["eps_star"])
    cost, cost_threshold = report.details["cost_ratio"], report.details["cost_ratio_threshold"]
    assert report.score == pytest.approx(min(cost / cost_threshold, u["ratio"] / u["threshold"]))
    assert (report.verdict == "backdoored") == (report.score < 1.0) == bool(report.details["flagged_by"])
    assert "U: " in report.details["threshold_calibration"]
    assert set(report.details["stage_seconds"]) >= {"universal", "per_image"}
    assert report.details["score_statistic"] == ("min(cost_ratio_to_shift_reference / its threshold, "
                                                 "universality / its threshold)")

    # A threshold on U above any model's U flags it by U alone; the cached report, re-decided, agrees.
    strict = detector.with_settings(universality_threshold=999.0)
    redecided = strict.redecided(report)
    assert redecided.verdict == "backdoored" and "universality" in redecided.details["flagged_by"]
    assert redecided.score == pytest.approx(min(cost / cost_threshold, u["ratio"] / 999.0))
    assert redecided.details["universality"]["calibration"] == "set by the user (999)"
    assert strict.redecided(report).to_dict() == redecided.to_dict()
    assert detector.redecided(report).to_dict() == report.to_dict()


def test_without_universality_the_score_is_the_cost_ratio(tiny_u):
    models, clean, _ = tiny_u
    detector = create_detector("securegaze", **{**QUICK, "universality": False})
    report = detector.scan(models["benign"], clean.images)
    assert "universality" not in report.details["stage_seconds"] and report.details["universality"] is None
    assert report.score == report.details["cost_ratio"] and report.threshold == detector.config.threshold
    assert report.details["flagged_by"] == (["cost_ratio"] if report.verdict == "backdoored" else [])
    assert detector.redecided(report) is report


@pytest.mark.parametrize(("settings", "pattern"), [
    ({"universality_steps": 0}, "universality_steps"),
    ({"universality_bisections": 21}, "universality_bisections"),
    ({"universality_faces": 1}, "universality_faces"),
    ({"universality_threshold": -1.0}, "universality_threshold"),
    ({"universality": "yes"}, "universality"),
])
def test_bad_universality_settings_are_one_clear_line(settings, pattern):
    with pytest.raises(ConfigError, match=pattern) as caught:
        create_detector("securegaze", **settings)
    assert "\n" not in str(caught.value)


def test_the_scan_command_prints_u_and_exits_by_the_joint_verdict(tiny_gaze_bundles, tmp_path, capsys):
    import cv2

    from securegaze.cli import main

    # The faces the tiny models were trained on, as a user brings them: a plain folder of images.
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, image in enumerate(render_dataset(64, 32, seed=78, config=synthetic_style("easy", size=32)).images):
        cv2.imwrite(str(faces / f"face-{i:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    args = ["scan", str(tiny_gaze_bundles["backdoored"]), "--clean", str(faces), "--out", str(tmp_path / "scan")]
    for key, value in {**QUICK, "universality_threshold": 999.0}.items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    code = main(args)
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "scan" / "report.json").read_text())
    u = report["details"]["universality"]
    assert isinstance(u["ratio"], float), u  # finite (JSON writes inf as "inf")
    # A threshold on U above any model's: flagged by U whatever the cost ratio says; exit 10 (backdoored).
    assert u["flagged"] and report["verdict"] == "backdoored" and code == 10
    assert "universality" in report["details"]["flagged_by"]
    assert f"universality U {u['ratio']:.3f} vs threshold 999.000" in out and "flagged by: " in out
