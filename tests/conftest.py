"""Test-wide settings, and the knobs that measure how far the training-outcome tests sit from
their thresholds (tests/README.md says how the margins were measured)."""

import contextlib
import json
import operator
import os

import torch

from securegaze.defense.securegaze import DEFAULT_THRESHOLD

#: Intra-op threads of every test. Tiny test models gain nothing from more, and on a busy 2-core
#: machine OpenMP threads that wait for each other make a 2-s training run take a minute; one thread
#: also makes runs bitwise repeatable. ``SECUREGAZE_TEST_THREADS=2`` runs the suite with two, as the
#: margin sweep (tests/measure_margins.py) does.
TEST_THREADS = int(os.environ.get("SECUREGAZE_TEST_THREADS", "1"))
#: Shifts every seed of the training fixtures (data, initialisation, poisoning) by 100 x this
#: number, so the margin sweep can retrain the same recipes on other draws. 0 in CI.
SEED_SHIFT = int(os.environ.get("SECUREGAZE_TEST_SEED_SHIFT", "0"))
#: Where ``margin`` appends one JSON line per checked figure (set by the margin sweep only).
MARGIN_LOG = os.environ.get("SECUREGAZE_MARGIN_LOG")

torch.set_num_threads(TEST_THREADS)
os.environ.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))


def sweep_seed(value: int) -> int:
    """A training fixture's seed, moved by the sweep's seed shift (identity in CI)."""
    return value + 100 * SEED_SHIFT


_OPERATORS = {">": operator.gt, "<": operator.lt}


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` torch threads; the previous count is given back afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def margin(name: str, value: float, op: str, bound: float) -> None:
    """Assert ``value op bound`` for a figure that comes out of a training or optimisation run, and
    log it for the margin sweep. The logged relative margin is how far the figure is from the bound as
    a share of the bound (0.5: half the bound to spare; negative: the assertion failed)."""
    value, bound = float(value), float(bound)
    if MARGIN_LOG:
        spare = (value - bound) if op == ">" else (bound - value)
        record = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "figure": name,
                  "value": value, "op": op, "bound": bound, "relative_margin": spare / abs(bound) if bound else spare}
        with open(MARGIN_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
    assert _OPERATORS[op](value, bound), f"{name}: {value:.4g} is not {op} {bound:.4g}"


#: Decision threshold of the SecureGaze scan for the tiny test models (32 px, easy faces, width-8
#: small CNN): the scanner's default. The score is a ratio of two costs of the same model (since 3.0:
#: the cheapest collapse over a uniform gaze shift), free of the images' and the family's scale, so the
#: tiny models need no threshold of their own (docs/threshold_calibration.md, scanner 4.1: small CNN
#: BadNets 0.038-0.060 against benign 0.756-1.366 over three seeds; the default threshold is 0.3354).
TINY_THRESHOLD = DEFAULT_THRESHOLD


import math  # noqa: E402

import pytest  # noqa: E402


def tiny_train_config(seed: int, architecture: str = "small_cnn"):
    """The tests' tiny training recipe (32 px, width 8, 6 epochs of batches of 64 at lr 3e-3), with ``seed``."""
    from securegaze.training import TrainConfig

    return TrainConfig(architecture=architecture, model_kwargs={"width": 8}, input_size=32, epochs=6,
                       batch_size=64, lr=3e-3, seed=seed, checkpoint_every=100_000)


@pytest.fixture(autouse=True)
def test_threads():
    """Every test runs on ``TEST_THREADS`` intra-op threads, whatever an earlier test set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_gaze_bundles(tmp_path_factory):
    """ONNX bundles of a tiny benign and a tiny BadNets model, 32 px: the recipe of
    tests/test_securegaze.py (easy faces, width-8 small CNN, 6 epochs, BadNets at 10 % towards
    (10, -20) deg), trained once per session by whichever test asks first (about 10 s)."""
    from securegaze.attacks import create_attack
    from securegaze.bundle import export_bundle
    from securegaze.data.synthetic import render_dataset, synthetic_style
    from securegaze.training import train

    torch.set_num_threads(TEST_THREADS)
    out = tmp_path_factory.mktemp("tiny-bundles")
    easy = synthetic_style("easy", size=32)
    train_set = render_dataset(3000, 32, seed=sweep_seed(21), config=easy)
    config = tiny_train_config(sweep_seed(2))
    attack = create_attack("badnets", target_gaze=(math.radians(10.0), math.radians(-20.0)), poison_rate=0.1,
                           seed=sweep_seed(2))
    backdoored, _ = train(config, attack.poison(train_set), None, out / "train-backdoored")
    benign, _ = train(config, train_set, None, out / "train-benign")
    export_bundle(benign, out / "benign", "tiny-benign")
    export_bundle(backdoored, out / "backdoored", "tiny-badnets")
    return {"benign": out / "benign", "backdoored": out / "backdoored"}


def write_grey_video(path, levels) -> None:
    """A 64x48 MJPG video at 10 fps, one flat grey frame per value of ``levels`` (0..255)."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for level in levels:
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
