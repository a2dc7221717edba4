"""Drop frames, not time: the simulated live camera (``camera:synthetic``) is paced on the clock
and endless, and when processing is slower than capture the one-slot mailbox between the capture
thread and the frame loop drops the oldest frame and counts it; nothing queues up. No timing is
asserted: the clock is faked, or the consumer waits for the producer before it takes a frame."""

import time
from types import SimpleNamespace

import numpy as np
import pytest

from edge_app.attention import AttentionMonitor, AttentionSettings
from edge_app.config import EdgeConfig
from edge_app.pipeline import run_pipeline
from edge_app.sources import CaptureThread, SyntheticCameraSource, open_source


class _Driver:
    """Stands in for the synthetic driver: a 2-s drive of 20 frames whose image is its index."""

    duration_s = 2.0
    frame_count = 20

    def render_frame(self, index):
        return np.full((4, 4, 3), index, np.uint8), index / 10.0, None


class _Clock:
    """A fake ``time`` module for edge_app.sources: sleeping advances the clock."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def perf_counter(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(round(s, 9))
        self.now += s


def test_synthetic_camera_is_paced_live_and_endless(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("edge_app.sources.time", clock)
    src = SyntheticCameraSource(_Driver(), fps=10, frames=4)  # poses: drive frames 0, 6, 13, 19
    assert src.live and [int(im[0, 0, 0]) for im in src.images] == [0, 6, 13, 19]
    first, second, third = src.read(), src.read(), src.read()
    assert clock.sleeps == pytest.approx([0.1, 0.1])  # read back to back: one frame per 1/fps, not faster
    assert [f.timestamp_s for f in (first, second, third)] == pytest.approx([0.0, 0.1, 0.2]) and third.index == 2
    clock.now += 1.0  # the reader was late: the next frame comes at once, the one after a full period later
    late, after = src.read(), src.read()
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1]) and after.timestamp_s - late.timestamp_s == pytest.approx(0.1)
    clock.now = 100.0 + 2.5  # the drive loops: 0.5 s into the second lap shows the second pose
    assert int(src.read().image[0, 0, 0]) == 6
    clock.now += 3600.0
    assert src.read() is not None and src.read().index == 7  # a camera never runs out


def test_capture_mailbox_holds_one_frame_drops_the_oldest_and_counts():
    capture = CaptureThread(SyntheticCameraSource(_Driver(), fps=1000, frames=4), drop_stale=True).start()
    taken, peak = [], 0
    try:
        for k in range(1, 6):
            while capture.captured < 10 * k:  # the consumer is slow: 10 captures per frame taken
                with capture._cond:
                    peak = max(peak, len(capture._frames))
                time.sleep(0.001)
            taken.append(capture.get(timeout=5.0).index)
    finally:
        capture.stop()
    with capture._cond:
        pending = len(capture._frames)
    assert peak <= 1 and pending <= 1  # bounded: never more than the newest frame waits
    assert taken == sorted(set(taken))  # the newest frame each time, in order
    assert capture.captured == len(taken) + capture.dropped + pending  # every frame accounted for
    assert capture.dropped >= 50 - len(taken) - 1


def test_slow_processing_drops_frames_of_the_synthetic_camera():
    """run_pipeline on the live source with processing slower than capture: the processed frames
    skip ahead, the skipped ones are counted as dropped, and none is left queued."""
    src = SyntheticCameraSource(_Driver(), fps=1000, frames=4)
    monitor = AttentionMonitor(AttentionSettings())
    seen = []

    class SlowPipeline:
        invalid_gaze_frames = 0

        def process(self, frame):
            seen.append(frame.index)
            produced = src._index
            while src._index < produced + 3:  # three more frames read while this one is processed
                time.sleep(0.001)
            attention = monitor.update(frame.timestamp_s, None, False)
            return SimpleNamespace(frame=frame, attention=attention,
                                   latency_ms={"total": 1.0, "end_to_end": 1.0})

    summary = run_pipeline(SlowPipeline(), src, max_frames=8)
    assert summary.frames == 8 and len(seen) == 8
    assert all(b - a >= 2 for a, b in zip(seen, seen[1:], strict=False))  # the frames between were dropped
    assert summary.dropped >= 7 and summary.captured - summary.frames - summary.dropped in (0, 1)


def test_camera_synthetic_is_a_live_source():
    cfg = EdgeConfig.model_validate({"synthetic": {"width": 64, "height": 48, "fps": 120, "script": "short"}})
    src = open_source("camera:synthetic", cfg)
    assert isinstance(src, SyntheticCameraSource) and src.live and src.fps == 120
    assert src.images[0].shape == (48, 64, 3) and "camera:synthetic" in src.description
