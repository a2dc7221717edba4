"""Neural Cleanse, TABOR and K-Arm on gaze models: the shared mask + pattern pieces, each method's own
parts, and scans of the tiny benign and BadNets models (the contract every detector keeps is in
tests/test_detector_contract.py)."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import margin

from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense import DETECTORS, ScanReport, create_detector, load_model_any
from securegaze.defense.baselines.common import gaze_grid
from securegaze.defense.baselines.k_arm import KArmSettings, linearised_mask_cost, prescreen
from securegaze.defense.baselines.mask_pattern import (
    CostSchedule,
    MaskPatternEdit,
    TargetCell,
    angle_to_target,
    gaze_cells,
    mask_smoothness,
)
from securegaze.defense.baselines.tabor import explanation_fidelity
from securegaze.errors import ConfigError
from securegaze.geometry import angular_error_deg

NAMES = ("neural_cleanse", "tabor", "k_arm")
TARGET = (math.radians(10.0), math.radians(-20.0))  # the tiny BadNets model's target (tests/conftest.py)


class PixelGaze(torch.nn.Module):
    """A toy gaze 'model' whose pitch is ``gain`` x (pixel (0, 0) of the red channel - 0.5) and whose yaw
    is 0: only one pixel matters, so its costs and explanations are known exactly."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        self.gain = gain

    def forward(self, x):
        pitch = self.gain * (x[:, 0, 0, 0] - 0.5)
        return torch.stack([pitch, torch.zeros_like(pitch)], dim=1)


# -- the shared pieces ------------------------------------------------------------------------------


def test_mask_pattern_edit_stamps_the_pattern_where_the_mask_is():
    size = 8
    mask = torch.zeros(size, size)
    mask[2:4, 5:7] = 1.0
    pattern = torch.full((3, size, size), 0.25)
    edit = MaskPatternEdit(size, mask, pattern)
    x = torch.rand(5, 3, size, size)
    out = edit(x)
    assert torch.allclose(out[:, :, 2:4, 5:7], torch.full_like(out[:, :, 2:4, 5:7], 0.25), atol=1e-5)
    outside = torch.ones(size, size, dtype=torch.bool)
    outside[2:4, 5:7] = False
    assert torch.allclose(out[..., outside], x[..., outside], atol=1e-5)
    assert edit.mask_l1() == pytest.approx(4.0, abs=1e-4)
    # strength: the mask twice as deep, clipped to 1 (a faint mask becomes twice as opaque)
    half = MaskPatternEdit(size, mask * 0.3, pattern)
    assert torch.allclose(half(x, strength=2.0) - x, 2 * (half(x) - x), atol=1e-5)
    assert torch.allclose(edit(x, strength=3.0), out, atol=1e-5)


def test_angle_to_target_is_the_angular_error_and_has_gradients_at_zero():
    gaze = torch.tensor([[0.1, -0.3], [0.0, 0.0], [-0.4, 0.5]], requires_grad=True)
    target = torch.tensor([0.1, -0.3])
    angle = angle_to_target(gaze, target)
    expected = angular_error_deg(gaze.detach().numpy(), np.broadcast_to(target.numpy(), (3, 2)))
    assert np.allclose(np.degrees(angle.detach().numpy()), expected, atol=1e-3)
    angle.sum().backward()
    assert torch.isfinite(gaze.grad).all()  # also at the gaze that sits on the target


def test_cells_tile_the_gaze_grid():
    clean = np.random.default_rng(0).uniform([-0.4, -0.6], [0.4, 0.6], size=(200, 2))
    grid = gaze_grid(clean, 3, margin=0.0)
    cells = gaze_cells(grid, 3)
    assert len(cells) == 9 and [c.index for c in cells] == list(range(9))
    # neighbouring cells meet: centre + half width of one is centre - half width of the next
    assert cells[0].centre[0] + cells[0].half_width[0] == pytest.approx(cells[3].centre[0] - cells[3].half_width[0])
    assert cells[0].centre[1] + cells[0].half_width[1] == pytest.approx(cells[1].centre[1] - cells[1].half_width[1])
    assert gaze_cells(gaze_grid(clean, 1), 1)[0].half_width[0] == pytest.approx(math.radians(90.0))


