"""The scan's warp branch (setting ``warp``): the displacement field, its budget, and how it enters the report."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import margin, sweep_seed

from securegaze.bundle import open_model
from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense import create_detector
from securegaze.defense.securegaze import SecureGazeSettings
from securegaze.defense.securegaze.warp import WarpField, warp_not_run, warp_search
from securegaze.errors import ConfigError


def _images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_a_zero_field_is_the_identity():
    x = _images()
    # Up to the rounding of the sampling grid's coordinates (measured 3e-6).
    assert torch.allclose(WarpField(32, 16)(x), x, atol=2e-5)


def test_offsets_are_pixels():
    # A field of one pixel to the right everywhere samples each pixel's right-hand neighbour.
    field = WarpField(32, 16)
    with torch.no_grad():
        field.offsets[:, 0] = 1.0
    x = _images()
    assert torch.allclose(field(x)[..., :, :-1], x[..., :, 1:], atol=1e-5)
    assert field.displacement().item() == pytest.approx(1.0, rel=1e-5)
    # Half the strength is half a pixel: the mean of the two neighbours.
    assert torch.allclose(field(x, 0.5)[..., :, :-1], 0.5 * (x[..., :, :-1] + x[..., :, 1:]), atol=1e-5)


@pytest.mark.parametrize("setting, value", [("warp_grid", 1), ("warp_budget_frac", 0.0), ("warp_budget_frac", 0.5),
                                            ("warp_steps", 0), ("warp", "yes")])
def test_bad_warp_settings_are_refused(setting, value):
    with pytest.raises(ConfigError, match=setting):
        create_detector("securegaze", **{setting: value})


def test_the_branch_runs_from_a_one_pixel_budget():
    cfg = SecureGazeSettings()
    assert warp_not_run(64, cfg) is None and warp_not_run(50, cfg) is None
    assert "0.98 px" in warp_not_run(49, cfg) and "0.64 px" in warp_not_run(32, cfg)
    assert warp_not_run(32, SecureGazeSettings(warp_budget_frac=0.04)) is None
    assert warp_not_run(224, SecureGazeSettings(warp=False)) == "off (setting warp)"


@pytest.fixture(scope="module")
def benign(tiny_gaze_bundles):
    model = open_model(tiny_gaze_bundles["benign"]).gaze_model()
    clean = render_dataset(96, 32, seed=sweep_seed(5), config=synthetic_style("easy", size=32))
    return model, clean


def test_the_search_keeps_to_its_budget(benign):
    model, clean = benign
    cfg = SecureGazeSettings(warp_steps=40, eval_every=10, eval_samples=64, batch_size=16)
    x = torch.as_tensor(clean.images).permute(0, 3, 1, 2).float() / 255.0
    for p in model.parameters():
        p.requires_grad_(False)
    result = warp_search(model.eval(), x, cfg)
    assert result.budget_px == pytest.approx(0.02 * 32) and result.grid == 16
    assert 0 < result.displacement_px <= result.budget_px * (1 + 1e-5)
    assert 0 < result.dispersion_ratio < 1.0 and 0 < result.feature_ratio
    assert result.met == (result.dispersion_ratio <= cfg.rho_out and result.feature_ratio <= cfg.rho_feat)
    assert 0.0 <= result.collapsed_share <= 1.0
    # A budget the objective runs into holds the field at its edge (the mean length scales with it).
    held = warp_search(model, x, SecureGazeSettings(warp_steps=40, eval_every=10, eval_samples=64, batch_size=16,
                                                    warp_budget_frac=0.004))
    assert held.displacement_px == pytest.approx(0.004 * 32, rel=1e-4)
    assert held.displacement_px < result.displacement_px


def test_the_report_keeps_the_warp_record_and_its_score(benign):
    model, clean = benign
    small = {"steps": 20, "eval_every": 10, "eval_samples": 64, "batch_size": 16, "sensitivity_samples": 32,
             "probe": False, "warp_steps": 20, "threshold": 0.3, "warp_budget_frac": 0.04}
    report = create_detector("securegaze", warp=True, **small).scan(model, clean.images)
    details, warp = report.details, report.details["warp"]
    assert details["score_statistic"] == ("min(cost_ratio_to_shift_reference, threshold * "
                                          "max(warp_dispersion_ratio / rho_out, warp_feature_ratio / rho_feat))")
    term = max(warp["dispersion_ratio"] / 0.1, warp["feature_ratio"] / 0.5)
    assert report.score == pytest.approx(min(details["cost_ratio"], 0.3 * term))
    assert warp["flagged"] == (term <= 1.0) == ("warp" in details["flagged_by"])
    assert len(warp["target_gaze_deg"]) == 2 and all(math.isfinite(v) for v in warp["target_gaze_deg"])
    # Re-decided under another threshold, the warp term moves with it (its line is rho_out itself).
    other = create_detector("securegaze", warp=True, **{**small, "threshold": 0.6}).redecided(report)
    assert other.score == pytest.approx(min(details["cost_ratio"], 0.6 * term))


def test_mitigation_unlearns_a_warp_field(benign):
    # A field the scan's warp branch kept is a trigger like a reversed edit: the faces resampled
    # through it are fine-tuned towards the clean answers, so their loss falls.
    from securegaze.defense.mitigation import mitigate

    model, clean = benign
    field = WarpField(32, 16)
    with torch.no_grad():
        field.offsets.copy_(torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(1)) * 2.0)
    tuned, result = mitigate(model, clean.images, field, epochs=10, return_result=True)
    assert result.reversed_loss_before > 0
    # Measured 0.78-0.85 over seed shifts 0-1 and 1-2 threads (Intel Xeon); without the field's faces
    # in the fine-tuning nothing would pull them towards the clean answers.
    margin("warped-face loss after / before", result.reversed_loss_after / result.reversed_loss_before, "<", 0.95)
    assert tuned is not model


def test_a_kept_field_round_trips_through_its_file(tmp_path):
    # What a scan writes beside its generator when the warp branch flagged, and bench mitigate reads back.
    from securegaze.defense.securegaze.warp import load_warp_field, save_warp_field
    from securegaze.errors import InputFileError

    field = WarpField(64, 16)
    with torch.no_grad():
        field.offsets.copy_(torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(2)))
    back = load_warp_field(save_warp_field(field, tmp_path / "warp_field.safetensors"))
    x = _images(2, 64)
    assert back.input_size == 64 and torch.equal(back.offsets, field.offsets) and torch.allclose(back(x), field(x))
    (tmp_path / "other.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(InputFileError, match="other.safetensors: not a SecureGaze warp field"):
        load_warp_field(tmp_path / "other.safetensors")
    with pytest.raises(InputFileError, match="missing.safetensors: warp field file not found"):
        load_warp_field(tmp_path / "missing.safetensors")


def test_a_flagging_field_is_written_with_the_scan(benign, tmp_path):
    # Constraints loose enough that any field meets them: the scan then keeps its field as an artifact.
    from securegaze.bench.mitigation import scan_warp_field

    model, clean = benign
    loose = {"steps": 20, "eval_every": 10, "eval_samples": 64, "batch_size": 16, "sensitivity_samples": 32,
             "probe": False, "warp_steps": 20, "warp_budget_frac": 0.04, "rho_out": 0.99, "rho_feat": 0.99}
    report = create_detector("securegaze", **loose).scan(model, clean.images, artifacts_dir=tmp_path)
    warp = report.details["warp"]
    assert warp["flagged"] and "warp" in report.details["flagged_by"] and report.verdict == "backdoored"
    assert warp["field_path"] == str(tmp_path / "warp_field.safetensors")
    field = scan_warp_field(tmp_path, report)
    assert field.input_size == 32 and field.displacement().item() == pytest.approx(warp["displacement_px"], rel=1e-5)
    assert not (tmp_path / "warp_field_unmet.safetensors").exists()


def test_an_unmet_field_is_written_for_the_mitigation_alone(benign, tmp_path):
    # A field that does not gather the outputs is no verdict, but the mitigation unlearns it (version 9):
    # the scan writes it under its own name, so a later `mitigate --scan` need not search it again.
    from securegaze.bench.mitigation import load_earlier_scan, scan_warp_field, scan_warp_fields

    model, clean = benign
    strict = {"steps": 20, "eval_every": 10, "eval_samples": 64, "batch_size": 16, "sensitivity_samples": 32,
              "probe": False, "warp_steps": 20, "warp_budget_frac": 0.04, "rho_out": 1e-4, "rho_feat": 1e-4}
    report = create_detector("securegaze", **strict).scan(model, clean.images, artifacts_dir=tmp_path,
                                                           model_sha256="ab" * 32)
    warp = report.details["warp"]
    assert not warp["flagged"] and "warp" not in report.details["flagged_by"]
    assert warp["field_path"] == str(tmp_path / "warp_field_unmet.safetensors")
    assert not (tmp_path / "warp_field.safetensors").exists() and scan_warp_field(tmp_path, report) is None
    kept, unkept = scan_warp_fields(tmp_path, report)
    assert kept is None and unkept.displacement().item() == pytest.approx(warp["displacement_px"], rel=1e-5)
    report.save(tmp_path / "report.json")
    _, _, *fields = load_earlier_scan(tmp_path, "ab" * 32, "model")
    assert fields[0] is None and isinstance(fields[1], WarpField)
    # A scan written before version 9 has no such file: nothing to read, the mitigation searches again.
    (tmp_path / "warp_field_unmet.safetensors").unlink()
    assert scan_warp_fields(tmp_path, report) == (None, None)


def test_mitigation_searches_a_field_where_the_scan_does_not_run_the_branch(benign):
    # Below 50 px the scan gives no verdict from a field, but a warp trigger is a route all the same:
    # the mitigation asks the detector for the best field at any size, met or not (version 9).
    model, clean = benign
    assert warp_not_run(32, SecureGazeSettings()) is not None
    small = {"warp_steps": 20, "eval_every": 10, "eval_samples": 64, "batch_size": 16}
    field = create_detector("securegaze", **small).warp_to_unlearn(model, clean.images)
    assert isinstance(field, WarpField) and field.input_size == 32
    # It moved, within the budget of 2 % of the side (0.64 px), and it is frozen like a kept field.
    assert 0 < field.displacement().item() <= 0.02 * 32 + 1e-4
    assert not any(p.requires_grad for p in field.parameters())
    assert create_detector("securegaze", warp=False, **small).warp_to_unlearn(model, clean.images) is None
