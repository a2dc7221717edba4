"""SIGINT (Ctrl-C) and SIGTERM (what a service manager sends to stop a service) end ``edge-app run``
and ``edge-app trial`` the same way: the frame loop stops, what was recorded is kept and closed
under its name, the summary is printed, and the exit code says the run was interrupted:

* :data:`EXIT_SIGINT` 130 after SIGINT, :data:`EXIT_SIGTERM` 143 after SIGTERM (128 + the signal's
  number, what a shell reports for a process killed by that signal).

:class:`StopSignals` handles both in two regimes, so that neither the start-up nor the frame loop
can be left half-done.
"""

from __future__ import annotations

import signal
import threading

EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM
#: Every exit code that means "stopped by a signal", by signal.
INTERRUPTED_EXIT_CODES = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}


def signal_label(signum: int | None) -> str:
    """``SIGTERM``, ``SIGINT (Ctrl-C)``; "a signal" for None."""
    if signum is None:
        return "a signal"
    name = signal.Signals(signum).name
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


class StopSignals:
    """SIGTERM and SIGINT end a run or trial like a Ctrl-C, in two regimes.

    Before :attr:`armed` (start-up: the integrity check, possibly a minute-long scan; nothing is
    recorded yet) the handler raises KeyboardInterrupt, so the start-up stops at once. Once armed
    (set just before the first output is opened) it only sets :attr:`stop`, which the frame loop
    checks once per frame (:func:`~edge_app.pipeline.run_pipeline`, or the GUI's timer): an
    exception raised by a signal handler lands at whatever bytecode the main thread is at, also
    inside the lock of a queue.Queue between its acquire and its ``with`` taking hold, and that lock
    then stays held, so closing the log waits on it for ever. Closing is never interrupted.

    :attr:`signum` is the first signal received (None: none); :attr:`exit_code` its exit code.
    Outside the main thread signals are left alone."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.stop = threading.Event()
        self.armed = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + int(self.signum)

    @property
    def label(self) -> str:
        return signal_label(self.signum)

    def _handler(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        self.stop.set()
        if not self.armed:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
