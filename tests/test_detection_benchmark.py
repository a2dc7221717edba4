"""The detection and mitigation benchmarks: their statistics, and a real run on a tiny zoo."""

import json
import math

import numpy as np
import pytest
import torch

from securegaze.bench.detection import (
    auroc,
    cached_report,
    calibrate_threshold,
    roc_curve,
    run_detection_benchmark,
)
from securegaze.bench.detection_report import markdown_table, plot_roc
from securegaze.bench.mitigation import (
    mitigation_markdown,
    run_mitigation_benchmark,
    summarise_mitigation,
)
from securegaze.defense import create_detector
from securegaze.errors import ConfigError, InputFileError
from securegaze.zoo import ZooSpec, build_zoo

INF = math.inf


@pytest.mark.parametrize("backdoored, benign, want", [
    ([0.001, 0.002], [0.02, 0.03], 1.0),  # every backdoored score below every benign one
    ([0.02, 0.03], [0.001, 0.002], 0.0),
    ([0.01], [0.01], 0.5),  # a tie counts one half
    ([0.001, 0.05], [0.02, 0.03], 0.5),
    ([0.001], [INF, 0.02], 1.0),  # an infeasible benign scan (inf) is the least suspicious
    ([INF], [0.02], 0.0),
])
def test_auroc_of_a_below_score(backdoored, benign, want):
    assert auroc(backdoored, benign, "below") == pytest.approx(want)
    # The same data read as an "above" score (e.g. an anomaly index) after negation.
    assert auroc([-s for s in backdoored], [-s for s in benign], "above") == pytest.approx(want)


def test_roc_curve_runs_from_origin_to_one_and_matches_the_area():
    rng = np.random.default_rng(0)
    pos, neg = rng.lognormal(-6, 1, 30), rng.lognormal(-4, 1, 40)
    fpr, tpr = roc_curve(pos, neg)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # Without ties the step curve's area is the Mann-Whitney AUROC.
    area = float(np.sum(np.diff(fpr) * tpr[1:]))
    assert area == pytest.approx(auroc(pos, neg), abs=1e-12)


def test_calibrated_threshold_sits_below_every_benign_score_it_saw():
    scores = [0.03, 0.04, 0.05, 0.035, 0.045]
    threshold = calibrate_threshold(scores)
    logs = np.log(scores)
    assert threshold == pytest.approx(math.exp(logs.mean() - 2.3263478740 * logs.std(ddof=1)), rel=1e-6)
    assert threshold < min(scores)
    # A wider spread of benign scores pushes the threshold down: fewer false alarms are bought with TPR.
    assert calibrate_threshold([0.01, 0.04, 0.09, 0.02, 0.06]) < threshold
    # The cap: never above the smallest benign score (a log-normal fit can overshoot with 3 points).
    assert calibrate_threshold([0.02, 0.02000001, 0.02000002], target_fpr=0.4) <= 0.02
    # Infeasible scans do not count towards the minimum number of models.
    with pytest.raises(ConfigError, match="at least 3 benign models with a finite score, got 2 of 4"):
        calibrate_threshold([0.02, 0.03, INF, INF])


# -- a real run on a tiny zoo ---------------------------------------------------------------------

# Plumbing sizes: the models are barely trained, so the figures mean nothing. Every scan must still
# reach a feasible collapse and score finite (three finite calibration scores, a target for the
# mitigation run). At the default rho_out 0.1 these models reached it only near the end of 160 steps
# on an AMD EPYC and not at all on one Intel Xeon; with the bound at 0.2 they reach it at step 60-140
# over detector seeds 0-2 and 1 or 2 threads (Intel), and 200 steps leave three evaluations to spare.
TINY = ZooSpec(attacks=("badnets",), k=2, size=32, train_samples=512, test_samples=64, epochs=2, poison_rate=0.2)
CALIBRATION = ZooSpec(attacks=(), k=3, size=32, train_samples=512, test_samples=64, epochs=2, seed=1)
QUICK = dict(steps=200, eval_every=20, sensitivity_samples=32, eval_samples=32, batch_size=16, rho_out=0.2)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bench")
    build_zoo(root / "zoo", TINY)
    build_zoo(root / "calib", CALIBRATION)
    detector = create_detector("securegaze", seed=0, **QUICK)
    seen = []
    results = run_detection_benchmark(root / "zoo", root / "calib", root / "out", detector, samples=32,
                                      progress=seen.append)
    return root, detector, results, seen


def test_detection_benchmark_scores_every_model_with_a_threshold_from_the_other_zoo(bench):
    root, detector, results, seen = bench
    assert len(results.calibration_scores) == 3 and len(results.models) == 4
    assert results.threshold == calibrate_threshold(results.calibration_scores)
    assert {m.attack for m in results.models} == {"benign", "badnets"}
    assert all(m.zoo == "zoo" for m in results.models), "calibration models must not be scored"
    for m in results.models:
        assert m.verdict == ("backdoored" if m.score < results.threshold else "clean")
        assert (m.target_error_deg is not None) == m.backdoored
    (group,) = results.per_attack
    assert group.name == "badnets" and group.backdoored == 2 and group.benign == 2
    flagged = sum(m.verdict == "backdoored" for m in results.models if m.backdoored)
    assert group.tpr == flagged / 2 and results.overall.backdoored == 2
    assert 0.0 <= results.overall.auroc <= 1.0 and results.overall.median_scan_s > 0
    # The threshold is one run's: the calibration models are scanned once each, the zoo's flags are
    # confirmed with two more seeds at the calibrated threshold.
    out = root / "out" / "scans"
    calib, zoo = sorted((out / "calib").glob("*/report.json")), sorted((out / "zoo").glob("*/report.json"))
    assert len(calib) == 3 and len(zoo) == 4
    for report in calib:
        assert json.loads(report.read_text())["settings"]["confirm_seeds"] == 0
    for report in zoo:
        settings = json.loads(report.read_text())["settings"]
        assert settings["confirm_seeds"] == 2 and settings["threshold"] == pytest.approx(results.threshold)
    assert "scanned once each" in results.calibration
    assert detector.single_run().settings() == {**detector.settings(), "confirm_seeds": 0}
    neural_cleanse = create_detector("neural_cleanse")
    assert neural_cleanse.single_run() is neural_cleanse  # one run already: nothing to take away
    # 3 calibration + 4 scored models, each announced and finished, none from the cache.
    assert sum(p.report is not None for p in seen) == 7 and not any(p.cached for p in seen)
    json.dumps(results.to_dict())  # plain data


