"""The overlay application: ``edge-app run --gui`` and ``edge-app trial --gui``.

Threads (docs/architecture.md section 2: the capture loop never waits for the display):

* the **capture thread** (:class:`~edge_app.sources.CaptureThread`) reads the source;
* the **pipeline thread** runs :func:`~edge_app.pipeline.run_pipeline`; its sink puts each record
  in a one-slot :class:`LatestRecord` (a newer record replaces an undisplayed one: frames are
  dropped from the display, never queued) and hands it to the trial log / recording;
* the **GUI thread** polls that slot with a QTimer at the screen's refresh rate and repaints only
  when a new record arrived. The GUI is a view: it never calls the pipeline.

Before the pipeline starts, the startup integrity check runs on a worker thread; a model without an
audit record is scanned while a splash shows the scan's progress. A model the policy blocks is not
run: the window shows the face video with a BLOCKED badge and the reason, the alerts come from
head pose alone (degraded mode, edge_app/degraded.py: a purple stripe across the top says so), and
the app exits 10.

Keys: q (or Esc) quit, space pause, r start/stop recording (raw video + JSON lines, on their own
thread), t mark the trigger on/off (trials: a new phase; plain runs: a flag in the recording).
The window closes by itself when a recorded source (video, folder, synthetic) ends.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QGuiApplication
from PyQt6.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from edge_app.gui.overlay import IntegrityBadge, OverlayView, state_from_record
from edge_app.gui.qt_env import create_application
from edge_app.gui.recording import SessionRecording, new_recording_folder
from edge_app.sources import Frame, FrameSource

#: Slowest repaint interval, ms, when the screen reports no refresh rate.
FALLBACK_INTERVAL_MS = 16


class LatestRecord:
    """One-slot mailbox between the pipeline thread and the GUI: ``put`` overwrites, ``take``
    returns the newest record once (None if nothing new). ``dropped``: records never displayed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rec = None
        self.received = 0
        self.dropped = 0

    def put(self, rec) -> None:
        with self._lock:
            if self._rec is not None:
                self.dropped += 1
            self._rec = rec
            self.received += 1

    def take(self):
        with self._lock:
            rec, self._rec = self._rec, None
            return rec


class ControlledSource(FrameSource):
    """Wraps a source so the GUI can pause it (``read`` waits) and stop it (``read`` ends it)."""

    def __init__(self, source: FrameSource) -> None:
        self.inner = source
        self.live = source.live
        self.description = source.description
        self.stop_event = threading.Event()
        self.running = threading.Event()
        self.running.set()

    def read(self) -> Frame | None:
        while not self.running.wait(0.1):
            if self.stop_event.is_set():
                return None
        if self.stop_event.is_set():
            return None
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name):  # driver, trigger, ... of the wrapped source
        return getattr(self.inner, name)


class ScanSplash(QWidget):
    """Start-up splash: what is being checked and the scan's progress."""

    def __init__(self, model_path) -> None:
        super().__init__()
        self.setWindowTitle("SecureGaze Edge: checking the model")
        layout = QVBoxLayout(self)
        self.title = QLabel(f"Checking {model_path} for a backdoor before gaze alarms go live")
        self.detail = QLabel("looking up the audit record...")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        for w in (self.title, self.detail, self.bar):
            layout.addWidget(w)
        self.resize(560, 130)

    def set_progress(self, stage: str, step: int, total: int) -> None:
        fraction = step / max(total, 1)
        self.bar.setValue(int(1000 * fraction))
        self.detail.setText(f"scanning (no audit record for this model): {stage} {step}/{total} "
                            f"({100 * fraction:.0f}%)")


class OverlayWindow(OverlayView):
    """The top-level overlay: the view plus the keys; ``on_key(name)`` is the controller's hook."""

    def __init__(self, on_key) -> None:
        super().__init__()
        self._on_key = on_key
        self.setWindowTitle("SecureGaze Edge")
        self.resize(960, 720)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        keys = {Qt.Key.Key_Q: "quit", Qt.Key.Key_Escape: "quit", Qt.Key.Key_Space: "pause",
                Qt.Key.Key_R: "record", Qt.Key.Key_T: "trigger"}
        name = keys.get(event.key())
        if name:
            self._on_key(name)
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self._on_key("closed")
        super().closeEvent(event)


