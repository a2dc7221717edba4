"""Memory that stays flat over an hours-long run: latency percentiles from a fixed-bin histogram
(within its stated error of numpy.percentile), the capture thread's read times the same way, the
synthetic drive's scoring in memory fixed by the drive, the JSON-lines writer's bounded queue
(drops counted when live, waits when recorded), and signals that set a flag instead of raising.
No timing is asserted: threads are synchronised with events."""

import os
import signal
import sys
import threading

import numpy as np
import pytest

from edge_app.drive_scoring import DriveScore
from edge_app.jsonlines import JsonLinesWriter
from edge_app.latency import HIGH_MS, LOW_MS, RELATIVE_ERROR, LatencyHistogram
from edge_app.pipeline import LatencyStats, signals_set
from edge_app.sources import CaptureThread, MemorySource
from edge_app.trial.run import StopSignals

QS = (0, 1, 5, 25, 50, 75, 90, 95, 99, 99.9, 100)


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "bimodal", "few", "one"])
def test_histogram_percentiles_within_the_stated_error_of_numpy(kind):
    rng = np.random.default_rng(7)
    data = {"lognormal": lambda: rng.lognormal(np.log(8.0), 0.8, 50_000),
            "uniform": lambda: rng.uniform(0.05, 500.0, 20_000),
            "bimodal": lambda: np.concatenate([rng.normal(3.0, 0.2, 9000), rng.normal(40.0, 5.0, 1000)]),
            "few": lambda: rng.uniform(1.0, 30.0, 7),
            "one": lambda: np.array([12.345])}[kind]()
    data = np.clip(data, LOW_MS, HIGH_MS * 0.999)
    hist = LatencyHistogram()
    for v in data[:1000]:
        hist.add(v)
    hist.add_many(data[1000:])
    for q in QS:
        exact = float(np.percentile(data, q))
        assert abs(hist.percentile(q) - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9), (q, exact)
    assert RELATIVE_ERROR < 0.02
    assert hist.count == data.size and hist.max_ms == data.max() and hist.min_ms == data.min()
    assert hist.mean_ms == pytest.approx(float(np.mean(data)), rel=1e-9)
    summary = hist.summary()
    assert set(summary) == {"p50", "p95", "mean", "max", "n"} and summary["n"] == data.size


def test_histogram_edges_and_empty():
    hist = LatencyHistogram()
    assert np.isnan(hist.percentile(50)) and np.isnan(hist.summary()["mean"])
    hist.add(float("nan"))  # no latency measured: not a sample
    assert hist.count == 0
    hist.add_many([0.0, 0.001, 2e6])  # below and above the bins: the exact extremes are reported
    assert hist.percentile(0) == 0.0 and hist.percentile(100) == 2e6 and hist.count == 3


def test_histogram_size_is_constant_over_a_million_samples():
    hist = LatencyHistogram()
    rng = np.random.default_rng(1)
    hist.add_many(rng.lognormal(2.0, 1.0, 1000))
    counts, nbytes, attrs = hist.counts, hist.counts.nbytes, sorted(vars(hist))
    sizes = {k: sys.getsizeof(v) for k, v in vars(hist).items() if not isinstance(v, float | int)}
    for _ in range(10):
        hist.add_many(rng.lognormal(2.0, 1.0, 100_000))
    for v in rng.lognormal(2.0, 1.0, 2000):
        hist.add(v)
    assert hist.count == 1_003_000
    assert hist.counts is counts and hist.counts.nbytes == nbytes and sorted(vars(hist)) == attrs
    assert {k: sys.getsizeof(v) for k, v in vars(hist).items() if not isinstance(v, float | int)} == sizes


def test_latency_stats_keep_no_per_frame_samples():
    stats = LatencyStats()
    stages = ("capture", "face", "infer", "total", "end_to_end")
    rng = np.random.default_rng(2)
    for _ in range(200):
        stats.add(dict(zip(stages, rng.uniform(0.1, 20.0, len(stages)), strict=True)))
    sizes = {k: (h.counts.nbytes, sorted(vars(h))) for k, h in stats.stages.items()}
    for _ in range(20_000):
        stats.add(dict(zip(stages, rng.uniform(0.1, 20.0, len(stages)), strict=True)))
    assert {k: (h.counts.nbytes, sorted(vars(h))) for k, h in stats.stages.items()} == sizes
    summary = stats.summary()
    assert list(summary) == ["capture", "face", "infer", "total", "end_to_end"]
    assert summary["total"]["n"] == 20_200 and summary["total"]["p50"] == pytest.approx(10.05, rel=0.03)


