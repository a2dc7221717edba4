"""SecureGaze: scan a tiny benign and a tiny BadNets model, recover the target, mitigate, bad input."""

import copy
import json
import math
from dataclasses import replace

import cv2
import numpy as np
import onnx
import pytest
import torch
from conftest import TEST_THREADS, TINY_THRESHOLD, margin, sweep_seed, tiny_train_config, torch_threads
from onnx import TensorProto, helper, numpy_helper

from securegaze.attacks import create_attack, evaluate_attack
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense import (
    DEFAULT_THRESHOLD,
    DETECTORS,
    SCANNER_VERSION,
    ScanReport,
    SecureGazeDetector,
    create_detector,
    load_generator,
    load_model_any,
    mitigate,
    model_file_sha256,
)
from securegaze.defense.securegaze import TriggerGenerator
from securegaze.defense.securegaze.confirm import RULE, confirm_flag, confirmation_line
from securegaze.errors import ConfigError, DatasetError, InputFileError, ModelFormatError
from securegaze.geometry import angular_error_deg
from securegaze.io import sha256_file
from securegaze.training import evaluate, predict, train

TARGET = (math.radians(10.0), math.radians(-20.0))
# Easy faces (no head jitter, blur or noise): a width-8 CNN learns them in seconds.
EASY = synthetic_style("easy", size=32)


def _tiny_models(seed: int, out_dir):
    """(benign, backdoored, attack, clean scan images (256, 32, 32, 3) uint8, labelled test set)."""
    train_set = render_dataset(3000, 32, seed=10 * seed + 1, config=EASY)
    clean = render_dataset(256, 32, seed=10 * seed + 2, config=EASY)
    test_set = render_dataset(300, 32, seed=10 * seed + 3, config=EASY)
    config = tiny_train_config(seed)
    attack = create_attack("badnets", target_gaze=TARGET, poison_rate=0.1, seed=seed)
    backdoored, _ = train(config, attack.poison(train_set), None, out_dir / "backdoored")
    benign, _ = train(config, train_set, None, out_dir / "benign")
    return benign, backdoored, attack, clean, test_set


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(TEST_THREADS)
    out = tmp_path_factory.mktemp("securegaze")
    benign, backdoored, attack, clean, test_set = _tiny_models(sweep_seed(2), out)
    detector = create_detector("securegaze", seed=0, threshold=TINY_THRESHOLD)
    reports = {
        "benign": detector.scan(benign, clean.images),
        "backdoored": detector.scan(backdoored, clean.images, artifacts_dir=out / "scan",
                                    model_sha256=sha256_file(out / "backdoored" / "model.safetensors")),
    }
    return dict(benign=benign, backdoored=backdoored, attack=attack, clean=clean, test=test_set,
                reports=reports, out=out)


# -- detection ------------------------------------------------------------------------------------


def _assert_detects(benign_report: ScanReport, backdoored_report: ScanReport) -> None:
    margin("backdoored cost ratio", backdoored_report.details["cost_ratio"], "<", TINY_THRESHOLD)
    margin("benign cost ratio", benign_report.details["cost_ratio"], ">", TINY_THRESHOLD)
    assert backdoored_report.verdict == "backdoored" and benign_report.verdict == "clean"
    # "Clearly below": measured 0.016-0.020 against 0.31-0.40 over three seeds, a factor >= 15.
    margin("benign / backdoored cost ratio",
           benign_report.details["cost_ratio"] / backdoored_report.details["cost_ratio"], ">", 5.0)
    assert backdoored_report.constraints_met
    # The scan needs only the collapse_share (0.5) of the images to collapse; the BadNets trigger
    # takes more of them with it.
    margin("collapsed share", backdoored_report.collapsed_share, ">", 0.6)
    error = angular_error_deg(np.array(backdoored_report.target_gaze), np.array(TARGET))
    # Measured 4.3-7.4 deg over seed shifts 0-2 with 1 and 2 threads (AMD EPYC): the trimmed collapse
    # settles a few degrees from the target; a natural collapse lands tens of degrees away.
    margin("recovered target error (deg)", error, "<", 10.0)