class GuiSession:
    """One window session: integrity check (with splash when it scans), pipeline thread, display.

    ``make_pipeline(result)`` builds the Pipeline once the check is done (it may be blocked);
    ``check`` runs the integrity check given a progress callback (None: ``result`` is given);
    ``sink``: extra per-record sink on the pipeline thread (trial log); ``operator``: trial marks;
    ``schedule``: trial targets to show; ``record_dir``: where key r writes; ``stop``: set from
    outside (SIGTERM of a trial), it ends the session as the window's close button does.
    """

    def __init__(self, source: FrameSource, make_pipeline, check=None, result=None, sink=None, operator=None,
                 recorder=None, max_frames: int | None = None, screenshot: Path | None = None,
                 record_dir: Path | None = None, critical_after_s: float = 11.0, model_path=None,
                 stop: threading.Event | None = None) -> None:
        self.app = create_application()
        self.source = ControlledSource(source)
        self.make_pipeline, self.check, self.result = make_pipeline, check, result
        self.extra_sink, self.operator, self.recorder = sink, operator, recorder
        self.max_frames, self.screenshot = max_frames, screenshot
        self.record_dir = record_dir or Path("recordings")
        self.critical_after_s = critical_after_s
        self.model_path = model_path
        self.stop = stop
        self.latest = LatestRecord()
        self.window = OverlayWindow(self._key)
        self.splash: ScanSplash | None = None
        self.badge = IntegrityBadge.from_result(result) if result is not None else IntegrityBadge("unchecked", "checking")
        self.paused = False
        self.trigger_mark = False
        self.recording: SessionRecording | None = None
        self.summary = None
        self.error: BaseException | None = None
        self.displayed = 0
        self._progress = None
        self._progress_lock = threading.Lock()
        self._check_done = threading.Event()
        self._pipeline_done = threading.Event()
        self._pipeline_thread: threading.Thread | None = None
        self._last_state = None
        self._fps_times: list[float] = []
        self.timer = QTimer()
        rate = QGuiApplication.primaryScreen().refreshRate() if QGuiApplication.primaryScreen() else 0
        self.timer.setInterval(int(1000 / rate) if rate and rate > 1 else FALLBACK_INTERVAL_MS)
        self.timer.timeout.connect(self._tick)

    # -- threads -----------------------------------------------------------------------------------
    def _run_check(self) -> None:
        def progress(event) -> None:
            with self._progress_lock:
                self._progress = (event.stage, int(event.step), int(event.total))

        try:
            self.result = self.check(progress)
        except BaseException as exc:  # handed to the GUI thread, which stops and re-raises it
            self.error = exc
        finally:
            self._check_done.set()

    def _run_pipeline(self) -> None:
        from edge_app.pipeline import run_pipeline

        try:
            pipeline = self.make_pipeline(self.result)
            try:
                self.summary = run_pipeline(pipeline, self.source, self._sink, max_frames=self.max_frames)
            finally:
                pipeline.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self._pipeline_done.set()

    def _sink(self, rec) -> None:
        if self.extra_sink is not None:
            self.extra_sink(rec)
        recording = self.recording  # read once: key r on the GUI thread may set it to None meanwhile
        if recording is not None:
            recording.add(rec, self.operator.trigger_on if self.operator else self.trigger_mark)
        self.latest.put(rec)

    # -- GUI thread --------------------------------------------------------------------------------
    def _key(self, name: str) -> None:
        if name in ("quit", "closed"):
            self.source.stop_event.set()
            self.source.running.set()
            if name == "quit":
                self.window.close()
        elif name == "pause":
            self.paused = not self.paused
            (self.source.running.clear if self.paused else self.source.running.set)()
            self._refresh_last()
        elif name == "record":
            if self.recording is None:
                self.recording = SessionRecording(new_recording_folder(self.record_dir),
                                                  getattr(self.source, "fps", 30.0) or 30.0)
            else:
                recording, self.recording = self.recording, None
                recording.close()
            self._refresh_last()
        elif name == "trigger":
            if self.operator is not None:
                self.operator.toggle_trigger()
            else:
                self.trigger_mark = not self.trigger_mark
            self._refresh_last()

    def _app_state(self) -> dict:
        trigger = self.operator.trigger_on if self.operator is not None else self.trigger_mark
        state = {"paused": self.paused, "recording": self.recording is not None, "trigger_on": trigger}
        if self.recorder is not None and self.recorder.state.target_name is not None:
            target = next(t for t in self.recorder.schedule.protocol.targets if t.name == self.recorder.state.target_name)
            state["target_xy"] = target.screen_xy
            state["prompt"] = None if target.screen_xy is not None else target.prompt
        return state

    def _refresh_last(self) -> None:
        if self._last_state is not None:
            self._last_state = self._last_state.with_(**self._app_state())
            self.window.show_state(self._last_state)

    def _tick(self) -> None:
        if self.stop is not None and self.stop.is_set() and not self.source.stop_event.is_set():
            self._key("closed")  # the source ends, the pipeline finishes its frame, the loop below quits
        if self.splash is not None:
            with self._progress_lock:
                progress = self._progress
            if progress is not None:
                self.splash.set_progress(*progress)
                self.badge = IntegrityBadge.scanning(progress[1] / max(progress[2], 1), progress[0])
            if self._check_done.is_set():
                self.splash.close()
                self.splash = None
                self._start_pipeline()
            return
        # Paused: the picture freezes at the key press. Frames already read before it (capture
        # queue, the one being processed) still reach the log and the recording, and wait in the
        # mailbox, but are not shown until space again.
        rec = None if self.paused else self.latest.take()
        if rec is not None:
            now = time.perf_counter()
            self._fps_times = [t for t in self._fps_times if now - t < 1.0] + [now]
            self._last_state = state_from_record(rec, self.badge, self.critical_after_s, fps=len(self._fps_times),
                                                 **self._app_state())
            self.window.show_state(self._last_state)
            self.displayed += 1
        if self._pipeline_done.is_set() and (self.paused or self.latest.take() is None):
            self.timer.stop()
            self.app.quit()

    def _start_pipeline(self) -> None:
        if self.error is not None:
            self.app.quit()
            return
        self.badge = IntegrityBadge.from_result(self.result)
        self.window.show()
        self._pipeline_thread = threading.Thread(target=self._run_pipeline, name="pipeline", daemon=True)
        self._pipeline_thread.start()

    def run(self):
        """Show the window (after the splash, if scanning) until quit or the source ends; returns
        the pipeline's RunSummary (None when it never started). Re-raises a pipeline/check error."""
        if self.result is None:
            self.splash = ScanSplash(self.model_path)
            self.splash.show()
            threading.Thread(target=self._run_check, name="integrity", daemon=True).start()
        else:
            self._start_pipeline()
        self.timer.start()
        self.app.exec()
        # Closing the window ends the event loop before _tick stops the timer; a timer left running
        # would quit the next event loop of this QApplication (a second session in one process).
        self.timer.stop()
        self.source.stop_event.set()
        self.source.running.set()
        if self._pipeline_thread is not None:
            self._pipeline_thread.join()
        rec = self.latest.take()
        if rec is not None:  # the last record, so a screenshot shows the end state
            self._last_state = state_from_record(rec, self.badge, self.critical_after_s, **self._app_state())
            self.window.show_state(self._last_state)
        if self.screenshot is not None and self._last_state is not None:
            from securegaze.io import atomic_write

            self.screenshot.parent.mkdir(parents=True, exist_ok=True)
            image = self.window.grab()
            atomic_write(self.screenshot, lambda tmp: image.save(tmp, "PNG"))
        if self.recording is not None:
            self.recording.close()
        self.window.close()
        if self.splash is not None:
            self.splash.close()
        if self.error is not None:
            raise self.error
        return self.summary


