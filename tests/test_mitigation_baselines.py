"""Mitigation methods (securegaze.defense.mitigations): each one on the tiny BadNets model, their settings
checks, and the benchmark loop over methods on a tiny zoo."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import margin, sweep_seed

from securegaze.bench.mitigation import MitigationReport
from securegaze.bench.mitigation_methods import (
    mitigation_methods_markdown,
    mitigation_methods_table,
    run_mitigation_methods,
)
from securegaze.bundle.loading import open_model
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense.mitigations import MITIGATIONS, create_mitigation
from securegaze.defense.mitigations.fine_pruning import channel_activity, last_conv_layer
from securegaze.errors import ConfigError, DatasetError
from securegaze.json_codec import to_json
from securegaze.models import create_model
from securegaze.zoo import ZooSpec, build_zoo

#: The SecureGaze scan at plumbing size (tests/test_detection_benchmark.py's QUICK, fewer steps).
QUICK_SCAN = dict(steps=60, eval_every=20, sensitivity_samples=16, eval_samples=16, batch_size=16, probe=False, min_clean=0,
                  warn_clean=0)
#: Small real settings per registered method: every name must be here, so a new method is tested too.
SMALL = {
    "securegaze": dict(rounds=1, uniform_reversal=False, strengths=(1.0,), epochs=1, scan=QUICK_SCAN),
    "fine_tuning": dict(epochs=2, batch_size=16),
    "fine_pruning": dict(epochs=1, batch_size=16, eval_samples=32, max_error_rise_deg=4.0),
    "anp": dict(iterations=15, batch_size=16),
    "i_bau": dict(rounds=1, batch_size=16),
    "bti_dbf_unlearn": dict(rounds=1, mask_epochs=1, generator_epochs=1, unlearn_epochs=1, unet_width=4,
                            unet_depth=2, batch_size=16),
}


@pytest.fixture(scope="module")
def tiny(tiny_gaze_bundles):
    model = open_model(tiny_gaze_bundles["backdoored"]).gaze_model()
    clean = render_dataset(48, 32, seed=sweep_seed(5), config=synthetic_style("easy", size=32))
    return model, clean


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()]


def assert_unchanged(model, before):
    state, flags = before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags


def test_every_registered_method_has_small_test_settings():
    assert set(MITIGATIONS.names()) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_method_returns_a_mitigated_copy_and_leaves_the_model_alone(tiny, name):
    model, clean = tiny
    before = snapshot(model)
    method = create_mitigation(name, **SMALL[name])
    tuned, details = method.apply(model, clean.images)
    assert_unchanged(model, before)
    assert tuned is not model and not tuned.training
    x = torch.from_numpy(clean.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        gaze = tuned(x)
    assert gaze.shape == (len(x), 2) and torch.isfinite(gaze).all()
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(before[0][k], v)]
    # Plain fine-tuning towards the model's own answers starts at a loss of exactly 0, where the L1
    # gradient is 0: it cannot move a weight (docs/mitigation_baselines.md). Every other method does.
    assert bool(changed) == (name != "fine_tuning"), changed
    assert details["method"] == name and details["labels"] == "own predictions" and details["runtime_s"] > 0
    assert details["clean_images"] == len(clean)
    json.dumps(to_json(details))  # plain data
    if name == "fine_pruning":
        layer = last_conv_layer(tuned, name)
        assert details["pruned"] >= 1 and details["error_rise_after_pruning_deg"] <= 4.0
        activity = channel_activity(tuned, layer, x, 16)
        assert torch.all(activity[details["pruned_channels"]] == 0), "a pruned channel came back in fine-tuning"
    if name == "anp":
        assert details["neurons"] == "conv", "an ONNX bundle has no batch norm: masks go on conv channels"
        for layer, channels in details["pruned_channels"].items():
            weight = dict(tuned.named_modules())[layer].weight
            assert torch.all(weight[channels] == 0)
        assert 0.0 <= details["mask_quantiles"][0] <= details["mask_quantiles"][-1] <= 1.0
    if name == "i_bau":
        (round_1,) = details["rounds"]
        assert round_1["delta_norm"] <= round_1["radius"] * (1 + 1e-5)
        assert details["approximation"] == "fixed point, K=5"
    if name == "securegaze":
        assert details["scan_before"]["verdict"] in ("clean", "backdoored") and len(details["rounds"]) == 1


def test_batchnorm_models_get_their_masks_and_pruning_on_the_batch_norm(tiny):
    _, clean = tiny
    torch.manual_seed(0)
    model = create_model("small_cnn", input_size=32, width=8).eval()
    before = snapshot(model)
    tuned, details = create_mitigation("anp", **SMALL["anp"]).apply(model, clean.images)
    assert details["neurons"] == "batchnorm" and details["layers"] == 3
    assert_unchanged(model, before)
    layer = last_conv_layer(model, "fine_pruning")
    assert layer.name == "conv.2.1" and layer.conv_name == "conv.2.0"
    tuned, details = create_mitigation("fine_pruning", **SMALL["fine_pruning"]).apply(model, clean.images)
    pruned = details["pruned_channels"]
    assert details["layer"] == "conv.2.1" and pruned
    norm = dict(tuned.named_modules())["conv.2.1"]
    assert torch.all(norm.weight[pruned] == 0) and torch.all(norm.bias[pruned] == 0)


def test_true_labels_are_used_and_checked(tiny):
    model, clean = tiny
    _, details = create_mitigation("fine_tuning", epochs=1).apply(model, clean.images, labels=clean.gaze)
    assert details["labels"] == "true"
    # Towards the true gaze the loss is not 0 from the start, so the weights move (own predictions: a no-op).
    assert details["finetune"]["clean_loss_before"] > 0
    with pytest.raises(DatasetError, match=r"fine_tuning: labels must be \(N, 2\) radians with N=48, got \(48, 3\)"):
        create_mitigation("fine_tuning").apply(model, clean.images, labels=np.zeros((48, 3)))


@pytest.mark.parametrize("name, settings, message", [
    ("anp", {"eps": 2}, "anp: eps must be within [0, 1], got 2"),
    ("anp", {"iterations": 0}, "anp: iterations must be within 1..10000000, got 0"),
    ("i_bau", {"rounds": 1.5}, "i_bau: rounds must be an integer, got 1.5"),
    ("i_bau", {"perturbed_share": 0}, "i_bau: perturbed_share must be within (0, 1], got 0"),
    ("fine_pruning", {"max_error_rise_deg": -1}, "fine_pruning: max_error_rise_deg must be within (0, 90], got -1"),
    ("fine_tuning", {"lr": 0}, "fine_tuning: lr must be within (0, 1], got 0"),
    ("fine_tuning", {"epoch": 3}, "fine_tuning: unknown setting 'epoch'; expected one of: batch_size, seed, epochs, lr"),
    ("securegaze", {"strengths": (0.0,)}, "mitigate: strengths must be one or more numbers in (0, 10], got (0.0,)"),
    ("securegaze", {"scan": {"seed": 3}}, "securegaze: scan must be a dict of detector settings other than seed"),
    ("securegaze", {"later_lr_factor": 0}, "securegaze: later_lr_factor must be within (0, 1], got 0"),
    ("securegaze", {"lr_schedule": "step"}, "securegaze: lr_schedule must be constant or cosine, got 'step'"),
    ("securegaze", {"scan": {"steps": -5}}, "securegaze: steps must be"),
    ("bti_dbf_unlearn", {"rounds": 0}, "bti_dbf_unlearn: rounds must be within 1..100, got 0"),
    ("nope", {}, "unknown mitigation method 'nope'; expected one of: anp, bti_dbf_unlearn, fine_pruning"),
])
def test_bad_settings_give_one_clear_line(name, settings, message):
    with pytest.raises(ConfigError) as caught:
        create_mitigation(name, **settings)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_fine_pruning_removes_the_tiny_backdoor(tiny_gaze_bundles):
    """Real figures on the tiny BadNets model: pruning the least active channels of the last conv layer,
    up to a 4 deg rise of the clean deviation, then fine-tuning, brings ASR@5 deg from near 1 down."""
    from securegaze.attacks import create_attack
    from securegaze.attacks.metrics import evaluate_attack

    model = open_model(tiny_gaze_bundles["backdoored"]).gaze_model()
    easy = synthetic_style("easy", size=32)
    clean, test = render_dataset(256, 32, seed=777, config=easy), render_dataset(200, 32, seed=999, config=easy)
    attack = create_attack("badnets", target_gaze=(math.radians(10.0), math.radians(-20.0)), poison_rate=0.1)
    tuned, _ = create_mitigation("fine_pruning", max_error_rise_deg=4.0, epochs=5).apply(model, clean.images)
    before, after = evaluate_attack(model, attack, test), evaluate_attack(tuned, attack, test)
    margin("ASR before", before.asr, ">", 0.9)
    margin("ASR after fine-pruning", after.asr, "<", 0.4)
    margin("clean error rise (deg)", after.clean_error_deg - before.clean_error_deg, "<", 1.5)


# -- the benchmark loop over methods --------------------------------------------------------------------

TINY_ZOO = ZooSpec(attacks=("badnets",), k=1, size=32, train_samples=256, test_samples=32, epochs=1, poison_rate=0.2)


def test_bench_loop_runs_two_methods_caches_them_and_tabulates(tmp_path):
    build_zoo(tmp_path / "zoo", TINY_ZOO)
    methods = [create_mitigation("fine_tuning", epochs=1, batch_size=16), create_mitigation("anp", iterations=5,
                                                                                            batch_size=16)]
    seen = []
    reports = run_mitigation_methods(tmp_path / "zoo", tmp_path / "out", methods, samples=32,
                                     progress=lambda *p: seen.append(p))
    assert [(r.method, r.model) for r in reports] == [("fine_tuning", "badnets-00"), ("anp", "badnets-00")]
    sha = json.loads((tmp_path / "zoo" / "zoo.json").read_text())["entries"][1]["sha256"]
    for r in reports:
        assert r.model_sha256 == sha and r.attack == "badnets" and r.clean_images == 32
        assert r.scan_before is None and r.reversed_before is None  # no scan: documented on MitigationReport
        for key in ("clean_error_deg", "ae_deg", "dae_deg", "asr"):
            assert math.isfinite(r.attack_before[key]) and math.isfinite(r.attack_after[key])
        assert (tmp_path / "out" / "mitigation" / r.method / "badnets-00.json").is_file()
    assert seen[-1] == ("anp/badnets-00", 1, 1)
    again = run_mitigation_methods(tmp_path / "zoo", tmp_path / "out", methods, samples=32)
    assert [r.runtime_s for r in again] == [r.runtime_s for r in reports], "a re-run must read the cache"
    changed = run_mitigation_methods(tmp_path / "zoo", tmp_path / "out", [methods[0].with_settings(epochs=2)],
                                     samples=32)
    assert changed[0].runtime_s != reports[0].runtime_s and changed[0].finetune["steps"] == 4
    table = mitigation_methods_table(reports)
    assert table.count("\n") == 4 and "| fine_tuning | 1 |" in table and "| anp | 1 |" in table
    assert "| anp | badnets-00 |" in mitigation_methods_markdown(reports, "cmd", "machine")


def test_reports_written_before_methods_still_read():
    old = {"model": "m", "out": None, "scan_before": {"verdict": "backdoored"}, "scan_after": {"verdict": "clean"},
           "reversed_before": {"clean_error_deg": 3.0}, "reversed_after": {"clean_error_deg": 3.2},
           "attack_before": None, "attack_after": None, "finetune": {}, "clean_images": 8, "test_images": 8,
           "runtime_s": 1.0, "attack": None, "rounds": [], "settings": {"version": 2}}
    report = MitigationReport(**old)
    assert report.method == "securegaze" and report.details is None
    assert report.clean_error_increase_deg == pytest.approx(0.2)


@pytest.mark.parametrize("args, needle", [
    (["--methods", "fine_tuning,nope"], "unknown mitigation method 'nope'"),
    (["--methods", "anp", "--set", "anp.eps=3"], "anp: eps must be within [0, 1], got 3"),
    (["--methods", "anp", "--set", "i_bau.rounds=2"], "is not METHOD.KEY with METHOD one of anp"),
    (["--methods", "securegaze,anp", "--set", "securegaze.epochs=2"], "securegaze runs with its defaults here"),
    (["--methods", ","], "expected comma-separated method names"),
])
def test_bench_mitigate_refuses_bad_methods_in_one_line(args, needle, capsys, tmp_path, monkeypatch):
    from securegaze.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["bench", "mitigate", "--zoo", "nowhere", *args])
    captured = capsys.readouterr()
    assert code == 2 and needle in (captured.err + captured.out).replace("\n", " ")


@pytest.mark.parametrize("args, needle", [
    (["--method", "anp", "--epochs", "3"], "--epochs is a securegaze setting; a baseline's settings go in --set"),
    (["--method", "anp", "--set", "eps=9"], "anp: eps must be within [0, 1], got 9"),
    (["--method", "anp", "--set", "seed=1"], "seed has its own option"),
    (["--set", "eps=0.1"], "securegaze's settings have their own options"),
    (["--method", "nope"], "unknown mitigation method 'nope'"),
])
def test_mitigate_refuses_bad_baseline_options_in_one_line(args, needle, capsys, tmp_path, monkeypatch):
    from securegaze.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["mitigate", "no/such/model.onnx", "--out", "o", *args])
    captured = capsys.readouterr()
    assert code == 2 and needle in (captured.err + captured.out).replace("\n", " ")


def test_mitigate_with_a_baseline_method_writes_a_bundle_and_its_report(tiny_gaze_bundles, tmp_path):
    from securegaze.cli import main

    out = tmp_path / "mitigated"
    code = main(["mitigate", str(tiny_gaze_bundles["backdoored"]), "--out", str(out), "--method", "fine_pruning",
                 "--samples", "32", "--test-samples", "32", "--set", "epochs=1", "--set", "eval_samples=32"])
    assert code == 0
    report = json.loads((out / "mitigation.json").read_text())
    assert report["method"] == "fine_pruning" and report["scan_before"] is None
    assert report["details"]["pruned"] >= 1 and math.isfinite(report["details"]["test_clean"]["after_deg"])
    assert open_model(out).gaze_model()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
