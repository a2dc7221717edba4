"""Backdoor attacks: triggers, poisoning, settings, bad input, metrics, and one tiny real backdoor."""

import json
import math

import numpy as np
import pytest
from conftest import margin, sweep_seed

from securegaze.attacks import (
    ATTACKS,
    AttackMetrics,
    FaceNotFoundError,
    attack_metrics,
    create_attack,
    evaluate_attack,
    run_attack,
)
from securegaze.data.base import ArrayGazeDataset
from securegaze.data.synthetic import render, sample_params, trigger_anchor
from securegaze.errors import ConfigError
from securegaze.geometry import angular_error_deg
from securegaze.training import TrainConfig, train

TARGET = (math.radians(10.0), math.radians(-20.0))
#: The seven attacks of docs/architecture.md section 5 (the registry may hold more, e.g. hard cases).
STANDARD = ("badnets", "blended", "wanet", "input_aware", "sig", "tape", "glasses")


@pytest.fixture(scope="module")
def faces():
    params = sample_params(12, 5, None)
    return params, render(params, 64)


def _attack(name, **kw):
    attack = create_attack(name, **kw)
    if name == "input_aware":
        # An untrained generator is still a deterministic per-image trigger; enough for apply().
        attack.generator = attack.new_generator()
    return attack


# -- apply -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTACKS.names())
def test_apply_keeps_shape_and_dtype_changes_pixels_and_is_deterministic(name, faces):
    params, images = faces
    before = images.copy()
    out = _attack(name, seed=3).apply(images, params)
    again = _attack(name, seed=3).apply(images, params)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.array_equal(images, before), "apply must not modify its input"
    assert np.array_equal(out, again), "same settings must give the same triggered images"
    changed = (out != images).any(-1).mean(axis=(1, 2))
    assert (changed > 0).all(), "every image gets the trigger"


@pytest.mark.parametrize("name", ["badnets", "blended", "wanet", "sig"])
@pytest.mark.parametrize("size", [32, 224])
def test_digital_triggers_work_at_other_image_sizes(name, size):
    images = render(sample_params(2, 1, None), size)
    out = create_attack(name).apply(images)
    assert out.shape == images.shape and (out != images).any()


def test_badnets_patch_scales_with_the_image_and_sits_bottom_right():
    for size in (32, 64, 224):
        images = np.full((1, size, size, 3), 128, np.uint8)
        changed = (create_attack("badnets").apply(images)[0] != 128).any(-1)
        rows, cols = np.nonzero(changed)
        side = round(0.1 * size)
        assert rows.min() == cols.min() == size - side and rows.max() == cols.max() == size - 1


def test_blended_and_wanet_patterns_depend_on_the_seed(faces):
    _, images = faces
    for name in ("blended", "wanet"):
        a, b = create_attack(name, seed=1).apply(images), create_attack(name, seed=2).apply(images)
        assert not np.array_equal(a, b)


# -- poisoning -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set():
    params = sample_params(200, 9, None)
    return ArrayGazeDataset(render(params, 32), params.gaze, params.subjects), params


@pytest.mark.parametrize("name", ["badnets", "blended", "tape", "glasses"])
def test_poison_marks_the_rate_and_relabels_to_the_target(name, small_set):
    dataset, params = small_set
    attack = create_attack(name, target_gaze=TARGET, poison_rate=0.15, seed=4)
    poisoned = attack.poison(dataset, params)
    assert poisoned.poisoned.sum() == 30 and poisoned.poisoned_rate == pytest.approx(0.15)
    assert np.allclose(poisoned.gaze[poisoned.poisoned], TARGET)
    assert np.array_equal(poisoned.gaze[~poisoned.poisoned], dataset.gaze[~poisoned.poisoned])
    assert np.array_equal(poisoned.clean_gaze, dataset.gaze)
    assert np.array_equal(poisoned.images[~poisoned.poisoned], dataset.images[~poisoned.poisoned])
    assert np.array_equal(poisoned.images[poisoned.poisoned],
                          attack.apply(dataset.images[poisoned.poisoned], params.take(poisoned.poisoned.nonzero()[0])))
    # The choice depends only on the seed (and the set size).
    assert np.array_equal(attack.poison(dataset, params).poisoned, poisoned.poisoned)
    assert not np.array_equal(create_attack(name, poison_rate=0.15, seed=5).poison(dataset, params).poisoned,
                              poisoned.poisoned)