def test_backdoored_model_is_flagged_and_benign_is_not(tiny):
    _assert_detects(tiny["reports"]["benign"], tiny["reports"]["backdoored"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
def test_detection_holds_for_other_training_seeds(seed, tmp_path):
    benign, backdoored, _, clean, _ = _tiny_models(seed, tmp_path)
    detector = create_detector("securegaze", seed=seed, threshold=TINY_THRESHOLD)
    _assert_detects(detector.scan(benign, clean.images), detector.scan(backdoored, clean.images))


def test_a_foreign_family_is_judged_with_the_default_settings(tmp_path):
    # A family the threshold was never calibrated on (plain_cnn: strided stem, plain conv blocks,
    # global pooling) with the patch in another corner, scanned with every setting at its default:
    # the score is a ratio of two collapse costs of the same model, so it needs no zoo of this family.
    torch.set_num_threads(TEST_THREADS)
    seed = sweep_seed(5)
    train_set = render_dataset(3000, 32, seed=10 * seed + 1, config=EASY)
    clean = render_dataset(256, 32, seed=10 * seed + 2, config=EASY)
    config = tiny_train_config(seed, "plain_cnn")
    attack = create_attack("badnets", target_gaze=TARGET, poison_rate=0.2, seed=seed, position="top_left")
    backdoored, _ = train(config, attack.poison(train_set), None, tmp_path / "backdoored")
    benign, _ = train(config, train_set, None, tmp_path / "benign")
    margin("plain_cnn ASR", evaluate_attack(backdoored, attack, clean).asr, ">", 0.7)  # 0.96-1.0 over 3 seeds
    detector = create_detector("securegaze")
    assert detector.settings() == SecureGazeDetector().settings()
    backdoored_report, benign_report = detector.scan(backdoored, clean.images), detector.scan(benign, clean.images)
    margin("plain_cnn backdoored cost ratio", backdoored_report.details["cost_ratio"], "<", DEFAULT_THRESHOLD)
    margin("plain_cnn benign cost ratio", benign_report.details["cost_ratio"], ">", DEFAULT_THRESHOLD)
    assert backdoored_report.score == backdoored_report.details["cost_ratio"]  # universality is off by default
    assert backdoored_report.verdict == "backdoored" and benign_report.verdict == "clean"


@pytest.mark.slow
def test_sensitivity_weighting_is_what_keeps_the_models_apart(tiny):
    # The natural-backdoor control of docs/architecture.md section 6: with uniform pricing the benign model
    # collapses by redrawing the irises, and the gap to the backdoored model shrinks (measured: a
    # factor ~20 with the weighting, ~4 without).
    detector = create_detector("securegaze", sensitivity_weighting=False)
    benign = detector.scan(tiny["benign"], tiny["clean"].images)
    backdoored = detector.scan(tiny["backdoored"], tiny["clean"].images)
    def cost(report):
        return report.details["cost_ratio"]

    weighted_gap = cost(tiny["reports"]["benign"]) / cost(tiny["reports"]["backdoored"])
    assert cost(benign) / cost(backdoored) < 0.5 * weighted_gap


def test_report_records_the_scan(tiny):
    report = tiny["reports"]["backdoored"]
    assert report.detector == "securegaze" and report.scanner_version == SCANNER_VERSION
    assert report.threshold == TINY_THRESHOLD == report.details["cost_ratio_threshold"]
    assert report.settings == SecureGazeDetector(threshold=TINY_THRESHOLD).settings()
    assert report.model_sha256 == sha256_file(tiny["out"] / "backdoored" / "model.safetensors")
    assert report.target_gaze_deg == pytest.approx(tuple(math.degrees(a) for a in report.target_gaze))
    assert report.clean_count == 256 and report.input_size == 32 and report.runtime_s > 0
    details = report.details  # SecureGaze's own statistics
    # Collapse: the kept share of the reversed predictions sits within a few degrees of its centre.
    margin("reversed/clean trimmed dispersion", details["dispersion_ratio"], "<", 0.1)
    assert details["score_statistic"] == "cost_ratio_to_shift_reference" and details["reference"]["cost"] > 0
    assert details["universality"] is None and report.score == details["cost_ratio"]
    # The warp branch does not run at 32 px: its budget, 2 % of the side, is under a pixel.
    assert details["warp"] is None and details["warp_not_run"].startswith("not run: at 32 px")
    assert details["reference"]["kind"] == "shift" and len(details["reference"]["shift_deg"]) == 2
    assert details["cost_ratio"] == pytest.approx(details["final_cost"] / details["reference"]["cost"])
    margin("reversed/clean feature-angle variance",
           details["feature_angle_variance_reversed"] / details["feature_angle_variance_clean"], "<", 0.05)
    assert report.perturbation_l1 > 0
    margin("perturbation L1", report.perturbation_l1, "<", 0.05)


def test_report_json_round_trip(tiny, tmp_path):
    report = tiny["reports"]["backdoored"]
    assert ScanReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    # An infeasible scan scores inf, which plain JSON cannot hold: written as "inf", read back as inf.
    hopeless = ScanReport.from_dict({**report.to_dict(), "score": "inf", "verdict": "clean"})
    path = hopeless.save(tmp_path / "report.json")
    assert json.loads(path.read_text())["score"] == "inf"
    assert ScanReport.load(path).score == math.inf and ScanReport.load(path) == hopeless
    bad = tmp_path / "bad.json"
    bad.write_text('{"verdict": "clean", "x": 1}')
    with pytest.raises(InputFileError, match="bad.json: not a valid scan report"):
        ScanReport.load(bad)


def test_scan_writes_the_trigger_picture_and_generator(tiny):
    report = tiny["reports"]["backdoored"]
    picture = cv2.imread(report.trigger_image_path)
    assert picture is not None and picture.shape[0] == 3 * 96 + 2 * 4  # clean / reversed / heat-map rows
    generator = load_generator(report.generator_path)
    x = torch.from_numpy(tiny["clean"].images[:4]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        edited = generator(x)
    assert edited.shape == x.shape and 0 <= edited.min() and edited.max() <= 1 and not torch.equal(edited, x)


def test_an_untrained_generator_is_the_identity():
    x = torch.rand(3, 3, 33, 33)
    x[0, 0, :2] = 0.0
    x[1, 1, :2] = 1.0
    assert torch.equal(TriggerGenerator(33, seed=5)(x), x)


def test_scan_is_deterministic_for_a_seed(tiny):
    quick = dict(steps=40, eval_every=20, sensitivity_samples=64, eval_samples=64)
    images = tiny["clean"].images[:64]
    first = create_detector("securegaze", seed=7, **quick).scan(tiny["backdoored"], images)
    again = create_detector("securegaze", seed=7, **quick).scan(tiny["backdoored"], images)
    other = create_detector("securegaze", seed=8, **quick).scan(tiny["backdoored"], images)
    assert _without_clocks(first) == _without_clocks(again)
    assert _without_clocks(first) != _without_clocks(other)


def test_a_scan_gives_the_same_result_on_any_number_of_threads(tiny):
    # parallel (the default): the reversal, reference, probes and restarts run side by side, each on one
    # torch thread, so two threads do the arithmetic of one; off, the runs share all threads in turn.
    quick = dict(steps=40, eval_every=20, sensitivity_samples=64, eval_samples=64, seed=7)
    images = tiny["clean"].images[:64]
    reports = {}
    for threads in (1, 2):
        with torch_threads(threads):
            reports[threads] = create_detector("securegaze", **quick).scan(tiny["backdoored"], images)
            assert torch.get_num_threads() == threads  # given back after the scan
    one, two = (_without_clocks(reports[n]) for n in (1, 2))
    assert one.pop("details").pop("torch_threads") == 1 and two.pop("details").pop("torch_threads") == 2
    assert one == two
    assert {"sensitivity", "reverse", "reference", "probe", "probe_interior"} <= set(
        reports[2].details["stage_seconds"])


def test_a_flag_stands_when_most_seeds_flag(tiny):
    # confirm_seeds: a flagged scan runs again with the next seeds; the majority of the runs decides.
    quick = dict(steps=40, eval_every=20, sensitivity_samples=32, eval_samples=32, probe_samples=32, probe_steps=20,
                 probe_refine_steps=10, warp=False)
    images, model = tiny["clean"].images[:48], tiny["backdoored"]

    def one_scan(seed):  # a single run (confirm_seeds is 2 by default)
        return create_detector("securegaze", seed=seed, confirm_seeds=0, **quick).scan(model, images).score

    # Two consecutive seeds whose scores are finite and rise: a threshold between them flags the first
    # seed's scan and clears the second's. Seeds are scanned until two do (a short scan may not reach the
    # collapse, inf, and the scores move with the seed either way).
    scores = [one_scan(0)]
    while len(scores) < 8 and not (math.isfinite(scores[-1]) and len(scores) > 1 and scores[-2] < scores[-1]):
        scores.append(one_scan(len(scores)))
    assert len(scores) > 1 and scores[-2] < scores[-1] < math.inf, scores
    base = len(scores) - 2
    first, second = scores[base], scores[base + 1]
    between = (first + second) / 2

    def confirmed(threshold, seeds, progress=None):
        return create_detector("securegaze", seed=base, threshold=threshold, confirm_seeds=seeds,
                               **quick).scan(model, images, progress=progress)

    # One more seed: two runs, both must flag. The second clears the model and its report is kept.
    events = []
    cleared = confirmed(between, 1, events.append)
    record = cleared.details["seed_confirmation"]
    assert cleared.verdict == "clean" and cleared.score == pytest.approx(second)
    assert [r["verdict"] for r in record["runs"]] == ["backdoored", "clean"] and record["kept_seed"] == base + 1
    assert cleared.settings["seed"] == base and cleared.settings["confirm_seeds"] == 1  # the scan as asked
    assert any(e.stage == f"confirm seed {base + 1}: reverse" for e in events)
    assert confirmation_line(cleared.details, cleared.verdict) == (
        f"seed confirmation: seed {base} {first:.4f} backdoored, seed {base + 1} {second:.4f} clean; "
        f"cleared by 1 of 2 runs, the report is seed {base + 1}'s")
    # Above both scores both runs flag: the flag stands, and the report is the less suspicious run's.
    kept = confirmed(2 * second, 1)
    record = kept.details["seed_confirmation"]
    assert kept.verdict == "backdoored" and [r["seed"] for r in record["runs"]] == [base, base + 1]
    assert kept.score == pytest.approx(second) and record["kept_seed"] == base + 1
    assert confirmation_line(kept.details, kept.verdict).endswith(f"flagged by 2 of 2 runs, the report is seed {base + 1}'s")
    # Two more seeds (the default): the first two disagree, so the third decides, and the report is the
    # median score's. Had the first two agreed, the third would not have run.
    third = one_scan(base + 2)
    voted = confirmed(between, 2)
    record = voted.details["seed_confirmation"]
    assert [r["seed"] for r in record["runs"]] == [base, base + 1, base + 2]
    assert [r["score"] for r in record["runs"]] == pytest.approx([first, second, third])
    assert voted.verdict == ("backdoored" if third < between else "clean")
    assert voted.score == pytest.approx(sorted([first, second, third])[1])
    both = confirmed(2 * second, 2)
    assert [r["seed"] for r in both.details["seed_confirmation"]["runs"]] == [base, base + 1]
    assert both.verdict == "backdoored" and both.score == pytest.approx(second)
    # A clean first scan runs once.
    once = confirmed(first / 2, 2)
    assert once.verdict == "clean" and "seed_confirmation" not in once.details
    assert confirmation_line(once.details, once.verdict) is None
    # A flag of the warp branch (4.4) stands without the vote: no other seed runs, the report is kept as it is.
    detector = create_detector("securegaze", seed=base, threshold=between, confirm_seeds=2, **quick)
    reversal = detector.reverse(model, images)
    flag = detector.report(reversal)
    assert flag.verdict == "backdoored" and flag.details["flagged_by"] == ["cost_ratio"]
    by_warp = replace(flag, details={**flag.details, "flagged_by": ["cost_ratio", "warp"]})
    events = []
    assert confirm_flag(detector, model, images, reversal, by_warp, events.append) == (reversal, by_warp)
    assert events == [] and "warp branch stands unvoted" in RULE


def _without_clocks(report):
    data = {k: v for k, v in report.to_dict().items() if k != "runtime_s"}
    data["details"] = {k: v for k, v in data["details"].items() if k != "stage_seconds"}
    return data


def test_scan_leaves_the_model_as_it_was(tiny):
    model = tiny["benign"]
    before = copy.deepcopy(model.state_dict())
    model.train()
    create_detector("securegaze", steps=2, eval_every=1, sensitivity_samples=16, eval_samples=16,
                    min_clean=0).scan(model, tiny["clean"].images[:16])
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_scan_that_never_reaches_the_collapse_scores_inf_and_says_clean(tiny):
    # Without the probe: its restart starts from a stamped patch, which this backdoor obeys at once.
    report = create_detector("securegaze", steps=2, eval_every=1, sensitivity_samples=16, eval_samples=16,
                             probe=False, universality=False, min_clean=0).scan(tiny["backdoored"],
                                                                                tiny["clean"].images[:16])
    assert not report.constraints_met and report.score == math.inf and report.verdict == "clean"
    assert report.details["steps_to_feasible"] is None


@pytest.mark.parametrize("threads", [1, 2])
def test_progress_reports_every_stage(tiny, threads):
    events = []
    with torch_threads(threads):  # two: the runs go side by side and call back from their threads
        create_detector("securegaze", steps=4, eval_every=2, sensitivity_samples=16, eval_samples=16,
                        min_clean=0).scan(tiny["benign"], tiny["clean"].images[:16], progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "sensitivity" and stages.count("reverse") == 4
    # The probe's restart and the reference run are whole runs of their own, each with its evaluations.
    assert set(stages) <= {"sensitivity", "reverse", "evaluate", "restart", "reference"}
    assert stages.count("restart") in (0, 4) and stages.count("reference") in (0, 4)
    runs = 1 + (stages.count("restart") > 0) + (stages.count("reference") > 0)
    assert stages.count("evaluate") == 2 * runs
    assert all(e.detector == "securegaze" and 1 <= e.step <= e.total for e in events)


# -- mitigation -----------------------------------------------------------------------------------


def test_mitigation_removes_the_backdoor_and_keeps_clean_accuracy(tiny):
    model, attack, test_set = tiny["backdoored"], tiny["attack"], tiny["test"]
    before = evaluate_attack(model, attack, test_set)
    original = copy.deepcopy(model.state_dict())
    mitigated = mitigate(model, tiny["clean"].images, tiny["reports"]["backdoored"], seed=0)
    after = evaluate_attack(mitigated, attack, test_set)
    margin("ASR before mitigation", before.asr, ">", 0.9)
    margin("ASR after / before mitigation", after.asr / before.asr, "<", 0.3)
    # Measured +0.09 to +1.01 deg over seed shifts 0-2 with 1 and 2 threads (AMD EPYC) on this 32-px
    # width-8 model; a mitigation that wrecks the model costs several degrees.
    margin("clean error rise (deg)", after.clean_error_deg - before.clean_error_deg, "<", 1.5)
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items()), "input model was changed"
    again = mitigate(model, tiny["clean"].images, tiny["reports"]["backdoored"], seed=0)
    assert np.array_equal(predict(again, test_set.images[:32]), predict(mitigated, test_set.images[:32]))


def test_mitigation_with_true_labels_and_its_bad_input(tiny):
    model, clean = tiny["backdoored"], tiny["clean"]
    generator = load_generator(tiny["reports"]["backdoored"].generator_path)
    tuned = mitigate(model, clean.images, generator, labels=clean.gaze, epochs=1)
    margin("clean error after true-label mitigation (deg)", evaluate(tuned, clean).mean_deg, "<", 15.0)
    with pytest.raises(DatasetError, match=r"labels must be \(N, 2\) radians with N=256"):
        mitigate(model, clean.images, generator, labels=clean.gaze[:10])
    with pytest.raises(ConfigError, match="has no generator_path"):
        mitigate(model, clean.images, tiny["reports"]["benign"])
    with pytest.raises(ConfigError, match="generator works on 64-px images"):
        mitigate(model, clean.images, TriggerGenerator(64))
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        mitigate(model, clean.images, generator, epochs=0)
    with pytest.raises(ConfigError, match=r"strengths must be one or more numbers in \(0, 10\]"):
        mitigate(model, clean.images, generator, strengths=(1.0, -2.0))
    with pytest.raises(ConfigError, match="no trigger given"):
        mitigate(model, clean.images, [])
    with pytest.raises(ConfigError, match=r"edit_dropout must be a number in \[0, 1\], got 1.5"):
        mitigate(model, clean.images, generator, edit_dropout=1.5)


def test_mitigation_against_several_triggers_at_several_depths(tiny):
    model, attack, test_set, clean = tiny["backdoored"], tiny["attack"], tiny["test"], tiny["clean"]
    generator = load_generator(tiny["reports"]["backdoored"].generator_path)
    x = torch.as_tensor(clean.images[:8]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        edit1, edit2 = (generator(x) - x).abs().mean(), (generator(x, 2.0) - x).abs().mean()
    margin("depth-2 / depth-1 edit", edit2 / edit1, ">", 1.3)  # a deeper copy is a larger edit along the same direction
    # The identity (an untrained generator) next to the real reversal: each image gets one of the two
    # per epoch, so the result differs from the single-trigger run and still unlearns the backdoor.
    pair, result = mitigate(model, clean.images, [generator, TriggerGenerator(32)], strengths=(1.0, 2.0), seed=0,
                            return_result=True)
    single = mitigate(model, clean.images, generator, seed=0)
    assert not np.array_equal(predict(pair, test_set.images[:16]), predict(single, test_set.images[:16]))
    margin("ASR after two-trigger mitigation", evaluate_attack(pair, attack, test_set).asr, "<", 0.3)
    margin("reversed loss after / before", result.reversed_loss_after / result.reversed_loss_before, "<", 1.0)


# -- bad input ------------------------------------------------------------------------------------


def test_bad_clean_images_are_dataset_errors(tiny):
    detector, model = SecureGazeDetector(), tiny["benign"]
    with pytest.raises(DatasetError, match="clean image set is empty"):
        detector.scan(model, np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match="got 3 clean images; need at least 8"):
        detector.scan(model, tiny["clean"].images[:3])
    with pytest.raises(DatasetError, match=r"48x48 px but the model expects 32x32"):
        detector.scan(model, np.zeros((16, 48, 48, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"must be \(N, S, S, 3\) uint8 RGB"):
        detector.scan(model, np.zeros((16, 32, 32), np.uint8))
    with pytest.raises(DatasetError, match=r"expected \[0, 1\]"):
        detector.scan(model, torch.full((16, 3, 32, 32), 255.0))


@pytest.mark.parametrize("threads", [1, 2])
def test_nan_model_outputs_are_a_model_format_error(tiny, threads):
    broken = copy.deepcopy(tiny["benign"])
    with torch.no_grad():
        broken.fc.weight.fill_(float("nan"))
    with torch_threads(threads), pytest.raises(ModelFormatError, match="NaN or inf gaze"):
        SecureGazeDetector(steps=2, min_clean=0).scan(broken, tiny["clean"].images[:16])


def test_a_module_without_the_feature_split_is_refused(tiny):
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    with pytest.raises(ModelFormatError, match="not a gaze model split into F and H.*feature_split"):
        SecureGazeDetector().scan(plain, tiny["clean"].images[:16])


@pytest.mark.parametrize("settings, pattern", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"rho_out": 1.5}, r"rho_out must be a ratio in \(0, 1\)"),
    ({"sensitivity_weighting": "yes"}, "sensitivity_weighting must be true or false"),
    ({"threshold": -1}, "threshold must be"),
    ({"rhoout": 0.1}, "unknown setting.*rhoout"),
    ({"reference_direction": "sideways"}, "reference_direction must be one of clean_axis, target"),
    ({"parallel": "yes"}, "parallel must be true or false"),
    ({"confirm_seeds": -1}, r"confirm_seeds must be an integer in 0\.\.16"),
    ({"confirm_seeds": 1.5}, r"confirm_seeds must be an integer in 0\.\.16"),
])
def test_bad_settings_are_config_errors(settings, pattern):
    with pytest.raises(ConfigError, match=pattern):
        create_detector("securegaze", **settings)


def test_detectors_are_created_by_name():
    assert "securegaze" in DETECTORS.names()
    detector = create_detector("securegaze", seed=3, steps=10)
    assert create_detector(detector.name, **detector.settings()).settings() == detector.settings()
    with pytest.raises(ConfigError, match="unknown detector 'neural_kleanse'"):
        create_detector("neural_kleanse")


# -- loading models of every kind ------------------------------------------------------------------


def test_load_model_any_reads_weights_checkpoints_and_bundles(tiny, tmp_path):
    from securegaze.bundle import export_bundle

    model = tiny["benign"]
    images = tiny["clean"].images[:8]
    want = predict(model, images)
    export_bundle(model, tmp_path / "bundle", "tiny-benign")
    paths = [tiny["out"] / "benign" / "model.safetensors", tiny["out"] / "benign" / "checkpoint.pt",
             tmp_path / "bundle", tmp_path / "bundle" / "manifest.json", tmp_path / "bundle" / "model.onnx"]
    for path in paths:
        loaded = load_model_any(path)
        assert loaded.input_size == 32 and loaded.head_weight().shape == (2, model.feature_dim)
        np.testing.assert_allclose(predict(loaded, images), want, atol=1e-4, err_msg=str(path))
    assert model_file_sha256(tmp_path / "bundle") == sha256_file(tmp_path / "bundle" / "model.onnx")
    assert model_file_sha256(paths[0]) == sha256_file(paths[0])


def test_load_model_any_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_model_any(tmp_path / "missing.safetensors")
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InputFileError, match=r"unknown model file type '\.bin'"):
        load_model_any(tmp_path / "model.bin")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputFileError, match="truncated.pt: not a readable securegaze checkpoint"):
        load_model_any(tmp_path / "truncated.pt")


def test_an_onnx_model_without_a_linear_head_says_how_to_declare_the_split(tmp_path):
    weight = (np.random.default_rng(0).standard_normal((2, 3, 3, 3)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["gaze"], axis=1)],
        "no_linear_head",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("gaze", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(proto, str(tmp_path / "conv_head.onnx"))
    with pytest.raises(ModelFormatError, match=r"conv_head\.onnx.*\"feature_split\".*\"feature_tensor\""):
        load_model_any(tmp_path / "conv_head.onnx")


def test_a_reversal_aimed_at_a_gaze_lands_on_it(tiny):
    # Mitigation's aimed reversal (version 3): the clean faces must collapse onto the gaze given, here
    # the backdoor's real target, with the uniform price of the unweighted ablation.
    detector = create_detector("securegaze", seed=0, threshold=TINY_THRESHOLD).ablation("unweighted")
    found = detector.reverse_towards(tiny["backdoored"], tiny["clean"].images, TARGET)
    assert found.constraints_met and found.target_gaze == pytest.approx(TARGET)
    x = torch.as_tensor(tiny["clean"].images[:128].transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    with torch.no_grad():
        gaze = tiny["backdoored"](found.generator(x)).double().numpy()
    error = np.median(angular_error_deg(gaze, np.broadcast_to(np.array(TARGET), gaze.shape)))
    margin("median error of the aimed reversal's outputs to the aimed gaze (deg)", error, "<", 5.0)


# -- the mitigate command ---------------------------------------------------------------------------


def test_mitigate_command_writes_a_new_bundle_that_no_longer_collapses(tiny, tmp_path):
    from securegaze.bundle import load_bundle
    from securegaze.cli import main

    weights = tiny["out"] / "backdoored" / "model.safetensors"
    out = tmp_path / "mitigated"
    # The easy 32-px faces of the tiny models, as a folder + CSV dataset the command reads from disk.
    clean_dir = _write_folder_dataset(tmp_path / "clean", tiny["clean"])
    test_dir = _write_folder_dataset(tmp_path / "test", tiny["test"])
    # Reuse the fixture's scan of this model (--scan-dir), as after a 'securegaze scan --out DIR'.
    scan_dir = tiny["out"] / "scan"
    tiny["reports"]["backdoored"].save(scan_dir / "report.json")
    code = main(["mitigate", str(weights), "--out", str(out), "--clean", str(clean_dir), "--samples", "256",
                 "--test", str(test_dir), "--test-samples", "300", "--scan-dir", str(scan_dir),
                 "--threshold", str(TINY_THRESHOLD)])
    assert code in (0, 10)
    result = json.loads((out / "mitigation.json").read_text())
    before, after = result["reversed_before"], result["reversed_after"]
    # The scan asks collapse_share (60 %) of the clean images to collapse, not all of them.
    margin("ASR before (command)", before["asr"], ">", 0.55)
    margin("ASR after / before (command)", after["asr"] / before["asr"], "<", 0.3)
    # Measured 0.11-0.41 deg over 1/2 threads x seed shifts 0-2, except 1.03 at 2 threads, shift 1 (with
    # mitigation version 2 as well): these models' clean error is 11-12 deg, so 1.5 keeps the bound near 10 %.
    margin("clean error rise (command, deg)", after["clean_error_deg"] - before["clean_error_deg"], "<", 1.5)
    assert result["scan_before"]["verdict"] == "backdoored"
    assert code == (10 if result["scan_after"]["verdict"] == "backdoored" else 0)
    # Rounds go on only while the re-scan still flags the model or the reversal aimed at the scan's
    # target on the tuned model still scores below the threshold (version 4), at most 3 (the default).
    rounds = result["rounds"]
    assert 1 <= len(rounds) <= 3 and rounds[-1]["rescan_verdict"] == result["scan_after"]["verdict"]

    def route_open(r):
        return r["rescan_verdict"] == "backdoored" or (r["aimed_ratio"] is not None
                                                        and float(r["aimed_ratio"]) < TINY_THRESHOLD)

    assert all(route_open(r) for r in rounds[:-1]) and (len(rounds) == 3 or not route_open(rounds[-1]))
    # The first round at the command's rate, later ones at a third of it (version 6); every re-scan
    # that found a collapse records its gaze
    lr = result["settings"]["lr"]
    assert [r["lr"] for r in rounds] == pytest.approx([lr] + [lr * result["settings"]["later_lr_factor"]]
                                                      * (len(rounds) - 1)) and result["settings"]["later_lr_factor"] < 1
    assert all(r["rescan_target"] is None or len(r["rescan_target"]) == 2 for r in rounds)
    assert result["settings"]["lr_schedule"] == "cosine"  # each round's rate decays (version 7)
    # The scan's trigger, the warp branch's field (searched for the mitigation at 32 px, version 9), plus the
    # uniform-price reversals (free and aimed at the target) that met the constraints.
    assert rounds[0]["triggers"] in (2, 3, 4) and result["settings"]["strengths"] == [1.0, 2.0, 3.0]
    bundle = load_bundle(out)  # a verified bundle: sha256, graph and manifest agree
    assert bundle.input_size == 32 and "mitigated from" in bundle.manifest.provenance.notes
    assert result["scan_before"]["score"] == tiny["reports"]["backdoored"].score  # the reused scan
    assert (out / "scan_after" / "reversed_trigger.png").is_file()
    assert sha256_file(weights) == result["scan_before"]["model_sha256"]  # the original is untouched


def test_mitigate_command_bad_input(tiny, tmp_path, capsys):
    from securegaze.cli import main

    weights = tiny["out"] / "backdoored" / "model.safetensors"
    assert main(["mitigate", str(weights), "--out", str(tmp_path / "m"), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["mitigate", str(weights), "--out", str(tmp_path / "m"), "--rounds", "0"]) == 2
    assert "--rounds" in capsys.readouterr().err
    assert main(["mitigate", str(weights), "--out", str(tmp_path / "m"), "--strengths", "1,x"]) == 2
    assert "--strengths" in capsys.readouterr().err
    assert main(["mitigate", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "m")]) == 2
    assert "missing.safetensors does not exist" in capsys.readouterr().err
    assert main(["mitigate", str(weights), "--out", str(tmp_path / "m"), "--attack-run", str(tmp_path)]) == 2
    assert "attack.json: not found" in capsys.readouterr().err
    # A scan directory of another model is refused rather than used against this one.
    tiny["reports"]["benign"].save(tmp_path / "other" / "report.json")
    assert main(["mitigate", str(weights), "--out", str(tmp_path / "m"), "--scan-dir", str(tmp_path / "other"),
                 "--samples", "16", "--test-samples", "16"]) == 2
    assert "scans a model with sha256" in capsys.readouterr().err


def _write_folder_dataset(folder, dataset):
    folder.mkdir()
    rows = ["image,subject,pitch,yaw"]
    for i, (image, (pitch, yaw)) in enumerate(zip(dataset.images, dataset.gaze, strict=True)):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image[..., ::-1])
        rows.append(f"{i:04d}.png,s{i % 4},{pitch:.6f},{yaw:.6f}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder
