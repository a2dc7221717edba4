"""Test-wide settings."""

import os

import torch

# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads
# that wait for each other make a 2-s training run take a minute. One thread also makes runs
# bitwise repeatable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Decision threshold of the SecureGaze scan for the tiny test models (32 px, easy faces, width-8
#: small CNN). The scanner's default threshold is calibrated for 64-px small CNNs on the standard
#: synthetic faces (docs/detection.md); scores scale with the images and the model family, and these
#: tiny models score about 0.001-0.002 (BadNets) against 0.016-0.022 (benign) over four seeds.
TINY_THRESHOLD = 0.006


import math  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_gaze_bundles(tmp_path_factory):
    """ONNX bundles of a tiny benign and a tiny BadNets model, 32 px: the recipe of
    tests/test_securegaze.py (easy faces, width-8 small CNN, 6 epochs, BadNets at 10 % towards
    (10, -20) deg), trained once per session by whichever test asks first (about 10 s)."""
    from securegaze.attacks import create_attack
    from securegaze.bundle import export_bundle
    from securegaze.data.synthetic import SyntheticConfig, render_dataset
    from securegaze.training import TrainConfig, train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-bundles")
    easy = SyntheticConfig(size=32, head_jitter_deg=(0.0, 0.0, 0.0), blur=(0.0, 0.0), noise=(0.0, 0.0))
    train_set = render_dataset(3000, 32, seed=21, config=easy)
    config = TrainConfig(architecture="small_cnn", model_kwargs={"width": 8}, input_size=32, epochs=6,
                         batch_size=64, lr=3e-3, seed=2, checkpoint_every=100_000)
    attack = create_attack("badnets", target_gaze=(math.radians(10.0), math.radians(-20.0)), poison_rate=0.1, seed=2)
    backdoored, _ = train(config, attack.poison(train_set), None, out / "train-backdoored")
    benign, _ = train(config, train_set, None, out / "train-benign")
    export_bundle(benign, out / "benign", "tiny-benign")
    export_bundle(backdoored, out / "backdoored", "tiny-badnets")
    return {"benign": out / "benign", "backdoored": out / "backdoored"}