# Neural Cleanse's cost schedule (visualizer.py) driven by a scripted run of succeeded / failed epochs:
# (epochs, cost after each epoch) with init 1, set after 2 successes, patience 2, up x2, down /4.
SCHEDULE_CASES = [
    ("TT", [0, 1]),                 # two successes at cost 0 set the cost
    ("TTTT", [0, 1, 2, 2]),         # the epoch that sets it counts towards the first raise
    ("TTFF", [0, 1, 1, 0.25]),      # two failures lower it
    ("TFTT", [0, 0, 0, 1]),         # a failure restarts the count before the cost is set
    ("FFFF", [0, 0, 0, 0]),         # a cost of 0 stays 0 when lowered
]


@pytest.mark.parametrize("script,costs", SCHEDULE_CASES)
def test_cost_schedule_follows_neural_cleanse(script, costs):
    schedule = CostSchedule(init_cost=1.0, set_after=2, patience=2, multiplier_up=2.0, multiplier_down=4.0)
    seen = []
    for flag in script:
        schedule.update(flag == "T")
        seen.append(schedule.cost)
    assert seen == costs


def test_mask_smoothness_prefers_a_compact_mask():
    blob, scattered = torch.zeros(8, 8), torch.zeros(8, 8)
    blob[2:4, 2:4] = 1.0
    scattered[0, 0] = scattered[0, 7] = scattered[7, 0] = scattered[7, 7] = 1.0
    assert float(mask_smoothness(blob)) == 8.0 and float(mask_smoothness(scattered)) == 8.0  # corners touch 2
    scattered[3, 3] = scattered[5, 5] = 1.0
    scattered[0, 7] = scattered[7, 0] = 0.0
    assert float(mask_smoothness(scattered)) > float(mask_smoothness(blob))


# -- K-Arm's pre-screening --------------------------------------------------------------------------


def test_linearised_mask_cost_counts_the_pixels_that_reach_a_cell():
    model = PixelGaze(gain=1.0)
    x = torch.full((2, 3, 4, 4), 0.5)
    x[1, 0, 0, 0] = 0.82  # pitch 0.32 rad: already inside the upper cell below
    half = np.array([0.05, 0.05])
    cells = [
        TargetCell(0, np.array([0.0, 0.0]), half),  # where image 0 looks
        TargetCell(1, np.array([0.3, 0.0]), half),  # 0.25 rad up: pixel (0, 0) can move pitch by 0.5
        TargetCell(2, np.array([-1.0, 0.0]), half),  # out of reach of the one pixel that matters
    ]
    radius_deg = 2.0
    cost = linearised_mask_cost(model, x, cells, radius_deg, batch_size=2)
    assert cost.shape == (2, 3)
    assert cost[0, 0] == 0.0 and cost[1, 1] == 0.0
    # image 0 to cell 1: (0.25 - radius) rad of the 0.5 rad the pixel can push: that fraction of one pixel
    assert cost[0, 1] == pytest.approx((0.25 - math.radians(radius_deg)) / 0.5, rel=1e-3)
    assert cost[0, 2] == 16.0 and cost[1, 2] == 16.0  # never reached: the whole image


def test_prescreen_keeps_the_share_of_cells_most_often_cheapest():
    model = PixelGaze(gain=1.0)
    x = torch.full((6, 3, 4, 4), 0.5)
    x[:, 0, 0, 0] = torch.tensor([0.5, 0.52, 0.48, 0.5, 0.9, 0.5])
    half = np.array([0.05, 0.05])
    cells = [TargetCell(i, np.array([p, 0.0]), half) for i, p in enumerate([0.0, 0.15, 0.4, -0.9])]
    kept, shares = prescreen(model, x, cells, KArmSettings(prescreen_keep=0.5))
    # 4 cells <= 8: each face counts its 2 cheapest cells; the 2 cells counted most often are kept
    assert shares.sum() == pytest.approx(2.0)
    assert sorted(kept) == [0, 1] and shares[3] == 0.0