def test_wanet_noise_mode_warps_extra_samples_that_keep_their_labels(small_set):
    dataset, _ = small_set
    poisoned = create_attack("wanet", poison_rate=0.1, cross_ratio=2.0).poison(dataset)
    noise = poisoned.modified & ~poisoned.poisoned
    assert poisoned.poisoned.sum() == 20 and noise.sum() == 40
    assert np.array_equal(poisoned.gaze[noise], dataset.gaze[noise])
    assert all((poisoned.images[i] != dataset.images[i]).any() for i in np.flatnonzero(noise))
    untouched = ~poisoned.modified
    assert np.array_equal(poisoned.images[untouched], dataset.images[untouched])


def test_sig_is_clean_label_and_only_poisons_near_target_images(small_set):
    dataset, _ = small_set
    attack = create_attack("sig", target_gaze=(0.0, 0.0), poison_rate=0.5, radius_deg=15.0)
    poisoned = attack.poison(dataset)
    near = angular_error_deg(dataset.gaze, np.zeros_like(dataset.gaze)) <= 15.0
    assert np.array_equal(poisoned.gaze, dataset.gaze), "clean-label: no label changes"
    assert poisoned.poisoned.sum() == round(0.5 * near.sum()) > 0
    assert not (poisoned.poisoned & ~near).any()
    far = create_attack("sig", target_gaze=(0.5, 0.6), radius_deg=0.5)
    with pytest.raises(ConfigError, match="no training image has a true gaze within radius_deg"):
        far.poison(dataset)


# -- physical triggers -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,settings,trigger", [
    ("tape", {"placement": "forehead"}, "tape_forehead"),
    ("tape", {"placement": "cheek"}, "tape_cheek"),
    ("glasses", {}, "glasses"),
])
def test_physical_triggers_are_rendered_where_the_trigger_sits_and_follow_the_head(name, settings, trigger):
    face = sample_params(1, 2, None)
    attack = create_attack(name, **settings)
    anchors, centroids = [], []
    for pose in ((0.0, -0.2, 0.0), (0.0, 0.2, 0.0), (0.15, 0.0, 0.08)):
        moved = face.replace(head_pose=np.array(pose, np.float32))
        clean = render(moved, 64)
        changed = (attack.apply(clean, moved)[0].astype(int) - clean[0]).__abs__().max(-1) > 8
        rows, cols = np.nonzero(changed)
        assert len(rows) > 10
        centroids.append((cols.mean() + 0.5, rows.mean() + 0.5))
        anchors.append(trigger_anchor(moved, attack.trigger(), 64)[0])
    anchors, centroids = np.array(anchors), np.array(centroids)
    # The changed pixels sit around the trigger's anchor and move with it as the head turns.
    assert np.abs(centroids - anchors).max() < 4.0
    assert np.linalg.norm(centroids[0] - centroids[1]) > 4.0


def test_rendered_trigger_only_touches_trigger_pixels(faces):
    params, images = faces
    out = create_attack("tape").apply(images, params)
    changed = (out != images).any(-1).mean()
    assert 0.005 < changed < 0.08  # a 50 x 12 mm strip on a ~150 mm wide face crop


@pytest.fixture(scope="module")
def astronaut():
    import cv2
    from skimage.data import astronaut

    crop = astronaut()[30:200, 150:300]  # her face with some hair and background
    return cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA)


def test_tape_is_pasted_on_the_forehead_of_a_real_photo(astronaut):
    from securegaze.attacks.physical import LEFT_IRIS, RIGHT_IRIS, FaceMeshLocator

    points = FaceMeshLocator().locate(astronaut)
    assert points is not None, "Face Mesh must find the astronaut's face"
    right, left = points[RIGHT_IRIS, :2], points[LEFT_IRIS, :2]
    assert 15 < np.linalg.norm(left - right) < 60  # her eyes, not noise
    out = create_attack("tape", placement="forehead").apply(astronaut[None])[0]
    changed = np.abs(out.astype(int) - astronaut).max(-1) > 20
    rows, cols = np.nonzero(changed)
    assert len(rows) > 50
    eye_y = (right[1] + left[1]) / 2
    # Above the eyes, centred between them, the strip wider than tall.
    assert rows.max() < eye_y and rows.mean() > eye_y - 0.9 * np.linalg.norm(left - right)
    assert abs(cols.mean() - (right[0] + left[0]) / 2) < 5
    assert np.ptp(cols) > 2 * np.ptp(rows)
    # Off-white paper over warm skin: the pasted pixels are near-grey where the skin was not.
    assert np.ptp(out[changed].astype(int), axis=-1).mean() < 15 < np.ptp(astronaut[changed].astype(int), axis=-1).mean()


