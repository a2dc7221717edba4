"""UNICORN and BTI-DBF (baseline detectors) and BTI-DBF(U) unlearning on the tiny test pair.

The scans run with small but real settings (the verdicts of so short a run mean little: the figures of
the default settings are in docs/baselines_methods.md); what is checked here is that each detector
finds an edit, reports it validly, and that unlearning fine-tunes a copy and reports what it did.
"""

import json
import math

import numpy as np
import pytest
import torch

from securegaze.bundle.loading import open_model
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense import DETECTORS, create_detector
from securegaze.defense.baselines.bti_dbf import BtiDbfEdit
from securegaze.defense.baselines.bti_dbf_unlearn import bti_dbf_unlearn
from securegaze.defense.baselines.unet import SmallUNet, UNetShape, ssim, target_pull
from securegaze.defense.baselines.unicorn import UnicornEdit
from securegaze.errors import ConfigError, DatasetError

EASY = synthetic_style("easy", size=32)
#: Short runs of each detector on the 32-px tiny models (about a second each on one thread).
QUICK = {
    "unicorn": {"steps": 24, "unet_width": 8, "unet_depth": 2, "batch_size": 16, "feature_mask_steps": 5},
    "bti_dbf": {"generator_epochs": 6, "mask_epochs": 5, "unet_width": 8, "unet_depth": 2, "batch_size": 16},
}


@pytest.fixture(scope="module")
def pair(tiny_gaze_bundles):
    return {kind: open_model(path).gaze_model() for kind, path in tiny_gaze_bundles.items()}


@pytest.fixture(scope="module")
def clean():
    return render_dataset(48, 32, seed=5, config=EASY).images


def test_both_are_registered():
    assert {"unicorn", "bti_dbf"} <= set(DETECTORS.names())
    assert DETECTORS.get("unicorn").suspicious_when == DETECTORS.get("bti_dbf").suspicious_when == "below"


@pytest.mark.parametrize("name", ["unicorn", "bti_dbf"])
def test_a_scan_of_the_tiny_pair_gives_a_valid_report_and_picture(name, pair, clean, tmp_path):
    detector = create_detector(name, **QUICK[name])
    events = []
    for kind, model in pair.items():
        report = detector.scan(model, clean, progress=events.append, artifacts_dir=tmp_path / kind)
        assert report.detector == name and report.clean_count == len(clean)
        assert report.score >= 0  # UNICORN's is inf when the inversion did not succeed
        assert report.verdict == ("backdoored" if report.score < report.threshold else "clean")
        assert 0.0 <= report.collapsed_share <= 1.0
        assert report.perturbation_l1 > 0, "the inversion must have moved away from the identity"
        pitch, yaw = report.target_gaze_deg
        assert abs(pitch) < 90 and abs(yaw) < 90
        assert (tmp_path / kind / "reversed_trigger.png").is_file()
        if name == "bti_dbf":
            assert report.details["collapse_ratio"] == report.score
        else:
            succeeded = report.details["asr_inv"] >= detector.config.success_share
            assert report.score == (report.details["one_minus_ssim"] if succeeded else math.inf)
        assert math.isfinite(report.details["collapse_ratio"])
        assert json.loads(json.dumps(report.to_dict()))["details"]["history"]
    assert {e.detector for e in events} == {name} and all(e.total >= e.step >= 1 for e in events)


def test_the_networks_start_as_the_identity_and_strength_scales_the_edit(clean):
    x = torch.as_tensor(clean[:4]).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(SmallUNet(32, UNetShape(4, 2), mode="image")(x), x)
    assert torch.equal(SmallUNet(32, UNetShape(4, 2), mode="free")(x), x)
    edit = BtiDbfEdit(32, UNetShape(4, 2), seed=0)  # a near-identity start, not the exact one
    assert 0 < (edit(x) - x).abs().mean() < 0.05
    assert torch.equal(edit(x, strength=0.0), x)
    unicorn = UnicornEdit(32, UNetShape(4, 2), seed=0)
    with torch.no_grad():
        once, twice = unicorn(x), unicorn(x, strength=2.0)
    assert torch.allclose(twice, (x + 2 * (once - x)).clamp(0, 1), atol=1e-6)
    assert torch.equal(unicorn(x, strength=0.0), x)