def test_capture_thread_read_times_are_a_histogram_and_each_frame_carries_its_own():
    source = MemorySource([np.zeros((2, 2, 3), np.uint8)], duration_s=3000 / 30.0)
    capture = CaptureThread(source, drop_stale=False, queue_size=4).start()
    size = capture.read_stats.counts.nbytes
    frames = 0
    while (frame := capture.get(timeout=5.0)) is not None:
        assert frame.read_ms is not None and frame.read_ms >= 0.0
        frames += 1
    capture.stop()
    assert frames == capture.read_stats.count == 3000 and capture.read_stats.counts.nbytes == size
    assert not any(isinstance(v, list) for v in vars(capture).values())


def test_drive_score_matches_numpy_and_is_allocated_once():
    rng = np.random.default_rng(3)
    zones = rng.choice(["road", "mirror", "phone"], 500)
    pipe, oracle = rng.uniform(0, 10, 500), rng.uniform(0, 5, 500)
    score = DriveScore(600)
    buffer = score._pipeline
    for z, p, o in zip(zones, pipe, oracle, strict=True):
        score.add(str(z), float(p), float(o))
    s = score.summary()
    assert score._pipeline is buffer
    assert s["mean_angular_error_deg"] == pytest.approx(pipe.mean()) and s["median_angular_error_deg"] == np.median(pipe)
    assert s["oracle_mean_angular_error_deg"] == pytest.approx(oracle.mean()) and s["gaze_frames"] == 500
    assert list(s["mean_angular_error_deg_by_zone"]) == ["mirror", "phone", "road"]
    for z, v in s["mean_angular_error_deg_by_zone"].items():
        assert v["pipeline"] == pytest.approx(pipe[zones == z].mean()) and v["frames"] == int((zones == z).sum())
    assert np.isnan(DriveScore(10).summary()["median_angular_error_deg"])


class _GatedStdout:
    """A stdout whose write waits until ``gate`` is set (a disk that stalls); ``entered`` tells the
    test the writer thread is stuck in it."""

    def __init__(self, fail=False):
        self.gate, self.entered, self.lines, self.fail = threading.Event(), threading.Event(), [], fail

    def write(self, text):
        self.entered.set()
        if self.fail:
            raise OSError(28, "No space left on device")
        self.gate.wait()
        self.lines.append(text)

    def flush(self):
        pass


def test_jsonl_writer_live_drops_and_counts_when_the_disk_stalls(monkeypatch):
    out = _GatedStdout()
    monkeypatch.setattr(sys, "stdout", out)
    writer = JsonLinesWriter("-", drop_when_full=True, max_queue=8)
    writer.write({"frame": 0})
    assert out.entered.wait(10.0)  # the writer thread holds frame 0, stuck in write
    for k in range(1, 14):
        writer.write({"frame": k})  # 8 fit in the queue, 5 are dropped; write never waits
    assert writer.dropped == 5
    out.gate.set()
    writer.close()
    assert [int(line.split(": ")[1].rstrip("}\n")) for line in out.lines] == list(range(9))


def test_jsonl_writer_recorded_waits_and_loses_nothing(monkeypatch):
    out = _GatedStdout()
    monkeypatch.setattr(sys, "stdout", out)
    writer = JsonLinesWriter("-", drop_when_full=False, max_queue=2)
    producer = threading.Thread(target=lambda: [writer.write({"frame": k}) for k in range(50)])
    producer.start()
    assert out.entered.wait(10.0)
    out.gate.set()
    producer.join(30.0)
    writer.close()
    assert not producer.is_alive() and writer.dropped == 0 and len(out.lines) == 50


def test_jsonl_writer_write_errors_are_counted_and_never_block(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _GatedStdout(fail=True))
    writer = JsonLinesWriter("-", drop_when_full=False, max_queue=2)
    for k in range(20):  # a dead writer would leave a bounded, blocking queue full for ever
        writer.write({"frame": k})
    writer.close()
    assert writer.dropped == 20 and isinstance(writer.error, OSError)


def test_signals_set_a_flag_instead_of_raising():
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    with signals_set(stop):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes of this thread
            if stop.is_set():
                break
    assert stop.is_set() and signal.getsignal(signal.SIGINT) is previous


def test_trial_signals_raise_only_before_the_log_is_open():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert signals.stop.is_set()
    with StopSignals() as signals:
        signals.armed = True
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            if signals.stop.is_set():
                break
    assert signals.stop.is_set() and signal.getsignal(signal.SIGTERM) is previous