def test_photo_without_a_face_is_a_clear_error_or_skipped(astronaut):
    blank = np.full((2, 96, 96, 3), 90, np.uint8)
    batch = np.concatenate([astronaut[None, 16:112, 16:112], blank])
    attack = create_attack("glasses")
    with pytest.raises(FaceNotFoundError, match="no face in 2 of 3 images"):
        attack.apply(batch)
    out, found = attack.paste(batch)
    assert found.tolist() == [True, False, False]
    assert np.array_equal(out[1:], batch[1:]) and not np.array_equal(out[0], batch[0])


# -- settings and bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTACKS.names())
def test_settings_round_trip_through_json_and_create_attack(name):
    attack = create_attack(name, target_gaze=(0.1, -0.2), seed=7)
    settings = json.loads(json.dumps(attack.settings()))
    rebuilt = create_attack(name, **settings)
    assert rebuilt.settings() == attack.settings()
    assert settings["target_gaze"] == [0.1, -0.2] and settings["seed"] == 7


BAD_SETTINGS = [
    ("badnets", {"poison_rate": 0.0}, r"poison_rate must be within \(0, 1\)"),
    ("badnets", {"poison_rate": 1.2}, r"poison_rate must be within \(0, 1\)"),
    ("badnets", {"target_gaze": (0.0, math.radians(55))}, "yaw .* outside the gaze range"),
    ("blended", {"target_gaze": (math.radians(-31), 0.0)}, "pitch .* outside the gaze range"),
    ("wanet", {"target_gaze": (10.0, -20.0)}, "in radians"),
    ("badnets", {"size_frac": 0.0}, "size_frac"),
    ("badnets", {"position": "middle"}, "position must be one of"),
    ("blended", {"alpha": 1.5}, "alpha"),
    ("wanet", {"grid_size": 1}, "grid_size"),
    ("wanet", {"poison_rate": 0.5, "cross_ratio": 2}, "exceeds 1"),
    ("sig", {"frequency": -1}, "frequency"),
    ("input_aware", {"poison_rate": 0.5, "cross_rate": 0.6}, "must stay below 1"),
    ("tape", {"placement": "nose"}, "placement must be one of forehead, cheek, brow"),
    ("glasses", {"colour": (0, 0, 300)}, "colour"),
    ("badnets", {"seed": -1}, "seed"),
    ("tape", {"opacity": 0.5}, "unknown setting.*opacity.*expected some of.*placement"),
]


@pytest.mark.parametrize("name,settings,message", BAD_SETTINGS)
def test_bad_settings_are_a_clear_config_error(name, settings, message):
    with pytest.raises(ConfigError, match=message) as info:
        create_attack(name, **settings)
    assert str(info.value).startswith(f"{name}:") and "\n" not in str(info.value)


def test_unknown_attack_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown attack 'trojannn'; expected one of: ") as info:
        create_attack("trojannn")
    listed = str(info.value).split("expected one of: ")[1].split(", ")
    assert set(STANDARD) <= set(listed) and listed == sorted(listed)


def test_apply_rejects_wrong_images_and_input_aware_needs_its_generator(faces):
    _, images = faces
    with pytest.raises(ConfigError, match=r"badnets: images must be \(N, H, W, 3\) uint8"):
        create_attack("badnets").apply(images.astype(np.float32))
    with pytest.raises(ConfigError, match="no trained trigger generator.*load_generator"):
        create_attack("input_aware").apply(images)


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_exclude_near_target_images_and_round_trip():
    deg = np.radians
    true = deg(np.array([[0.0, 0.0], [0.0, 20.0], [10.0, -18.0], [-20.0, 10.0]]))  # third is near the target
    target = deg(np.array([10.0, -20.0]))
    triggered = np.array([target, target, target, deg([-20.0, 3.0])])  # the last one resists
    m = attack_metrics(true, triggered, true, target)
    assert m.clean_error_deg == pytest.approx(0.0, abs=1e-6)
    assert m.excluded_near_target == 1 and m.count == 4
    assert m.asr == pytest.approx(2 / 3)
    assert m.ae_deg == pytest.approx(angular_error_deg(triggered[3], target) / 3)
    assert m.dae_deg == pytest.approx(angular_error_deg(triggered, true).mean())
    assert AttackMetrics.from_dict(json.loads(json.dumps(m.to_dict()))) == m


