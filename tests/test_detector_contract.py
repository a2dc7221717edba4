"""The contract every registered detector keeps, checked over ``DETECTORS.names()``.

As scikit-learn runs its estimator checks over every estimator, these tests run over every detector,
so a new method (a baseline in its own file plus one registration line) is held to the same contract
without a test of its own: settings round-trip, bad input gives one clear error, the scanned model is
left as it was, one seed gives one report, and the report survives JSON. Each detector runs with its
``smoke_settings`` on an untrained 32-px small CNN: the verdicts mean nothing here, the behaviour does.
"""

import json
import math

import numpy as np
import pytest
import torch

from securegaze.data.synthetic import render_dataset, synthetic_style
from securegaze.defense import DETECTORS, Detector, ScanReport, create_detector
from securegaze.errors import ConfigError, DatasetError, ModelFormatError
from securegaze.models import create_model

NAMES = DETECTORS.names()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("small_cnn", input_size=32, width=8).eval()


@pytest.fixture(scope="module")
def clean():
    return render_dataset(24, seed=3, config=synthetic_style("easy", size=32)).images


def smoke(name: str, **changes) -> Detector:
    detector_class = DETECTORS.get(name)
    return create_detector(name, **{**detector_class.smoke_settings, **changes})


def comparable(report: ScanReport) -> dict:
    """The report without what legitimately differs between two runs (wall time, file paths)."""
    data = report.to_dict()
    for key in ("runtime_s", "trigger_image_path", "generator_path"):
        data.pop(key)
    data["details"] = {k: v for k, v in data["details"].items() if k != "stage_seconds"}  # the clock per stage
    return data


@pytest.mark.parametrize("name", NAMES)
def test_settings_rebuild_the_detector(name):
    detector = smoke(name)
    assert isinstance(detector, Detector) and detector.name == name
    rebuilt = create_detector(name, **detector.settings())
    assert rebuilt.settings() == detector.settings()
    assert json.loads(json.dumps(detector.settings())) == detector.settings(), "settings must be plain JSON"
    for ablation in detector.ablations:
        assert detector.ablation(ablation).settings() != detector.settings()
    with pytest.raises(ConfigError, match=f"{name}: unknown ablation 'nosuch'"):
        detector.ablation("nosuch")
    with pytest.raises(ConfigError, match="nosuch"):
        create_detector(name, nosuch=1)


@pytest.mark.parametrize("name", NAMES)
def test_bad_clean_images_are_one_clear_error(name, model, clean):
    detector = smoke(name)
    nan_images = clean.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    nan_images[0, 0, 0, 0] = np.nan
    cases = [
        (clean[:3], "need at least"),
        (nan_images, "NaN"),
        (np.zeros((16, 48, 48, 3), np.uint8), "48x48 px but the model expects 32x32"),
        (clean.astype(np.int32), "dtype int32"),
    ]
    for images, pattern in cases:
        with pytest.raises(DatasetError, match=pattern) as info:
            detector.scan(model, images)
        message = str(info.value)
        assert message.startswith(f"{name}:") and "\n" not in message


@pytest.mark.parametrize("name", NAMES)
def test_a_module_without_the_feature_split_is_refused(name, clean):
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    with pytest.raises(ModelFormatError, match=f"{name}: .* not a gaze model split into F and H"):
        smoke(name).scan(plain, clean)


@pytest.mark.parametrize("name", NAMES)
def test_a_scan_leaves_the_model_as_it_was_and_one_seed_gives_one_report(name, model, clean, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    first = smoke(name, seed=1).scan(model, clean, artifacts_dir=tmp_path / "a", model_sha256="ab" * 32)
    assert model.training, "the model's mode must be restored"
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the scan changed the weights"
    assert [p.requires_grad for p in model.parameters()] == flags
    again = smoke(name, seed=1).scan(model, clean, artifacts_dir=tmp_path / "b", model_sha256="ab" * 32)
    assert comparable(first) == comparable(again)
    assert first.detector == name and first.model_sha256 == "ab" * 32 and first.clean_count == len(clean)
    assert first.verdict in ("clean", "backdoored") and first.runtime_s > 0
    assert first.settings == smoke(name, seed=1).settings()


@pytest.mark.parametrize("name", NAMES)
def test_the_report_round_trips_through_json_and_a_file(name, model, clean, tmp_path):
    report = smoke(name).scan(model, clean)
    assert ScanReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    saved = report.save(tmp_path / "report.json")
    assert ScanReport.load(saved) == report
    # An infeasible scan's score is inf, which JSON cannot hold as a number: it is written as "inf".
    infinite = ScanReport.from_dict({**report.to_dict(), "score": "inf"})
    assert math.isinf(infinite.score) and json.loads(json.dumps(infinite.to_dict()))["score"] == "inf"