def test_ssim_and_the_target_pull():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=generator)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(a, torch.rand(2, 3, 32, 32, generator=generator)).item() < 0.2
    target = torch.tensor([0.1, -0.2])
    assert target_pull(target[None].repeat(3, 1), target, 5.0).item() == pytest.approx(0.0, abs=1e-4)
    far = torch.tensor([[0.1, -0.2 + math.radians(50.0)]])
    assert target_pull(far, target, 5.0).item() == pytest.approx(math.sqrt(1 + 10.0 ** 2) - 1, rel=0.02)


@pytest.mark.parametrize("name, settings, pattern", [
    ("unicorn", {"steps": 0}, "unicorn: steps must be within 1..1000000, got 0"),
    ("unicorn", {"ssim_bound": 1.5}, r"unicorn: ssim_bound must be within \(0, 1\], got 1.5"),
    ("unicorn", {"unet_depth": 9}, "unicorn: unet_depth must be within 1..5, got 9"),
    ("bti_dbf", {"keep": "best"}, "bti_dbf: keep must be one of last, max_shift; got 'best'"),
    ("bti_dbf", {"norm_bound": 0}, r"bti_dbf: norm_bound must be within \(0, 1\], got 0"),
    ("bti_dbf", {"generator_epochs": 1.5}, "bti_dbf: generator_epochs must be an integer, got 1.5"),
])
def test_bad_settings_are_one_clear_line(name, settings, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        create_detector(name, **settings)
    assert "\n" not in str(info.value)


UNLEARN = {"rounds": 2, "mask_epochs": 3, "generator_epochs": 4, "reinvert_epochs": 2, "unlearn_epochs": 2,
           "unet_width": 8, "unet_depth": 2, "batch_size": 16}


def test_unlearning_tunes_a_copy_and_reports_what_it_did(pair, clean):
    model = pair["backdoored"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    tuned, details = bti_dbf_unlearn(model, clean, seed=1, **UNLEARN)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the input model changed"
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not tuned.training and tuned is not model
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items()), "nothing was fine-tuned"
    assert json.loads(json.dumps(details)) == details
    assert details["steps"] == 2 * 2 * (len(clean) // 16) and len(details["rounds"]) == 2
    assert details["labels"].startswith("the model's own")
    for key in ("clean_loss_before", "clean_loss_after", "generated_loss_before", "generated_loss_after"):
        assert math.isfinite(details[key]) and details[key] >= 0
    again, repeated = bti_dbf_unlearn(model, clean, seed=1, **UNLEARN)
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values(), strict=True))
    assert repeated["clean_loss_after"] == details["clean_loss_after"]


def test_unlearning_refuses_bad_labels_and_settings(pair, clean):
    model = pair["benign"]
    with pytest.raises(DatasetError, match=r"bti_dbf_unlearn: labels must be \(N, 2\) radians with N=48"):
        bti_dbf_unlearn(model, clean, labels=np.zeros((5, 2)), **UNLEARN)
    with pytest.raises(DatasetError, match="bti_dbf_unlearn: labels contain NaN"):
        bti_dbf_unlearn(model, clean, labels=np.full((48, 2), np.nan), **UNLEARN)
    with pytest.raises(ConfigError, match="bti_dbf_unlearn: unknown setting.*nosuch"):
        bti_dbf_unlearn(model, clean, nosuch=1)
    with pytest.raises(ConfigError, match="bti_dbf_unlearn: rounds must be within 1..100, got 0"):
        bti_dbf_unlearn(model, clean, rounds=0)
