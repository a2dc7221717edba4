"""The detector comparison (issue 15): per-side calibration, the multi-detector bench loop, its page,
and the scan / bench options that pick detectors and settings by name."""

import json
import math
import statistics

import numpy as np
import pytest
import torch

from securegaze.bench.baselines import (
    detector_out_dir,
    detector_rows,
    parse_detector_names,
    run_detector_comparison,
)
from securegaze.bench.baselines_report import (
    DRMGUARD_ANCHOR,
    GENERATED_SECTION,
    MITIGATION_HOOK,
    anchor_figures,
    comparison_markdown,
    mitigation_table_from,
    plot_comparison_roc,
    write_comparison,
)
from securegaze.bench.calibration import calibrate_threshold, fit_threshold
from securegaze.bench.detection import DetectionResults, ModelScore, summarise
from securegaze.cli import main
from securegaze.defense import DEFAULT_THRESHOLD, DETECTORS, create_detector
from securegaze.defense.report import decide
from securegaze.errors import ConfigError, InputFileError
from securegaze.zoo import ZooSpec, build_zoo

Z99 = statistics.NormalDist().inv_cdf(0.99)
#: The 13 benign cost ratios of scanner 4.1 behind the default threshold (benchmarks/calibrate_threshold.py
#: --seeds 3 --fpr 0.001, docs/threshold_calibration.md): the generalised fit must give 0.3354.
SCANNER_41_BENIGN = [0.7560696764476362, 1.366419210716214, 1.0970049338970642, 1.9372806526136161,
                     1.673938211009514, 1.23278838898126, 0.9830532510510558, 0.8186634967892009,
                     0.6227492097973684, 1.0424791135122566, 0.7484927069460294, 1.0690546000179495,
                     2.3259440080844103]


# -- calibration on each detector's side and scale ------------------------------------------------

def test_securegaze_calibration_is_unchanged_by_the_generalisation():
    fitted = fit_threshold(SCANNER_41_BENIGN, target_fpr=0.001)
    assert fitted.fit == "lognormal" and fitted.suspicious_when == "below" and not fitted.capped
    assert round(fitted.threshold, 4) == round(DEFAULT_THRESHOLD, 4) == 0.3354
    assert calibrate_threshold(SCANNER_41_BENIGN, target_fpr=0.001) == fitted.threshold


def test_an_above_score_is_calibrated_on_its_upper_side():
    benign = [1.2, 1.5, 2.0, 1.1, 1.7]
    fitted = fit_threshold(benign, suspicious_when="above")
    logs = np.log(benign)
    assert fitted.fit == "lognormal"
    assert fitted.threshold == pytest.approx(math.exp(logs.mean() + Z99 * logs.std(ddof=1)))
    assert fitted.threshold > max(benign)
    # Mirror image: an "above" normal fit of s is minus the "below" normal fit of -s.
    assert fit_threshold(benign, suspicious_when="above", fit="normal").threshold == pytest.approx(
        -fit_threshold([-b for b in benign], suspicious_when="below", fit="normal").threshold)
    # The cap: an "above" threshold never flags a benign score seen (a tight fit with an outlier).
    capped = fit_threshold([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0], suspicious_when="above", target_fpr=0.4)
    assert capped.capped and capped.threshold == 9.0


