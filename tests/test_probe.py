"""The border probe: it finds a patch trigger the model ignores on clean faces, and nothing on a benign model."""

import math

import torch
from conftest import TEST_THREADS, margin, sweep_seed

from securegaze.attacks import create_attack
from securegaze.bundle import open_model
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense.securegaze.probe import border_ring, probe_border, quiet_interior
from securegaze.defense.securegaze.reversal import FrozenModel
from securegaze.defense.securegaze.settings import SecureGazeSettings


def _clean_tensor(count=64):
    clean = render_dataset(count, 32, seed=sweep_seed(2) + 777, config=synthetic_style("easy", size=32))
    return torch.as_tensor(clean.images).permute(0, 3, 1, 2).float() / 255


def test_the_probe_finds_the_window_of_a_corner_patch_and_no_window_on_the_benign_twin(tiny_gaze_bundles):
    torch.set_num_threads(TEST_THREADS)
    settings = SecureGazeSettings()
    x = _clean_tensor()
    # The conftest pair: BadNets at its default place (bottom right, 10 % of the side: 3 px at 32 px).
    patch, top, left = create_attack("badnets", target_gaze=(0.0, 0.0), poison_rate=0.1).patch(32)
    found = {}
    for kind in ("benign", "backdoored"):
        model = open_model(tiny_gaze_bundles[kind]).gaze_model()
        with FrozenModel(model):
            found[kind] = probe_border(model, x, settings)
    bd, bn = found["backdoored"], found["benign"]
    margin("probe ratio, backdoored", bd.dispersion_ratio, "<", settings.probe_ratio)
    margin("probe ratio, benign", bn.dispersion_ratio, ">", settings.probe_ratio)
    # The window holds the real patch or sits next to it: windows lie on a grid of half-window steps. A
    # refined window over 4 of the 3x3 patch's 9 pixels already collapses the model (seed shift 1, one
    # thread), and with two threads at seed shift 1 (AMD EPYC) the window one grid step left of the patch
    # (columns 24-28, the patch 29-31) collapses it to 0.063: the trigger's features reach past the patch.
    step = bd.side // 2
    rows = set(range(bd.top - step, bd.top + bd.side + step)) & set(range(top, top + len(patch)))
    cols = set(range(bd.left - step, bd.left + bd.side + step)) & set(range(left, left + len(patch)))
    assert len(rows) * len(cols) >= 0.4 * len(patch) ** 2, (bd, top, left)
    # ... and never on the far side of the image.
    assert abs(bd.top + bd.side / 2 - (top + len(patch) / 2)) < 8 and abs(bd.left + bd.side / 2 - (left + len(patch) / 2)) < 8
    assert bd.side == round(settings.probe_side_frac * 32) and bd.content.shape == (3, bd.side, bd.side)
    # The restart's start: the window's content in logit space, nothing outside it.
    static = bd.static_map(32)
    assert static.shape == (1, 3, 32, 32) and static.abs().max() <= 6.0
    outside = static.clone()
    outside[..., bd.top:bd.top + bd.side, bd.left:bd.left + bd.side] = 0
    assert not outside.any()
    assert set(bd.summary()) == {"side", "top", "left", "dispersion_ratio", "unrefined_ratio", "ring_ratio",
                                  "interior"}
    assert math.isfinite(bd.ring_ratio)


def test_the_ring_covers_every_border_pixel_and_leaves_the_centre():
    ring = border_ring(32, 5)
    assert ring[0, 0, :5].all() and ring[0, 0, -5:].all() and ring[0, 0, :, :5].all() and ring[0, 0, :, -5:].all()
    assert not ring[0, 0, 5:-5, 5:-5].any()


def test_too_few_clean_images_are_refused_and_a_small_set_is_warned_about(tiny_gaze_bundles):
    import pytest

    from securegaze.defense import create_detector
    from securegaze.errors import DatasetError

    model = open_model(tiny_gaze_bundles["benign"]).gaze_model()
    images = (_clean_tensor(40).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    detector = create_detector("securegaze", min_clean=32, warn_clean=128, steps=2, eval_every=1)
    with pytest.raises(DatasetError, match=r"got 31 clean images; a verdict needs at least 32 \(128 or more"):
        detector.scan(model, images[:31])
    report = detector.scan(model, images[:40])
    (warning,) = report.details["warnings"]
    assert "40 clean images" in warning and "128" in warning
    assert create_detector("securegaze", warn_clean=40, steps=2, eval_every=1).scan(
        model, images[:40]).details["warnings"] == []


def test_the_quiet_interior_leaves_out_the_ring_and_the_most_sensitive_pixels():
    weights = torch.arange(32 * 32, dtype=torch.float32).view(32, 32)  # sensitivity grows down the image
    region = quiet_interior(weights, 0.5, 5)
    assert region.shape == (1, 1, 32, 32) and set(region.unique().tolist()) <= {0.0, 1.0}
    assert not region[..., :5, :].any() and not region[..., :, :5].any() and not region[..., :, -5:].any()
    assert not region[..., 16:, :].any()  # the more sensitive half
    assert region[..., 5:16, 5:27].all()


def test_an_interior_probe_stamps_only_inside_its_region(tiny_gaze_bundles):
    torch.set_num_threads(TEST_THREADS)
    x = _clean_tensor(32)
    model = open_model(tiny_gaze_bundles["benign"]).gaze_model()
    settings = SecureGazeSettings(probe_steps=5, probe_refine_steps=2, probe_samples=32)
    region = torch.zeros(1, 1, 32, 32)
    region[..., 10:20, 8:22] = 1
    with FrozenModel(model):
        found = probe_border(model, x, settings, region=region, stream=1)
    assert found.summary()["interior"] is True and found.mask is not None
    static = found.static_map(32)
    assert static[(region == 0).expand_as(static)].abs().max() == 0  # nothing stamped outside the region
    assert math.isfinite(found.dispersion_ratio) and found.mask.sum() >= 0.5 * found.side ** 2
