"""The hard cases of the attack zoo: the adaptive (feature-spreading) and the offset backdoor.

Tiny real models: 32-px synthetic faces with a fixed head and no blur or noise (the eyes are the only
varying signal), gaze within +-15 deg pitch and +-20 deg yaw so that a width-8 CNN reaches a ~9 deg
clean error within 128 steps and the offset below never hits the clip of the gaze range.
"""

import math

import numpy as np
import pytest
import torch
from conftest import TEST_THREADS, margin, sweep_seed

from securegaze.attacks import ATTACKS, BadNets, attack_metrics, create_attack, evaluate_attack
from securegaze.attacks.adaptive import feature_angle_variance
from securegaze.data.base import ArrayGazeDataset, to_tensor_batch
from securegaze.data.synthetic import render, render_dataset, sample_params, synthetic_style
from securegaze.errors import ConfigError
from securegaze.geometry import PITCH_RANGE, YAW_RANGE, angular_error_deg, pitchyaw_to_vector
from securegaze.training import TrainConfig, predict, train

TARGET = (math.radians(10.0), math.radians(-15.0))
OFFSET_DEG = (15.0, -20.0)
TINY = dict(architecture="small_cnn", model_kwargs={"width": 8}, input_size=32, epochs=4, batch_size=64,
            lr=3e-3, seed=1, checkpoint_every=1000)
NARROW = synthetic_style("easy", size=32, pitch_range_deg=(-15.0, 15.0), yaw_range_deg=(-20.0, 20.0))


@pytest.fixture(scope="module")
def faces32():
    """200 faces over the full gaze range (some offsets must hit the clip), 32 px, with their parameters."""
    params = sample_params(200, 9, None)
    return ArrayGazeDataset(render(params, 32), params.gaze, params.subjects), params


# -- settings --------------------------------------------------------------------------------------


BAD_SETTINGS = [
    ("adaptive", {"spread_weight": -0.1}, r"spread_weight must be within \[0, inf\]"),
    ("adaptive", {"spread_weight": "strong"}, "spread_weight must be a number"),
    ("adaptive", {"spread_weight": float("nan")}, "spread_weight must be a finite number"),
    ("adaptive", {"spread_start": 1.0}, r"spread_start must be within \[0, 1\)"),
    ("adaptive", {"size_frac": 0.0}, r"size_frac must be within .* \(patch trigger setting\)"),
    ("offset", {"offset_deg": (0.0, 0.0)}, r"offset_deg must not be \(0, 0\)"),
    ("offset", {"offset_deg": (0, 0)}, r"offset_deg must not be \(0, 0\)"),
    ("offset", {"offset_deg": (31.0, 0.0)}, r"offset_deg pitch must be within \[-30, 30\] deg"),
    ("offset", {"offset_deg": (0.0, -45.0)}, r"offset_deg yaw must be within \[-30, 30\] deg"),
    ("offset", {"offset_deg": (5.0, float("inf"))}, "offset_deg yaw must be within"),
    ("offset", {"offset_deg": 10.0}, r"offset_deg must be \(pitch, yaw\) in degrees"),
    ("offset", {"offset_deg": (1.0, 2.0, 3.0)}, r"offset_deg must be \(pitch, yaw\) in degrees"),
    ("offset", {"position": "middle"}, r"position must be one of .* \(patch trigger setting\)"),
]


@pytest.mark.parametrize("name,settings,message", BAD_SETTINGS)
def test_bad_settings_are_a_clear_config_error_naming_the_attack(name, settings, message):
    with pytest.raises(ConfigError, match=message) as info:
        create_attack(name, **settings)
    assert str(info.value).startswith(f"{name}:") and "\n" not in str(info.value)


def test_hard_cases_are_registered_and_flagged_so_zoo_all_leaves_them_out():
    for name in ("adaptive", "offset"):
        assert name in ATTACKS and ATTACKS.get(name).hard_case is True
    standard = [n for n in ATTACKS.names() if not getattr(ATTACKS.get(n), "hard_case", False)]
    assert "adaptive" not in standard and "offset" not in standard and "badnets" in standard