# -- TABOR's explanation fidelity -------------------------------------------------------------------


def test_explanation_fidelity_is_high_when_the_trigger_covers_what_the_model_looks_at():
    model = PixelGaze(gain=1.0)
    x = torch.rand(4, 3, 6, 6)
    on, off = torch.zeros(6, 6), torch.zeros(6, 6)
    on[0, 0] = 0.9
    off[4, 4] = 0.9
    pattern = torch.full((3, 6, 6), 0.5)
    # the mask must not hide pixel (0, 0) completely, or its gradient is gone: 0.9 keeps 10 % of it
    assert explanation_fidelity(model, x, MaskPatternEdit(6, on, pattern), batch_size=4) == 1.0
    assert explanation_fidelity(model, x, MaskPatternEdit(6, off, pattern), batch_size=4) == 0.0


# -- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,setting,value,pattern", [
    ("neural_cleanse", "grid_cells", 0, "grid_cells must be within 1..64"),
    ("neural_cleanse", "attack_success", 1.5, r"attack_success must be within \(0, 1\]"),
    ("neural_cleanse", "cost_multiplier_up", 1.0, "cost_multiplier_up must be within"),
    ("tabor", "lambda_1", -1.0, "lambda_1 must be within"),
    ("tabor", "beta_4", "x", "beta_4 must be a number"),
    ("k_arm", "prescreen_keep", 0.0, "prescreen_keep must be within"),
    ("k_arm", "total_epochs", 2.5, "total_epochs must be an integer"),
    ("k_arm", "epsilon_for_bandits", 2.0, "epsilon_for_bandits must be within"),
])
def test_bad_settings_are_one_clear_line(name, setting, value, pattern):
    with pytest.raises(ConfigError, match=f"^{name}: {pattern}") as info:
        create_detector(name, **{setting: value})
    assert "\n" not in str(info.value)


def test_registered_with_their_sources_and_sides():
    for name in NAMES:
        detector = create_detector(name)
        assert name in DETECTORS.names()
        assert detector.threshold_calibration == type(detector).default_threshold_source
        assert create_detector(name, threshold=0.5).threshold_calibration == "set by the user (0.5)"
    assert create_detector("neural_cleanse").config.threshold == 2.0
    assert create_detector("tabor").config.threshold == 2.0
    assert create_detector("k_arm").config.threshold == pytest.approx(1720 / 224**2)
    assert [create_detector(n).suspicious_when for n in NAMES] == ["above", "above", "below"]


# -- scans of the tiny benign and BadNets models ----------------------------------------------------

#: Settings for scans of the 32-px test models in a few seconds: a 3 x 3 grid, 32 clean images and a
#: short budget (the reports' shape and bookkeeping, not a verdict; the defaults are in the slow tests).
QUICK = {"grid_cells": 3, "samples": 32, "epochs": 3}
QUICK_SETTINGS = {"neural_cleanse": QUICK, "tabor": QUICK, "k_arm": {**QUICK, "total_epochs": 12}}


@pytest.fixture(scope="module")
def tiny_models(tiny_gaze_bundles):
    return {kind: load_model_any(tiny_gaze_bundles[kind]) for kind in ("benign", "backdoored")}


@pytest.fixture(scope="module")
def quick_scans(tiny_models, tmp_path_factory):
    """Each method's report on the tiny benign and BadNets bundles (32 px, target (10, -20) deg)."""
    out = tmp_path_factory.mktemp("mask-pattern-scans")
    clean = render_dataset(32, 32, seed=7, config=synthetic_style("easy", size=32)).images
    return {(name, kind): create_detector(name, **QUICK_SETTINGS[name]).scan(
                model, clean, artifacts_dir=out / f"{name}-{kind}")
            for name in NAMES for kind, model in tiny_models.items()}