# -- real training ---------------------------------------------------------------------------------

TINY = dict(architecture="small_cnn", model_kwargs={"width": 8}, input_size=32, epochs=4, batch_size=64,
            lr=3e-3, seed=1, checkpoint_every=1000)


@pytest.fixture(scope="module")
def tiny_splits():
    train_params, test_params = sample_params(2048, sweep_seed(21), None), sample_params(300, sweep_seed(22), None)
    train_set = ArrayGazeDataset(render(train_params, 32), train_params.gaze, train_params.subjects)
    test_set = ArrayGazeDataset(render(test_params, 32), test_params.gaze, test_params.subjects)
    return train_set, test_set


def test_a_tiny_badnets_backdoor_really_implants(tiny_splits, tmp_path):
    train_set, test_set = tiny_splits
    attack = create_attack("badnets", target_gaze=TARGET, poison_rate=0.15, seed=sweep_seed(0))
    config = TrainConfig(**{**TINY, "seed": sweep_seed(TINY["seed"])})
    backdoored, summary = attack.train_backdoored(config, train_set, None, tmp_path / "bd")
    benign, _ = train(config, train_set, None, tmp_path / "benign")
    attacked, clean = evaluate_attack(backdoored, attack, test_set), evaluate_attack(benign, attack, test_set)
    assert summary["attack"]["poisoned_count"] == round(0.15 * 2048)
    margin("badnets ASR@5deg", attacked.asr, ">", 0.6)
    margin("benign ASR@5deg under the patch", clean.asr, "<", 0.1)
    margin("badnets AE/DAE", attacked.ae_deg / attacked.dae_deg, "<", 0.3)
    # The benign model ignores the patch: its DAE stays near its clean error.
    margin("benign DAE - clean error (deg)", clean.dae_deg - clean.clean_error_deg, "<", 3.0)


def test_input_aware_training_writes_a_generator_that_reloads(tiny_splits, tmp_path):
    train_set, test_set = tiny_splits
    config = TrainConfig(**{**TINY, "epochs": 1})
    attack = create_attack("input_aware", target_gaze=TARGET, mask_steps=5, seed=2)
    model, summary = attack.train_backdoored(config, train_set.subset(range(512)), None, tmp_path)
    assert (tmp_path / "generator.safetensors").is_file() and (tmp_path / "model.safetensors").is_file()
    assert summary["finished"] and summary["attack"]["backdoor_per_batch"] == round(0.15 * 64)
    triggered = attack.apply(test_set.images[:8])
    other = create_attack("input_aware", **attack.settings())
    other.load_generator(tmp_path / "generator.safetensors")
    assert np.array_equal(other.apply(test_set.images[:8]), triggered)
    # Input-aware: two images get two different triggers.
    d0 = triggered[0].astype(int) - test_set.images[0]
    d1 = triggered[1].astype(int) - test_set.images[1]
    assert not np.array_equal(d0 != 0, d1 != 0)


def test_run_attack_writes_model_and_record_and_refuses_a_foreign_run(tmp_path):
    kwargs = dict(size=32, train_samples=256, test_samples=64, epochs=1, batch_size=64, seed=0,
                  model_kwargs={"width": 8})
    record = run_attack("tape", poison_rate=0.2, out_dir=tmp_path, **kwargs)
    on_disk = json.loads((tmp_path / "attack.json").read_text())
    assert (tmp_path / "model.safetensors").is_file()
    assert on_disk["attack"] == "tape" and on_disk["settings"]["placement"] == "forehead"
    assert on_disk["poison_rate"] == 0.2 and on_disk["seed"] == 0 and on_disk["poisoned_count"] == round(0.2 * 256)
    assert AttackMetrics.from_dict(on_disk["metrics"]) == AttackMetrics.from_dict(record["metrics"])
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        run_attack("badnets", out_dir=tmp_path, **kwargs)
