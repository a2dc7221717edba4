"""ABS and FeatureRE, the two baselines that look inside F (securegaze/defense/baselines/abs.py, feature_re.py).

Both run on the tiny 32-px benign / BadNets pair of ``tiny_gaze_bundles`` (ONNX bundles converted back
to PyTorch, so the inner layers are found in a converted graph, as for a user's model) with small but
real settings. The directional assertions hold over ``SECUREGAZE_TEST_SEED_SHIFT=0,1,2`` with the
margins given at each (measured at 1 thread); the register-level contract (settings round trip, bad
images, determinism, JSON) is tests/test_detector_contract.py's.
"""

import math

import numpy as np
import pytest
import torch
from conftest import margin

from securegaze.bundle.loading import open_model
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense.baselines.abs import ABSDetector, StampEdit, stimulated_layers, stimulation_analysis
from securegaze.defense.baselines.feature_re import FeatureREDetector
from securegaze.defense.baselines.inner_layers import SiteTap, activation_sites
from securegaze.defense.inputs import clean_tensor
from securegaze.errors import ConfigError
from securegaze.geometry import angular_error_deg
from securegaze.models import create_model

TARGET = (math.radians(10.0), math.radians(-20.0))  # the tiny BadNets model's target (conftest)


@pytest.fixture(scope="module")
def tiny_pair(tiny_gaze_bundles):
    return {kind: open_model(path).gaze_model() for kind, path in tiny_gaze_bundles.items()}


@pytest.fixture(scope="module")
def faces():
    return render_dataset(48, seed=5, config=synthetic_style("easy", size=32)).images