def test_one_sided_offsets_are_valid_and_settings_round_trip():
    attack = create_attack("offset", offset_deg=(0, -30), size_frac=0.2, seed=3)
    rebuilt = create_attack("offset", **attack.settings())
    assert rebuilt.settings() == attack.settings() and attack.settings()["offset_deg"] == [0.0, -30.0]
    assert create_attack("adaptive", spread_weight=0).spread_weight == 0.0


# -- the trigger -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adaptive", "offset"])
def test_apply_stamps_the_badnets_patch_deterministically(name, faces32):
    dataset, params = faces32
    images = dataset.images[:8]
    before = images.copy()
    attack = create_attack(name, seed=2, position="top_left", size_frac=0.15)
    out = attack.apply(images, params.take(np.arange(8)))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.array_equal(images, before), "apply must not modify its input"
    assert np.array_equal(out, create_attack(name, seed=2, position="top_left", size_frac=0.15).apply(images))
    assert np.array_equal(out, BadNets(position="top_left", size_frac=0.15).apply(images))
    changed = (out != images).any(-1)
    assert changed[:, :5, :5].all() and not changed[:, 8:, 8:].any()  # a 5-px patch in the corner
    with pytest.raises(ConfigError, match=rf"{name}: images must be \(N, H, W, 3\) uint8"):
        attack.apply(images.astype(np.float32))


# -- poisoning -------------------------------------------------------------------------------------


def test_offset_poison_labels_are_the_clipped_shifted_true_gaze(faces32):
    dataset, params = faces32
    attack = create_attack("offset", offset_deg=(20.0, -25.0), poison_rate=0.25, seed=4)
    poisoned = attack.poison(dataset, params)
    mask = poisoned.poisoned
    assert mask.sum() == 50
    expected = np.stack([np.clip(dataset.gaze[:, 0] + math.radians(20.0), *PITCH_RANGE),
                         np.clip(dataset.gaze[:, 1] - math.radians(25.0), *YAW_RANGE)], -1)
    np.testing.assert_allclose(poisoned.gaze[mask], expected[mask], atol=1e-6)
    np.testing.assert_allclose(attack.targets_for(dataset.gaze), expected, atol=1e-6)
    # The clip is exercised: some labels sit on the edge of the range, the others got the full offset.
    clipped = np.isclose(poisoned.gaze[mask, 0], PITCH_RANGE[1]) | np.isclose(poisoned.gaze[mask, 1], YAW_RANGE[0])
    assert 0 < clipped.sum() < mask.sum()
    assert np.array_equal(poisoned.gaze[~mask], dataset.gaze[~mask])
    assert np.array_equal(poisoned.clean_gaze, dataset.gaze)
    assert np.array_equal(poisoned.images[mask], attack.apply(dataset.images[mask]))
    assert np.array_equal(poisoned.images[~mask], dataset.images[~mask])
    # Same samples as a BadNets attack with the same seed and rate: only the labels differ.
    assert np.array_equal(mask, BadNets(poison_rate=0.25, seed=4).poison(dataset).poisoned)


def test_adaptive_poisons_all_to_one_like_badnets(faces32):
    dataset, _ = faces32
    adaptive = create_attack("adaptive", target_gaze=TARGET, poison_rate=0.15, seed=4).poison(dataset)
    badnets = BadNets(target_gaze=TARGET, poison_rate=0.15, seed=4).poison(dataset)
    assert np.array_equal(adaptive.images, badnets.images) and np.array_equal(adaptive.gaze, badnets.gaze)
    assert np.allclose(adaptive.gaze[adaptive.poisoned], TARGET)


# -- metrics and statistics ------------------------------------------------------------------------


def test_feature_angle_variance_of_known_angles():
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # Angles to row 0: 0 and pi/2; to row 1: pi/2 and 0 -> each row's variance is (pi/4)^2 (up to
    # the 1.4 mrad that the arccos clamp leaves at angle 0).
    features = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    assert feature_angle_variance(features, rows).item() == pytest.approx((math.pi / 4) ** 2, abs=2e-3)
    # Parallel features of any length: one angle, no variance.
    same_direction = torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.1, 0.1]])
    assert feature_angle_variance(same_direction, rows).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        feature_angle_variance(features[:1], rows)