def test_a_share_gets_a_logit_fit_that_stays_inside_zero_one():
    # ABS's REASR over three benign models (the first 32-px zoo of docs/baselines.md): a log-normal
    # quantile lands above 1, where no share can reach, and would flag nothing.
    benign = [0.8164, 0.9609, 0.9922]
    assert fit_threshold(benign, suspicious_when="above").threshold > 1.0
    fitted = fit_threshold(benign, suspicious_when="above", fit="logit")
    logits = np.log(np.asarray(benign) / (1 - np.asarray(benign)))
    expected = 1 / (1 + math.exp(-(logits.mean() + Z99 * logits.std(ddof=1))))
    assert fitted.fit == "logit" and fitted.threshold == pytest.approx(expected) and max(benign) < expected < 1
    assert "logit-normal fit of 3 benign scores, 1% quantile above" in fitted.describe()
    # A share of exactly 0 or 1 is moved just inside (and the cap keeps a share seen on a benign
    # model unflagged); a score outside [0, 1] is not a share.
    low = fit_threshold([0.0, 0.1, 0.2], suspicious_when="below", fit="logit")
    assert math.isfinite(low.centre) and low.capped and low.threshold == 0.0
    high = fit_threshold([0.9, 0.95, 1.0], suspicious_when="above", fit="logit")
    assert math.isfinite(high.centre) and high.capped and high.threshold == 1.0
    with pytest.raises(ConfigError, match=r"logit calibration needs scores in \[0, 1\] \(a share\), got 1.5"):
        fit_threshold([0.5, 0.7, 1.5], fit="logit")
    assert create_detector("abs").calibration_fit == "logit"
    assert create_detector("securegaze").calibration_fit == "auto"


def test_scores_at_or_below_zero_get_a_normal_fit():
    benign = [-0.8, 0.0, 0.4, 1.1, -0.2]  # e.g. a MAD anomaly index
    fitted = fit_threshold(benign, suspicious_when="above")
    assert fitted.fit == "normal"
    assert fitted.threshold == pytest.approx(np.mean(benign) + Z99 * np.std(benign, ddof=1))
    below = fit_threshold(benign, suspicious_when="below")
    assert below.threshold == pytest.approx(np.mean(benign) - Z99 * np.std(benign, ddof=1))
    assert "normal fit of 5 benign scores, 1% quantile above" in fitted.describe()
    # Non-finite scores are left out; the count of finite ones decides whether a fit is possible.
    assert fit_threshold(benign + [math.inf, -math.inf, math.nan], suspicious_when="above").models == 5
    with pytest.raises(ConfigError, match="log-normal calibration needs positive scores, got -0.8"):
        fit_threshold(benign, fit="lognormal")
    with pytest.raises(ConfigError, match="suspicious_when must be 'below' or 'above', got 'sideways'"):
        fit_threshold(benign, suspicious_when="sideways")
    with pytest.raises(ConfigError, match="at least 3 benign models with a finite score, got 2 of 3"):
        fit_threshold([0.0, -1.0, math.nan], suspicious_when="above")


# -- the comparison page, from results made by hand ----------------------------------------------

def _results(name, side, benign, backdoored, threshold, calibration="normal fit"):
    models = [ModelScore(f"benign-{i:02d}", "zoo", "benign", False, s, decide(s, threshold, side), 10.0 + i, None,
                         None, True, "") for i, s in enumerate(benign)]
    models += [ModelScore(f"{a}-00", "zoo", a, True, s, decide(s, threshold, side), 20.0, 0.8, 3.0, True, "")
               for a, s in backdoored.items()]
    per_attack, overall, hard = summarise(models, threshold, side)
    return DetectionResults(name, "1.0", {}, threshold, [0.0, 0.1, 0.2], 0.01, models, per_attack, overall, hard,
                            machine="test machine", suspicious_when=side, calibration=calibration)