def test_a_rerun_reuses_the_cached_scans_and_changed_settings_do_not(bench):
    root, detector, results, _ = bench
    seen = []
    again = run_detection_benchmark(root / "zoo", root / "calib", root / "out", detector, samples=32,
                                    progress=seen.append)
    assert [m.score for m in again.models] == [m.score for m in results.models]
    assert all(p.cached for p in seen if p.report is not None)
    report_path = root / "out" / "scans" / "zoo" / "benign-00" / "report.json"
    sha = json.loads(report_path.read_text())["model_sha256"]
    scanned_at = json.loads(report_path.read_text())["settings"]["threshold"]
    assert cached_report(report_path, sha, detector) is not None
    assert cached_report(report_path, sha, detector.with_settings(threshold=scanned_at / 2)) is not None  # decision only
    assert cached_report(report_path, sha, detector.with_settings(steps=41)) is None
    assert cached_report(report_path, "0" * 64, detector) is None  # the model file changed
    # A report from before a setting was added is that setting's default: kept at the default only.
    older = json.loads(report_path.read_text())
    added = "input_jitter"  # off by default
    del older["settings"][added]
    older_path = report_path.parent / "older.json"
    older_path.write_text(json.dumps(older))
    assert cached_report(older_path, sha, detector) is not None
    assert cached_report(older_path, sha, detector.with_settings(**{added: True})) is None
    # confirm_seeds: a report that another threshold decides the other way lacks the runs that threshold
    # would have made (a clean first run was never put to the vote): scanned again. A threshold that
    # decides it as before keeps it. (A report whose score is its cost ratio: no warp record to re-decide.)
    clean = json.loads(report_path.read_text())
    score = clean["score"]
    assert math.isfinite(score) and clean["settings"]["confirm_seeds"] == 2
    clean["verdict"], clean["settings"]["threshold"], clean["details"]["warp"] = "clean", score / 2, None
    clean_path = report_path.parent / "clean.json"
    clean_path.write_text(json.dumps(clean))
    assert cached_report(clean_path, sha, detector.with_settings(threshold=score / 4)) is not None
    assert cached_report(clean_path, sha, detector.with_settings(threshold=score * 0.9)) is not None
    assert cached_report(clean_path, sha, detector.with_settings(threshold=score * 2)) is None
    flagged = {**clean, "verdict": "backdoored", "settings": {**clean["settings"], "threshold": score * 2}}
    flagged_path = report_path.parent / "flagged.json"
    flagged_path.write_text(json.dumps(flagged))
    assert cached_report(flagged_path, sha, detector.with_settings(threshold=score * 1.5)) is not None
    assert cached_report(flagged_path, sha, detector.with_settings(threshold=score / 2)) is None


def test_table_and_roc_plot_are_written(bench, tmp_path):
    _, _, results, _ = bench
    table = markdown_table(results, "securegaze bench detect --zoo Z --calibration C")
    assert "| **overall** | 2 | 2 |" in table and "securegaze bench detect --zoo Z" in table
    assert all(f"| {m.id} |" in table for m in results.models)
    png = plot_roc(results, tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mitigation_benchmark_uses_the_scans_and_measures_the_real_trigger(bench):
    root, detector, results, _ = bench
    reports = run_mitigation_benchmark(root / "zoo", root / "out", detector, samples=32, per_attack=1,
                                       threshold=results.threshold)
    (report,) = reports
    assert report.model == "badnets-00" and report.attack == "badnets"
    scanned = json.loads((root / "out" / "scans" / "zoo" / "badnets-00" / "report.json").read_text())
    assert report.scan_before["score"] == scanned["score"]
    for key in ("clean_error_deg", "ae_deg", "dae_deg", "asr"):
        assert math.isfinite(report.attack_before[key]) and math.isfinite(report.attack_after[key])
    assert report.scan_after["threshold"] == results.threshold
    (per_attack, overall) = summarise_mitigation(reports)
    assert per_attack.attack == "badnets" and overall.attack == "overall" and overall.models == 1
    assert "| badnets-00 |" in mitigation_markdown(reports, "cmd", "machine")
    # Cached: the second run reads the report back.
    again = run_mitigation_benchmark(root / "zoo", root / "out", detector, samples=32, per_attack=1,
                                     threshold=results.threshold)
    assert again[0].attack_after == report.attack_after


def test_benchmark_bad_input(bench, tmp_path):
    root, detector, _, _ = bench
    with pytest.raises(InputFileError, match="zoo.json"):
        run_detection_benchmark(tmp_path / "nothing", root / "calib", tmp_path / "out", detector)
    with pytest.raises(InputFileError, match="no scan of badnets-00; run securegaze bench detect first"):
        run_mitigation_benchmark(root / "zoo", tmp_path / "empty", detector, samples=32, per_attack=1)