def test_inner_layers_are_found_in_a_network_and_its_onnx_conversion(tiny_pair):
    x = torch.rand(2, 3, 32, 32)
    native = activation_sites(create_model("small_cnn", input_size=32, width=8).eval(), x)
    converted = activation_sites(tiny_pair["benign"], x)
    expected = [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert [s.shape for s in native] == [s.shape for s in converted] == expected
    assert [s.index for s in converted] == [0, 1, 2] and all(s.occurrence == 0 for s in converted)


@pytest.mark.parametrize("architecture, kwargs, expands", [
    ("small_cnn", {"width": 8}, True),  # a chain: the batch may grow at the site
    ("resnet18", {"width": 8, "stem": "compact"}, False),  # a skip connection around the site: repeat the input
])
def test_stimulated_copies_give_the_gaze_of_the_edited_network(architecture, kwargs, expands):
    torch.manual_seed(0)
    model = create_model(architecture, input_size=32, **kwargs).eval()
    x = torch.rand(3, 3, 32, 32)
    site = activation_sites(model, x)[-2]
    values = (0.5, 4.0)

    def copies(out):
        edited = out.repeat(len(values), 1, 1, 1)
        for k, v in enumerate(values):
            edited[k * len(x):(k + 1) * len(x), 1] = v
        return edited

    with SiteTap(model, site) as tap:
        gaze = tap.expand_outputs(x, copies, len(values))
        assert tap.expands is expands
    for k, v in enumerate(values):
        def one(out, v=v):
            out = out.clone()
            out[:, 1] = v
            return out
        with SiteTap(model, site, replace=one) as tap, torch.no_grad():
            alone = model.head(tap.features(x))
        torch.testing.assert_close(gaze[k * len(x):(k + 1) * len(x)], alone, rtol=1e-4, atol=1e-5)


def test_a_stamp_applied_at_strength_two_is_the_stamp_applied_twice():
    torch.manual_seed(0)
    edit = StampEdit(8, torch.randn(1, 1, 8, 8), torch.randn(1, 3, 8, 8))
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(edit(x, 2.0), edit(edit(x)))
        torch.testing.assert_close(edit(x, 1.0), (1 - edit.mask) * x + edit.mask * edit.pattern)


def test_abs_stimulation_singles_out_the_backdoor_neurons(tiny_pair, faces):
    """Stage 1 of ABS: a neuron of the BadNets model, stimulated alone at the patch's corner, collapses
    the gazes far more than any neuron of its benign twin. Measured best ratios (shifts 0, 1, 2):
    BadNets 0.063, 0.034, 0.042; benign 0.239, 0.422, 0.409."""
    x = clean_tensor(faces[:16], 32, "test")
    best = {}
    for kind, model in tiny_pair.items():
        sites = activation_sites(model, x[:2])[-2:]
        ranked = stimulation_analysis(model, x, sites, feature_units=True, levels=6, grid=4)
        assert [c.ratio for c in ranked] == sorted(c.ratio for c in ranked)
        assert len(ranked) == 16 * 16 + 32 * 16 + 128
        best[kind] = ranked[0]
    margin("backdoored best stimulation ratio", best["backdoored"].ratio, "<", 0.15)
    margin("benign best stimulation ratio", best["benign"].ratio, ">", 0.15)
    top = best["backdoored"]
    _, height, width = top.site.shape
    assert top.cell[1] == height and top.cell[3] == width, "the BadNets patch sits in the bottom-right corner"


def test_abs_scans_the_tiny_pair_and_reports(tiny_pair, faces, tmp_path):
    detector = ABSDetector(stimulation_images=16, top_neurons=2, reverse_steps=15, batch_size=16)
    for kind, model in tiny_pair.items():
        report = detector.scan(model, faces, artifacts_dir=tmp_path / kind)
        assert report.detector == "abs" and report.suspicious_when == "above"
        assert 0.0 <= report.score <= 1.0 and report.score == max(c["reasr"] for c in report.details["candidates"])
        assert len(report.details["candidates"]) == 2 and report.details["neurons_stimulated"] == 16 * 16 + 32 * 16 + 128
        assert report.target_gaze is not None and report.collapsed_share is not None
        assert report.perturbation_l1 > 0 and report.clean_count == len(faces)
        assert report.trigger_image_path and (tmp_path / kind / "reversed_trigger.png").is_file()
        assert report.verdict == ("backdoored" if report.score > report.threshold else "clean")


def test_feature_re_separates_the_tiny_pair_and_finds_the_target(tiny_pair, faces, tmp_path):
    """Measured mixed values (shifts 0, 1, 2): BadNets -0.873, -0.783, -0.803 (reversed target 6.6,
    7.3, 4.6 deg from the true one); benign -0.097, -0.137, -0.050."""
    detector = FeatureREDetector(warmup_epochs=3, epochs=15, batch_size=16)
    reports = {kind: detector.scan(model, faces, artifacts_dir=tmp_path / kind) for kind, model in tiny_pair.items()}
    for report in reports.values():
        assert report.suspicious_when == "below" and math.isfinite(report.score)
        assert report.details["feature_layer"] and report.details["feature_neurons"] == 32 * 4 * 4
        assert 0 <= report.details["mask_frac"] <= 1 and report.trigger_image_path
        assert report.collapsed_share is not None and report.reversed_dispersion_deg is not None
    margin("backdoored mixed value", reports["backdoored"].score, "<", -0.5)
    margin("benign mixed value", reports["benign"].score, ">", -0.5)
    off = float(angular_error_deg(np.asarray(reports["backdoored"].target_gaze), np.asarray(TARGET)))
    margin("reversed target error (deg)", off, "<", 15.0)


@pytest.mark.parametrize("name, settings, message", [
    ("abs", {"top_neurons": 0}, "abs: top_neurons must be"),
    ("abs", {"max_trigger_frac": 0.0}, "abs: max_trigger_frac must be"),
    ("abs", {"layers": 0, "feature_units": False}, "abs: layers must be at least 1 when feature_units is false"),
    ("abs", {"threshold": 1.5}, "abs: threshold must be"),
    ("feature_re", {"mask_size": 0.0}, "feature_re: mask_size must be"),
    ("feature_re", {"p_loss_bound": -1.0}, "feature_re: p_loss_bound must be"),
    ("feature_re", {"feature_layer": 0}, "feature_re: feature_layer must be"),
])
def test_bad_settings_are_one_clear_error(name, settings, message):
    detector_class = {"abs": ABSDetector, "feature_re": FeatureREDetector}[name]
    with pytest.raises(ConfigError, match=message) as info:
        detector_class(**settings)
    assert "\n" not in str(info.value)


def test_a_feature_layer_deeper_than_the_model_is_one_clear_error(tiny_pair, faces):
    with pytest.raises(ConfigError, match="feature_re: feature_layer is 4 but the model's F has 3 convolutional"):
        FeatureREDetector(feature_layer=4, warmup_epochs=0, epochs=1).scan(tiny_pair["benign"], faces)


def test_abs_stimulates_the_block_outputs_of_a_residual_network():
    """Inside a ResNet block the skip connection bypasses the first ReLU; ABS's public code stimulates
    the block outputs (after the sum), which are the second calls of torchvision's shared ReLU."""
    torch.manual_seed(0)
    model = create_model("resnet18", input_size=32, width=8, stem="compact").eval()
    chosen = stimulated_layers(model, torch.rand(2, 3, 32, 32), 2)
    assert len(chosen) == 2 and all(s.occurrence == 1 for s in chosen)