def run_trial_gui(pipeline, source, recorder, result, config, max_frames=None, screenshot=None, stop=None):
    """``edge-app trial --gui``: the overlay over an already checked pipeline, the trial log as the
    extra sink, and key t marking the trigger (each toggle a new phase); ``stop`` (an Event, set on
    SIGTERM) ends it like closing the window. Returns (0, summary)."""
    session = GuiSession(source, lambda _result: pipeline, result=result, sink=recorder, operator=recorder.operator,
                         recorder=recorder, max_frames=max_frames, screenshot=screenshot,
                         critical_after_s=config.attention.critical_after_s, stop=stop)
    summary = session.run()
    return 0, summary


def arrow_direction(state_gaze) -> np.ndarray:
    """(2,) unit image direction of the gaze arrow for a camera-frame gaze (radians); for tests."""
    from edge_app.gui.overlay import gaze_arrow_px

    d = gaze_arrow_px(np.zeros(2), state_gaze, 1.0)
    return d / np.linalg.norm(d)


def run_gui(config, source, model_path, zone_map, intrinsics=None, out: str | None = None,
            max_frames: int | None = None, screenshot: Path | None = None) -> int:
    """``edge-app run --gui``: returns the exit code (0 done, 10 the model was blocked: the window
    showed the face video and the BLOCKED badge, no gaze, and head-pose-only alerts in degraded mode)."""
    from rich.console import Console

    from edge_app.gui.qt_env import NoDisplayError, display_problem, prepare_qt_environment
    from edge_app.integrity import EXIT_BLOCKED
    from edge_app.jsonlines import JsonLinesWriter
    from edge_app.pipeline import Pipeline
    from edge_app.startup import check_and_open_engine

    prepare_qt_environment()
    problem = display_problem()
    if problem:
        raise NoDisplayError(problem)
    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    engines: dict = {}

    def check(progress):
        result, engine = check_and_open_engine(config, model_path, progress)
        engines["engine"] = engine
        return result

    def make_pipeline(result):
        return Pipeline(config, engines.get("engine"), zone_map, intrinsics, result)

    # A live camera: a full log queue drops (and counts) lines rather than delay alerts (JsonLinesWriter).
    writer = JsonLinesWriter(out, drop_when_full=source.live) if out is not None else None
    session = GuiSession(source, make_pipeline, check=check,
                         sink=(lambda rec: writer.write(rec.to_json())) if writer is not None else None,
                         max_frames=max_frames, screenshot=screenshot,
                         critical_after_s=config.attention.critical_after_s, model_path=model_path)
    err.print(f"gui: Qt platform {session.app.platformName()}")
    try:
        summary = session.run()
    finally:
        if writer is not None:
            writer.close()
    result = session.result
    if result is not None:
        err.print(f"integrity: {result.reason} [{result.source}]")
    if summary is not None:
        err.print(f"frames {summary.frames}, displayed {session.displayed}, not displayed (newer frame waiting) "
                  f"{session.latest.dropped}, dropped by capture {summary.dropped}, states {summary.states}")
    if writer is not None and writer.dropped:
        err.print(f"warning: {writer.dropped} frames' JSON lines were not written to {out} (the disk could not "
                  "keep up); gaps show in the frame numbers")
    return EXIT_BLOCKED if result is not None and result.blocked else 0