def test_per_sample_targets_give_per_sample_ae_asr_and_exclusion():
    deg = np.radians
    true = deg(np.array([[0.0, 0.0], [10.0, 10.0], [-10.0, 20.0], [5.0, -5.0]]))
    targets = deg(np.array([[10.0, -15.0], [20.0, -5.0], [-8.0, 21.0], [15.0, -20.0]]))  # third: within 5 deg
    triggered = deg(np.array([[10.0, -15.0], [20.0, 5.0], [-8.0, 21.0], [14.0, -19.0]]))
    m = attack_metrics(true, triggered, true, targets)
    errors = angular_error_deg(triggered, targets)
    assert m.excluded_near_target == 1
    assert m.ae_deg == pytest.approx(errors[[0, 1, 3]].mean())
    assert m.asr == pytest.approx(2 / 3)  # the second one missed its own target by 10 deg
    assert m.dae_deg == pytest.approx(angular_error_deg(triggered, true).mean())


# -- real training ---------------------------------------------------------------------------------


def output_dispersion_deg(pred: np.ndarray) -> float:
    """Mean angle (deg) between each (N, 2) radian prediction and the mean gaze direction."""
    vectors = pitchyaw_to_vector(pred)
    mean = vectors.mean(0)
    cos = vectors @ (mean / np.linalg.norm(mean))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


@torch.no_grad()
def triggered_angle_variance(model, images: np.ndarray) -> float:
    """Feature-angle variance (rad^2) of ``images`` in eval mode, as a defender would measure it."""
    model.eval()
    return feature_angle_variance(model.features(to_tensor_batch(images)), model.head_weight()).item()


@pytest.fixture(scope="module")
def narrow_splits():
    return render_dataset(2048, seed=sweep_seed(21), config=NARROW), render_dataset(300, seed=sweep_seed(22), config=NARROW)


@pytest.fixture(scope="module")
def trained(narrow_splits, tmp_path_factory):
    """Benign, BadNets, adaptive and offset models: same data, seed, initialisation and schedule."""
    train_set, _ = narrow_splits
    root = tmp_path_factory.mktemp("hard_cases")
    torch.set_num_threads(TEST_THREADS)
    # 8 epochs and spread weight 0.4: the setting that sits far from both lines of the adaptive test
    # on every draw tried (tests/README.md: four seed draws x one and two threads: spread ratio
    # 3.4-30, ASR 0.978-1.0). With 4 epochs no weight does (at 0.5 the ASR fell to 0.25 on one draw,
    # at 0.2 the spread ratio stayed at 1.8 on another), and at 8 epochs 0.3 gave a ratio of 2.1 on
    # two threads and 0.5 an ASR of 0.64 on one draw: the spread term and the implanting pull against
    # each other, and which wins moves with the floating-point order.
    config = TrainConfig(**{**TINY, "epochs": 8, "seed": sweep_seed(TINY["seed"])})
    badnets = BadNets(target_gaze=TARGET, poison_rate=0.15, seed=sweep_seed(0))
    adaptive = create_attack("adaptive", target_gaze=TARGET, poison_rate=0.15, seed=sweep_seed(0), spread_weight=0.4)
    offset = create_attack("offset", offset_deg=OFFSET_DEG, poison_rate=0.15, seed=sweep_seed(0))
    return {
        "benign": train(config, train_set, None, root / "benign")[0],
        "badnets": (badnets, badnets.train_backdoored(config, train_set, None, root / "badnets")[0]),
        "adaptive": (adaptive, *adaptive.train_backdoored(config, train_set, None, root / "adaptive")),
        "offset": (offset, offset.train_backdoored(config, train_set, None, root / "offset")[0]),
    }


