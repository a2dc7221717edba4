"""The scan's runs side by side (ScanStages) and the 4.0 reference's direction (clean_axis_offset)."""

import math
import threading

import numpy as np
import pytest
import torch
from conftest import torch_threads

from securegaze.defense.securegaze.stages import ScanStages, ScanStopped
from securegaze.defense.securegaze.statistics import clean_axis_offset


def test_the_offset_runs_along_the_main_axis_towards_the_longer_side():
    rng = np.random.default_rng(0)
    # Yaw spread five times the pitch spread, with a long tail towards negative yaw.
    yaw = np.concatenate([rng.normal(0.0, 0.2, 900), rng.uniform(-0.9, -0.4, 100)])
    gaze = np.stack([rng.normal(0.0, 0.04, 1000), yaw], axis=1)
    pitch, yaw_offset = clean_axis_offset(gaze, 0.25)
    assert math.hypot(pitch, yaw_offset) == pytest.approx(0.25)
    assert yaw_offset < -0.24 and abs(pitch) < 0.02
    # Mirrored data, mirrored offset; a pitch-dominated spread, a pitch offset.
    assert clean_axis_offset(gaze * [1, -1], 0.25)[1] == pytest.approx(-yaw_offset)
    assert abs(clean_axis_offset(gaze[:, ::-1], 0.25)[0]) > 0.24


def test_a_symmetric_spread_gives_the_same_offset_for_the_same_gazes():
    gaze = np.random.default_rng(1).normal(0.0, [0.1, 0.3], size=(500, 2))
    assert clean_axis_offset(gaze, 0.3) == clean_axis_offset(gaze.copy(), 0.3)


@pytest.mark.parametrize("threads", [1, 2])
def test_runs_are_named_timed_and_the_threads_given_back(threads):
    with torch_threads(threads):
        with ScanStages(parallel=True) as stages:
            inside = torch.get_num_threads()
            runs = [stages.submit("restart", lambda k=k: (k, threading.current_thread().name)) for k in range(3)]
            results = [stages.result(run) for run in runs]
        assert torch.get_num_threads() == threads
    assert inside == 1  # each run on one torch thread
    assert [k for k, _ in results] == [0, 1, 2]
    assert set(stages.seconds) == {"restart", "restart_2", "restart_3"}
    on_workers = all(name.startswith("securegaze-scan") for _, name in results)
    assert on_workers == (threads > 1)


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failed_run_stops_the_others_and_its_error_reaches_the_caller(parallel):
    started = threading.Event()

    def fails():
        raise ValueError("the model broke")

    def long_run(progress):
        started.set()
        for _ in range(10_000):
            progress(None)  # raises ScanStopped once the scan is given up
            threading.Event().wait(0.001)
        return "finished"

    with torch_threads(2), pytest.raises(ValueError, match="the model broke"), \
            ScanStages(parallel=parallel) as stages:
        first = stages.submit("reverse", fails)
        other = stages.submit("reference", long_run, stages.progress)
        stages.result(other)
        stages.result(first)
    assert isinstance(other.exception(), ScanStopped)
    with pytest.raises(ScanStopped):
        stages.progress(None)


def test_many_threads_are_shared_out_between_the_runs():
    with torch_threads(8), ScanStages(parallel=True) as stages:
        inside = torch.get_num_threads()
        workers = stages.workers
    assert (inside, workers) == (2, 4)
