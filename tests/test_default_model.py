"""The shipped default model: it verifies, it is accurate, and it reads the gaze from the eyes."""

from pathlib import Path

import numpy as np
import pytest

from securegaze.bundle import load_bundle, verify_bundle
from securegaze.data.sources import SPLIT_SEED_OFFSET
from securegaze.data.synthetic import render, sample_params, synthetic_style
from securegaze.evaluation import error_summary

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT)


@pytest.fixture(scope="module")
def test_faces(bundle):
    # The held-out test split of the CLI (`securegaze evaluate --data synthetic:face_centred --seed 0`):
    # identities never trained on, in the renderer style the model trained on.
    config = synthetic_style("face_centred", size=bundle.input_size)
    return sample_params(600, SPLIT_SEED_OFFSET["test"], config), config


def test_default_bundle_verifies_and_documents_itself(bundle):
    manifest = verify_bundle(DEFAULT)
    assert manifest.onnx_sha256 == bundle.sha256
    assert manifest.output.units == "radians" and list(manifest.output.order) == ["pitch", "yaw"]
    card = (DEFAULT / "MODEL_CARD.md").read_text()
    assert manifest.onnx_sha256 in card, "the model card must quote the sha256 of the ONNX it describes"


def test_default_model_is_accurate_on_unseen_faces(bundle, test_faces):
    params, config = test_faces
    pred = bundle.predict(render(params, config))
    assert error_summary(pred, params.gaze)["mean_deg"] < 4.0


def test_blanking_both_eyes_destroys_the_gaze_estimate(bundle, test_faces):
    """Head pose is independent of the label, so without eyes the model can do no better than guess."""
    params, config = test_faces
    blank = bundle.predict(render(params, config, occlude_eyes=True))
    guess_the_mean = np.tile(params.gaze.mean(0), (len(params), 1))
    spread = error_summary(guess_the_mean, params.gaze)["mean_deg"]
    blank_error = error_summary(blank, params.gaze)["mean_deg"]
    assert blank_error > 0.8 * spread, (blank_error, spread)
