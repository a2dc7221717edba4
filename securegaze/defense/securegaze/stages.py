"""The runs of one scan side by side: one Python thread per run, each on one torch thread.

A scan's reversal, reference run, probes and restarts are separate optimisations of a frozen model;
most do not need each other's results. :class:`ScanStages` runs what is submitted to it on as many
threads as the process has torch threads (``torch.get_num_threads()``), at most ``MAX_RUNS`` (what
a scan starts at once: the reversal, the reference and two probes), and gives each run an equal share
of the torch threads meanwhile. Up to ``2 * MAX_RUNS - 1`` threads each run has one torch thread and
does exactly the arithmetic of a one-thread scan, so the result is the same on 1 to 7 threads, and two
small runs on two cores take about the time of one (torch's own two-thread kernels gain only ~1.5x on
the 64-px models of the benchmarks, whose convolutions are too small to split well); on more threads a
large model's runs still get several each. Sequential (``parallel`` off, or one thread), each
submitted run executes at once in the caller, on the process's threads.

The progress callback is called from the worker threads under a lock; a failure of one run, or of
the caller (an interrupt), stops the others at their next step (:class:`ScanStopped`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from securegaze.defense.base import ProgressCallback, ScanProgress

#: Most runs a scan has going at once (the reversal, the reference and the two probes).
MAX_RUNS = 4


class ScanStopped(Exception):
    """Raised inside a run whose scan was given up (another run failed, or the caller stopped)."""


class ScanStages:
    """Context manager: ``submit(name, fn, ...)`` -> Future; ``seconds``: wall seconds per run name;
    ``progress``: the caller's callback made thread-safe and stoppable (always callable)."""

    def __init__(self, parallel: bool, progress: ProgressCallback | None = None) -> None:
        self.parallel = bool(parallel)
        self.user_progress = progress
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pool: ThreadPoolExecutor | None = None
        self.failure: BaseException | None = None

    def __enter__(self) -> ScanStages:
        self.threads = torch.get_num_threads()
        #: How many runs go at once (1: one after the other, in the caller).
        self.workers = min(self.threads, MAX_RUNS) if self.parallel else 1
        if self.workers > 1:
            torch.set_num_threads(self.threads // self.workers)
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="securegaze-scan")
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.stop.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(self.threads)

    def progress(self, event: ScanProgress) -> None:
        """The callback every run gets: raises :class:`ScanStopped` once the scan is given up."""
        if self.stop.is_set():
            raise ScanStopped("the scan was stopped")
        if self.user_progress is not None:
            with self.lock:
                self.user_progress(event)

    def result(self, future: Future):
        """The run's result; when it was stopped because another run failed, that run's error."""
        try:
            return future.result()
        except ScanStopped:
            if self.failure is not None:
                raise self.failure from None
            raise

    def submit(self, name: str, fn, *args, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` as the run ``name`` (``name_2``, ... when taken); its Future."""
        with self.lock:
            key, count = name, 1
            while key in self.seconds:
                count += 1
                key = f"{name}_{count}"
            self.seconds[key] = 0.0

        def timed():
            if self.stop.is_set():
                raise ScanStopped("the scan was stopped")
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                if not isinstance(exc, ScanStopped):
                    with self.lock:
                        self.failure = self.failure or exc
                self.stop.set()
                raise
            finally:
                self.seconds[key] = round(time.monotonic() - started, 2)

        if self.pool is not None:
            return self.pool.submit(timed)
        future: Future = Future()
        try:
            future.set_result(timed())
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the Future, like a pool's
            future.set_exception(exc)
        return future