@pytest.mark.parametrize("name", NAMES)
def test_each_method_reports_on_a_benign_and_a_backdoored_model(name, quick_scans):
    for kind in ("benign", "backdoored"):
        report = quick_scans[(name, kind)]
        assert report.detector == name and report.verdict in ("clean", "backdoored")
        assert math.isfinite(report.score) and report.clean_count == 32 and report.input_size == 32
        assert report.target_gaze is not None and 0.0 <= report.collapsed_share <= 1.0
        assert report.trigger_image_path is not None
        assert len(report.details["cells"]) == 9
        assert ScanReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_k_arm_spends_its_budget_on_the_kept_arms(quick_scans):
    details = quick_scans[("k_arm", "backdoored")].details
    cells = details["cells"]
    assert details["epochs_spent"] <= 12
    assert sum(c["kept"] for c in cells) == details["arms_kept"] == 5  # ceil(0.5 x 9)
    assert all(c["pulls"] == 0 for c in cells if not c["kept"])
    assert sum(c["pulls"] for c in cells) == details["epochs_spent"]


@pytest.fixture(scope="module")
def default_scans(tiny_models):
    """``default_scans(name)``: the method with its default settings on the tiny benign and BadNets
    models with 256 clean faces, as {"benign": report, "backdoored": report} (1-4 minutes a scan on one
    thread; each test scans only its own method, within its own time limit)."""
    clean = render_dataset(256, 32, seed=22, config=synthetic_style("easy", size=32)).images
    done = {}

    def scans(name: str) -> dict[str, ScanReport]:
        if name not in done:
            done[name] = {kind: create_detector(name).scan(model, clean) for kind, model in tiny_models.items()}
        return done[name]

    return scans


def _target_error(report: ScanReport) -> float:
    return float(angular_error_deg(np.array(report.target_gaze), np.array(TARGET)))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_neural_cleanse_singles_out_the_backdoor_target(default_scans):
    backdoored, benign = default_scans("neural_cleanse")["backdoored"], default_scans("neural_cleanse")["benign"]
    margin("NC backdoored anomaly index", backdoored.score, ">", 2.0)
    margin("NC benign anomaly index", benign.score, "<", 2.0)
    assert backdoored.verdict == "backdoored" and benign.verdict == "clean"
    margin("NC recovered target error (deg)", _target_error(backdoored), "<", 7.0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tabor_flags_the_backdoored_model_far_above_the_benign_one(default_scans):
    backdoored, benign = default_scans("tabor")["backdoored"], default_scans("tabor")["benign"]
    margin("TABOR backdoored anomaly index", backdoored.score, ">", 2.0)
    margin("TABOR backdoored / benign anomaly index", backdoored.score / max(benign.score, 1e-6), ">", 3.0)
    margin("TABOR recovered target error (deg)", _target_error(backdoored), "<", 7.0)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_k_arm_finds_a_smaller_trigger_in_the_backdoored_model(default_scans):
    backdoored, benign = default_scans("k_arm")["backdoored"], default_scans("k_arm")["benign"]
    margin("K-Arm benign / backdoored mask share", benign.score / backdoored.score, ">", 1.5)
    # K-Arm gives each arm fewer epochs than NC, so the target sits less exactly in the collapse: 4.9 deg
    # off on the PyTorch model, 7.2 on its ONNX bundle; 10 deg is still well inside the backdoor's cell
    # (cells of ~16 x 25 deg), which is what the recovered target says.
    margin("K-Arm recovered target error (deg)", _target_error(backdoored), "<", 10.0)
    assert backdoored.details["epochs_spent"] <= KArmSettings().total_epochs