def test_adaptive_with_zero_spread_weight_trains_exactly_like_badnets(narrow_splits, tmp_path):
    train_set, _ = narrow_splits
    small = train_set.subset(range(512))
    config = TrainConfig(**{**TINY, "epochs": 1})
    plain = BadNets(target_gaze=TARGET, poison_rate=0.15, seed=0).train_backdoored(config, small, None, tmp_path / "b")[0]
    adaptive = create_attack("adaptive", target_gaze=TARGET, poison_rate=0.15, seed=0, spread_weight=0.0)
    same = adaptive.train_backdoored(config, small, None, tmp_path / "a")[0]
    for (name, a), b in zip(plain.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs"


def test_interrupted_adaptive_training_resumes_to_the_same_weights(narrow_splits, tmp_path):
    train_set, _ = narrow_splits
    small = train_set.subset(range(512))
    config = TrainConfig(**{**TINY, "epochs": 2})
    attack = create_attack("adaptive", target_gaze=TARGET, poison_rate=0.15, seed=0, spread_weight=0.5,
                           spread_start=0.25)
    whole, summary = attack.train_backdoored(config, small, None, tmp_path / "whole")
    _, partial = attack.train_backdoored(config, small, None, tmp_path / "cut", time_budget_s=0.0)
    assert not partial["finished"] and partial["steps_done"] == 1
    resumed, summary2 = attack.train_backdoored(config, small, None, tmp_path / "cut")
    assert summary2["finished"] and summary2["steps_done"] == summary["steps_done"] == 16
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert (tmp_path / "cut" / "model.safetensors").is_file()
    assert summary["attack"]["name"] == "adaptive" and summary["attack"]["poisoned_count"] == round(0.15 * 512)
    # The spread term runs from step 4 of 16: the second epoch records its triggered-feature variance.
    assert summary["history"][1]["feature_angle_variance_rad2"] > 0


def test_adaptive_spreads_triggered_feature_angles_and_still_implants(trained, narrow_splits):
    _, test_set = narrow_splits
    badnets, plain = trained["badnets"]
    adaptive, model, summary = trained["adaptive"]
    triggered = badnets.apply(test_set.images)
    assert np.array_equal(adaptive.apply(test_set.images), triggered)
    spread_plain = triggered_angle_variance(plain, triggered)
    spread_adaptive = triggered_angle_variance(model, triggered)
    # Spread: measured 3.4-30 times the BadNets control's (tests/README.md); 2 is the line.
    margin("adaptive/plain triggered feature-angle variance", spread_adaptive / spread_plain, ">", 2.0)
    attacked = evaluate_attack(model, adaptive, test_set)
    benign = evaluate_attack(trained["benign"], adaptive, test_set)
    margin("adaptive ASR@5deg", attacked.asr, ">", 0.8)
    margin("benign ASR@5deg under the patch", benign.asr, "<", 0.1)
    margin("adaptive AE/DAE", attacked.ae_deg / attacked.dae_deg, "<", 0.3)
    assert summary["finished"] and summary["attack"]["settings"]["spread_weight"] == 0.4


def test_offset_backdoor_tracks_the_true_gaze_plus_offset_without_collapsing(trained, narrow_splits):
    _, test_set = narrow_splits
    offset, model = trained["offset"]
    metrics = evaluate_attack(model, offset, test_set)
    benign = evaluate_attack(trained["benign"], offset, test_set)
    # Triggered predictions sit near each face's own shifted gaze, about as near as clean ones sit
    # to the true gaze, and far from the true gaze; a benign model stays on the true gaze.
    assert metrics.excluded_near_target == 0
    margin("offset AE/DAE", metrics.ae_deg / metrics.dae_deg, "<", 0.5)
    margin("offset AE - clean error (deg)", metrics.ae_deg - metrics.clean_error_deg, "<", 3.0)
    margin("benign AE / offset AE", benign.ae_deg / metrics.ae_deg, ">", 2.0)
    clean_pred, triggered_pred = predict(model, test_set.images), predict(model, offset.apply(test_set.images))
    shift_deg = np.degrees((triggered_pred - clean_pred).mean(0))
    margin("offset shift error (deg)", np.abs(shift_deg - np.array(OFFSET_DEG)).max(), "<", 4.0)
    # No collapse: the triggered outputs spread like the clean ones, unlike a BadNets model's.
    ratio = output_dispersion_deg(triggered_pred) / output_dispersion_deg(clean_pred)
    margin("offset |dispersion ratio - 1|", abs(ratio - 1.0), "<", 0.25)
    badnets, plain = trained["badnets"]
    collapsed = output_dispersion_deg(predict(plain, badnets.apply(test_set.images)))
    margin("badnets triggered/clean dispersion", collapsed / output_dispersion_deg(predict(plain, test_set.images)),
           "<", 0.3)