def test_comparison_page_and_roc_put_securegaze_first_and_fill_the_anchor(tmp_path):
    sg = _results("securegaze", "below", [0.5, 0.7], {"badnets": 0.02, "tape": 0.9}, 0.15, "log-normal fit")
    nc = _results("neural_cleanse", "above", [-0.5, 0.3], {"badnets": 3.0, "tape": -1.0}, 2.0)
    page = comparison_markdown([sg, nc], "securegaze bench detect --detectors securegaze,neural_cleanse")
    assert page.index("| SecureGaze 1.0 |") < page.index("| neural_cleanse 1.0 |")
    # AUROC per attack, then overall: SecureGaze 1.0 on badnets, 0.0 on tape (0.9 > both benign scores).
    assert "| SecureGaze 1.0 | 1.000 | 0.000 | **0.500** | 75% | 50% | 0% | 0.15 | below |" in page
    assert "| neural_cleanse 1.0 | 1.000 | 0.000 | **0.500** | 75% | 50% | 0% | 2 | above |" in page
    assert "| badnets-00 | badnets | 0.0200 * | 3.0000 * |" in page and "Regenerate: `securegaze bench" in page
    assert MITIGATION_HOOK in page and "2 benign and 2 backdoored models" in page
    assert "| neural_cleanse | 0.379 | 0.500 | 0.500 |" in page
    assert "| feature_re | 0.599 | not run | not run |" in page
    tables = [[ln.count("|") for ln in block.splitlines() if ln.startswith("|")] for block in page.split("\n\n")]
    assert all(len(set(t)) == 1 for t in tables if t), tables  # every row of a table has the header's cells
    assert anchor_figures([sg, nc])["neural_cleanse"] == {"published": DRMGUARD_ANCHOR["neural_cleanse"],
                                                          "mean_per_attack": 0.5, "overall": 0.5}
    with_table = comparison_markdown([sg, nc], "cmd", mitigation_table="| method | ASR after |\n|---|---|\n")
    assert "| method | ASR after |" in with_table and MITIGATION_HOOK not in with_table
    uncalibrated = _results("neural_cleanse", "above", [1.0], {"badnets": 2.0}, math.nan, "not calibrated: x")
    assert "| none | above |" in comparison_markdown([sg, uncalibrated], "cmd")
    png = plot_comparison_roc([sg, nc], tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_mitigation_methods_results_in_the_same_folder_give_the_pages_table(tmp_path):
    from securegaze.bench.mitigation import MitigationReport
    from securegaze.io import atomic_write_json

    assert mitigation_table_from(tmp_path) is None  # bench mitigate --methods not run there
    before = {"asr": 0.95, "ae_deg": 1.0, "dae_deg": 30.0, "clean_error_deg": 5.0}
    after = {"asr": 0.02, "ae_deg": 28.0, "dae_deg": 5.5, "clean_error_deg": 5.3}
    report = MitigationReport("badnets-00", None, None, None, None, None, before, after, None, 2048, 1000, 42.0,
                              attack="badnets", method="fine_pruning")
    atomic_write_json(tmp_path / "mitigation_methods.json", {"methods": ["fine_pruning"], "machine": "m",
                                                             "models": [report.to_dict()]})
    table = mitigation_table_from(tmp_path)
    assert "| fine_pruning | 1 | 95.0% | 2.0% | 28.0 | 5.5 | +0.30 |" in table
    assert table.strip() in comparison_markdown([_results("securegaze", "below", [0.5, 0.7], {"badnets": 0.02},
                                                          0.15)], "cmd", mitigation_table=table)
    atomic_write_json(tmp_path / "mitigation_methods.json", {"rows": []})
    with pytest.raises(InputFileError, match="mitigation_methods.json: not the results of bench mitigate --methods"):
        mitigation_table_from(tmp_path)


# -- the bench loop on a tiny zoo -----------------------------------------------------------------

#: SecureGaze and the first registered baseline (only SecureGaze until a baseline is registered).
LOOP = ["securegaze"] + [n for n in DETECTORS.names() if n != "securegaze"][:1]
TINY = ZooSpec(attacks=("badnets",), k=1, size=32, train_samples=256, test_samples=32, epochs=1, poison_rate=0.2)
CALIBRATION = ZooSpec(attacks=(), k=3, size=32, train_samples=256, test_samples=32, epochs=1, seed=1)


def _smoke(name):
    return create_detector(name, **DETECTORS.get(name).smoke_settings)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("baselines")
    build_zoo(root / "zoo", TINY)
    build_zoo(root / "calib", CALIBRATION)
    seen = []
    results = run_detector_comparison(root / "zoo", root / "calib", root / "out", [_smoke(n) for n in reversed(LOOP)],
                                      samples=16, progress=lambda name, p: seen.append((name, p)))
    return root, results, seen


def test_every_detector_is_scanned_into_its_own_cache_and_calibrated_on_its_own(loop):
    root, results, seen = loop
    assert [r.detector for r in results] == LOOP  # SecureGaze first, whatever order they were given in
    for r in results:
        assert r.suspicious_when == DETECTORS.get(r.detector).suspicious_when
        assert len(r.calibration_scores) == 3 and [m.id for m in r.models] == ["benign-00", "badnets-00"]
        finite = [s for s in r.calibration_scores if math.isfinite(s)]
        if len(finite) >= 3:
            assert r.threshold == calibrate_threshold(r.calibration_scores, suspicious_when=r.suspicious_when)
        else:  # smoke scans may not collapse a model at all: reported, never a made-up threshold
            assert math.isnan(r.threshold) and r.calibration.startswith("not calibrated: calibration needs")
            assert not any(m.verdict == "backdoored" for m in r.models)
        for m in r.models:
            report = json.loads((detector_out_dir(root / "out", r.detector) / "scans" / "zoo" / m.id
                                 / "report.json").read_text())
            assert report["detector"] == r.detector and m.report_path.endswith(f"{m.id}/report.json")
    assert detector_out_dir(root / "out", "securegaze") == root / "out"
    assert detector_out_dir(root / "out", "neural_cleanse") == root / "out" / "detectors" / "neural_cleanse"
    # 5 models per detector, each announced and finished, none from the cache.
    assert sum(p.report is not None for _, p in seen) == 5 * len(LOOP) and not any(p.cached for _, p in seen)
    assert {name for name, _ in seen} == set(LOOP)


def test_a_rerun_reads_every_detector_from_its_cache_and_writes_the_page(loop, tmp_path):
    root, results, _ = loop
    seen = []
    again = run_detector_comparison(root / "zoo", root / "calib", root / "out", [_smoke(n) for n in LOOP],
                                    samples=16, progress=lambda name, p: seen.append(p))
    assert [[m.score for m in r.models] for r in again] == [[m.score for m in r.models] for r in results]
    assert all(p.cached for p in seen if p.report is not None)
    pages = write_comparison(again, root / "out", "securegaze bench detect --detectors " + ",".join(LOOP),
                             docs_dir=tmp_path / "docs")
    assert [p.name for p in pages] == ["baselines.md", "baselines.md"]
    for folder in (root / "out", tmp_path / "docs"):
        assert (folder / "baselines_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "| SecureGaze" in (folder / "baselines.md").read_text()
    assert [d["detector"] for d in json.loads((root / "out" / "baselines.json").read_text())["detectors"]] == LOOP
    for name in LOOP:
        assert (detector_out_dir(root / "out", name) / "detection.json").is_file()
    # The docs page is a generated section: prose written under it after a run survives a regeneration,
    # and the figures inside it are replaced, not repeated.
    docs_page = tmp_path / "docs" / "baselines.md"
    docs_page.write_text(docs_page.read_text() + "\n## What this run shows\n\nWritten by hand.\n")
    write_comparison(again, root / "out", "securegaze bench detect", docs_dir=tmp_path / "docs")
    text = docs_page.read_text()
    assert text.startswith(f"<!-- begin generated: {GENERATED_SECTION} -->")
    once = (root / "out" / "baselines.md").read_text().count("| SecureGaze")
    assert once >= 1 and text.count("| SecureGaze") == once and text.endswith("## What this run shows\n\nWritten by hand.\n")
    assert "<!-- begin generated" not in (root / "out" / "baselines.md").read_text()
    # A second zoo's comparison goes beside the first under its own name, its figure linked by that name.
    write_comparison(again, root / "out", "securegaze bench detect", docs_dir=tmp_path / "docs",
                     docs_page="baselines_second")
    second = (tmp_path / "docs" / "baselines_second.md").read_text()
    assert "![ROC of every detector](baselines_second_roc.png)" in second and "baselines_roc.png" not in second
    assert (tmp_path / "docs" / "baselines_second_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert docs_page.read_text() == text


def test_scan_takes_any_registered_detector_with_settings(loop, tmp_path, capsys):
    root, _, _ = loop
    model = root / "zoo" / "benign-00" / "model.safetensors"
    for name in LOOP:
        settings = {**DETECTORS.get(name).smoke_settings, "seed": 3}
        seed = settings.pop("seed")
        args = ["scan", str(model), "--detector", name, "--samples", "16", "--seed", str(seed),
                "--out", str(tmp_path / name)]
        for key, value in settings.items():
            args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
        assert main(args) in (0, 10)
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert report["detector"] == name and report["settings"]["seed"] == 3
        assert all(report["settings"][k] == v for k, v in settings.items())
        assert f"(backdoored when {DETECTORS.get(name).suspicious_when})" in capsys.readouterr().out


# -- options: one clear line, exit 2 ----------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["scan", "models/default", "--detector", "nosuch"], "unknown detector 'nosuch'; expected one of:"),
    (["scan", "models/default", "--set", "steps=abc"], "securegaze: steps must be an integer >= 1, got 'abc'"),
    (["scan", "models/default", "--set", "no_such_knob=1"], "securegaze: unknown setting(s) no_such_knob"),
    (["scan", "models/default", "--set", "steps"], "'steps' is not KEY=VALUE"),
    (["scan", "models/default", "--set", "seed=2"], "seed has its own option: use --seed"),
    (["bench", "detect", "--zoo", "z", "--calibration", "c", "--detectors", "securegaze,nosuch"],
     "unknown detector 'nosuch'"),
    (["bench", "detect", "--zoo", "z", "--calibration", "c", "--detectors", "securegaze,securegaze"],
     "securegaze named twice"),
    (["bench", "detect", "--zoo", "z", "--calibration", "c", "--set", "other.steps=3"],
     "'other.steps' is not DETECTOR.KEY with DETECTOR one of securegaze"),
    (["bench", "detect", "--zoo", "z", "--calibration", "c", "--set", "securegaze.steps=-1"],
     "securegaze: steps must be an integer >= 1, got -1"),
    (["bench", "detect", "--zoo", "z", "--calibration", "c", "--docs", "d", "--docs-page", "plain64"],
     "'plain64': expected a file name stem (letters, digits, _ and -) and --docs with several --detectors"),
    (["bench", "detect", "--zoo", "z", "--calibration", "c", "--detectors", "securegaze,k_arm", "--docs", "d",
      "--docs-page", "../plain64"], "'../plain64': expected a file name stem"),
    (["bench", "detect", "--zoo", "z", "--calibration", "c", "--detectors", "securegaze,k_arm",
      "--docs-page", "plain64"], "--docs-page"),
])
def test_bad_detector_options_give_one_clear_line_and_exit_2(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, and models/default need not exist for these
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not any(tmp_path.iterdir())


def test_attacks_must_be_among_the_zoos_own(loop, capsys, tmp_path):
    root, _, _ = loop
    for attacks, needle in (("badnets,tape", "'tape' is not an attack of the zoo"), ("badnets,tape", "(it has: badnets)"),
                            (",", "',': expected comma-separated attack names")):
        assert main(["bench", "detect", "--zoo", str(root / "zoo"), "--calibration", str(root / "calib"),
                     "--out", str(tmp_path / "out"), "--attacks", attacks]) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0], lines
        assert not (tmp_path / "out").exists()


def test_detector_names_and_the_listing():
    assert parse_detector_names(" securegaze , ") == ["securegaze"]
    with pytest.raises(ConfigError, match="no detector named"):
        parse_detector_names(",")
    rows = detector_rows()
    assert rows[0]["name"] == "securegaze" and [r["name"] for r in rows[1:]] == sorted(r["name"] for r in rows[1:])
    assert {r["name"] for r in rows} == set(DETECTORS.names())
    assert rows[0]["suspicious_when"] == "below" and rows[0]["threshold"] == f"{DEFAULT_THRESHOLD:g}"
    assert "calibrate_threshold.py" in rows[0]["source"]
