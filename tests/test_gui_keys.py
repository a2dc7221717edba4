"""The overlay window's keys, as a person uses them: real key events on the real window, offscreen,
with the pipeline thread running the tiny benign model on recorded frames of the synthetic driver.

space pauses the picture (and the source) and resumes it; t marks the trigger in the overlay text,
the recording and the trial log; r starts a recording and a second r stops it with a readable
video and one JSON line per video frame; q and Esc close the window and the app exits 0.

Each test scripts its keys with :class:`KeyScript`: every step waits for a condition on what the
app has done (frames displayed, frames processed), never for a time. The only clock is a guard
that closes the window if a step never comes, so a broken key fails the test instead of hanging it.
"""

import json
import os
import time

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from edge_app.sources import MemorySource  # noqa: E402

GUARD_S = 120.0  # a hang guard only: every step below normally comes within a second


@pytest.fixture(scope="module")
def qapp():
    if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        pytest.skip("these tests drive the window offscreen (QT_QPA_PLATFORM=offscreen)")
    from edge_app.gui.qt_env import create_application

    return create_application()


@pytest.fixture(scope="module")
def checked_model(tiny_gaze_bundles, tmp_path_factory):
    """The tiny benign bundle, scanned once by the real startup check (a quick scan, about 2 s)
    into an audit database, so the app started below finds its record and does not scan again."""
    from edge_app.config import load_config
    from edge_app.integrity import IntegrityChecker

    root = tmp_path_factory.mktemp("gui-keys")
    config_path = root / "edge.yaml"
    config_path.write_text(f"integrity:\n  audit_db: {root / 'audit.sqlite3'}\n  clean_samples: 64\n"
                           "  scan_settings: {steps: 60, eval_samples: 64, sensitivity_samples: 64}\n"
                           "synthetic:\n  fps: 10\n")
    config = load_config(config_path)
    model = tiny_gaze_bundles["benign"]
    result = IntegrityChecker(config.integrity).check(model)
    assert not result.blocked
    return dict(model=model, config=config, config_path=config_path, result=result)


@pytest.fixture(scope="module")
def driver_images():
    """Eight 640x480 frames of the synthetic driver looking around (BGR)."""
    from edge_app.synthetic_driver import SyntheticDriver
    from edge_app.zones import load_zone_map

    driver = SyntheticDriver(load_zone_map(None).targets_deg(), fps=10.0)
    return [driver.render_frame(k)[0] for k in range(0, 80, 10)]


class CountingSource(MemorySource):
    """A long recorded source (the driver frames looped, 30 fps) that counts its reads."""

    def __init__(self, images, frames: int = 5000) -> None:
        super().__init__(images, fps=30.0, duration_s=frames / 30.0)
        self.reads = 0

    def read(self):
        frame = super().read()
        self.reads += frame is not None
        return frame


class KeyScript:
    """Runs ``steps`` on the GUI thread while the app's event loop runs: each step is
    ``(until, action)``: once ``until()`` is true, ``action()`` runs and the next step waits.
    ``window()`` gives the overlay window (None until it is shown). ``failure``: what the guard
    saw when a step never came (the window is then closed so the app ends)."""

    def __init__(self, steps, window, guard_s: float = GUARD_S) -> None:
        from PyQt6.QtCore import QTimer

        self.steps, self.window = list(steps), window
        self.done = 0
        self.failure: str | None = None
        self._deadline = time.monotonic() + guard_s
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        while self.steps and self.steps[0][0]():
            _, action = self.steps.pop(0)
            action()
            self.done += 1
        if not self.steps:
            self.timer.stop()
        elif time.monotonic() > self._deadline:
            self.failure = f"step {self.done} never came"
            self.timer.stop()
            w = self.window()
            if w is not None:
                w.close()


def press(window, key) -> None:
    """A real key press and release on the window, through Qt's event dispatch."""
    from PyQt6.QtTest import QTest

    QTest.keyClick(window, key)


def make_session(checked_model, source, **kw):
    from edge_app.engines import create_engine
    from edge_app.gui.app import GuiSession
    from edge_app.pipeline import Pipeline
    from edge_app.zones import load_zone_map

    config = checked_model["config"]
    zone_map = load_zone_map(config.zones)

    def make_pipeline(result):
        e = config.engine
        return Pipeline(config, create_engine(e.kind, checked_model["model"], e.providers, 1), zone_map, None,
                        result)

    return GuiSession(source, make_pipeline, result=checked_model["result"],
                      critical_after_s=config.attention.critical_after_s, **kw)


def status_text(window) -> str:
    from edge_app.gui.overlay import status_lines

    return "\n".join(status_lines(window.state))


def test_space_pauses_the_picture_and_the_source_and_a_second_space_resumes(qapp, checked_model, driver_images):
    from PyQt6.QtCore import Qt

    source = CountingSource(driver_images)
    processed = []
    session = make_session(checked_model, source, sink=lambda rec: processed.append(rec.frame.index))
    seen: dict = {}
    w = session.window

    def pause() -> None:
        press(w, Qt.Key.Key_Space)
        seen.update(displayed=session.displayed, reads=source.reads, text=status_text(w))

    def quiet() -> bool:
        """Every frame the source gave has been processed, and that stayed so for 20 polls."""
        seen["quiet"] = seen.get("quiet", 0) + 1 if len(processed) == source.reads else 0
        return seen["quiet"] >= 20

    def check_paused() -> None:
        seen.update(displayed_paused=session.displayed, reads_paused=source.reads)
        press(w, Qt.Key.Key_Space)
        seen["resumed_text"] = status_text(w)

    script = KeyScript([
        (lambda: session.displayed >= 5, pause),
        (quiet, check_paused),
        (lambda: session.displayed >= seen["displayed_paused"] + 5, lambda: press(w, Qt.Key.Key_Q)),
    ], lambda: w)
    summary = session.run()
    assert script.failure is None and not script.steps, script.failure or f"the app ended at step {script.done}"
    assert "PAUSED" in seen["text"] and "PAUSED" not in seen["resumed_text"]
    assert seen["displayed_paused"] == seen["displayed"], "frames were displayed while paused"
    assert seen["reads_paused"] - seen["reads"] <= 1, "the source went on being read while paused"
    assert summary.frames == len(processed) and summary.frames > seen["displayed_paused"]


def test_r_records_video_and_json_lines_and_t_marks_the_trigger(qapp, checked_model, driver_images, tmp_path):
    import cv2
    from PyQt6.QtCore import Qt

    source = CountingSource(driver_images)
    session = make_session(checked_model, source, record_dir=tmp_path / "recordings")
    w = session.window
    seen: dict = {"texts": []}

    def key(k, note=None):
        def act() -> None:
            press(w, k)
            seen["at"] = session.displayed
            seen["texts"].append(status_text(w))
            if note:
                seen[note] = session.recording
        return act

    def after(n):
        return lambda: session.displayed >= seen["at"] + n

    script = KeyScript([
        (lambda: session.displayed >= 3, key(Qt.Key.Key_R, "first")),   # texts[0]: REC, trigger off
        (after(8), key(Qt.Key.Key_T)),                                  # texts[1]: TRIGGER ON
        (after(8), key(Qt.Key.Key_T)),                                  # texts[2]: trigger off
        (after(8), key(Qt.Key.Key_R)),                                  # texts[3]: not recording
        (after(2), key(Qt.Key.Key_R, "second")),                        # a second recording at once
        (after(3), key(Qt.Key.Key_R)),
        (after(1), key(Qt.Key.Key_Q)),
    ], lambda: w)
    session.run()
    assert script.failure is None and not script.steps, script.failure or f"the app ended at step {script.done}"
    texts = seen["texts"]
    assert "REC" in texts[0] and "trigger off" in texts[0]
    assert "TRIGGER ON" in texts[1] and "REC" in texts[1]
    assert "trigger off" in texts[2]
    assert "REC" not in texts[3]
    folders = sorted(p for p in (tmp_path / "recordings").iterdir())
    assert [seen["first"].folder, seen["second"].folder] == folders, "a second recording replaced the first"
    for folder, recording in ((folders[0], seen["first"]), (folders[1], seen["second"])):
        lines = [json.loads(x) for x in (folder / "frames.jsonl").read_text().splitlines()]
        cap = cv2.VideoCapture(str(folder / "video.mp4"))
        video = []
        while True:
            ok, image = cap.read()
            if not ok:
                break
            video.append(image)
        cap.release()
        assert len(video) == len(lines) > 0, f"{folder.name}: {len(video)} video frames, {len(lines)} JSON lines"
        indices = [x["frame"] for x in lines]
        # every frame processed while recording, in order (the recording may drop frames when the disk lags)
        assert all(b > a for a, b in zip(indices, indices[1:], strict=False))
        assert indices[-1] - indices[0] + 1 == len(indices) + recording.dropped
        # the video holds the source's frames (mp4 is lossy: close, not equal)
        first = driver_images[indices[0] % len(driver_images)]
        assert np.abs(video[0].astype(int) - first.astype(int)).mean() < 12
    marks = [json.loads(x)["trigger_marked"] for x in (folders[0] / "frames.jsonl").read_text().splitlines()]
    runs = [m for k, m in enumerate(marks) if k == 0 or m != marks[k - 1]]
    assert runs == [False, True, False], f"trigger marks in the recording: {runs}"
    # 8 frames were displayed between the two T presses; the first of them may have left the pipeline
    # (and been marked) just before the first press, and the recording may have dropped some when the
    # disk lagged: at least 7 marked frames were processed, all kept or counted as dropped
    assert sum(marks) + seen["first"].dropped >= 7, f"{sum(marks)} marked, {seen['first'].dropped} dropped"


@pytest.mark.parametrize("key_name", ["Key_Q", "Key_Escape"])
def test_q_and_esc_close_the_window_and_the_app_exits_0(qapp, checked_model, key_name, tmp_path, capsys):
    """``edge-app run --gui`` in process on the synthetic drive: the key ends it long before the
    drive does, with the normal exit code and the run's summary line."""
    from PyQt6.QtCore import Qt
    from PyQt6.QtWidgets import QApplication

    from edge_app.cli import main
    from edge_app.gui.app import OverlayWindow

    def window():
        shown = [w for w in QApplication.topLevelWidgets() if isinstance(w, OverlayWindow) and w.isVisible()]
        return shown[0] if shown else None

    state: dict = {}

    def painted() -> bool:
        w = window()
        return w is not None and w.state.image is not None

    def quit_key() -> None:
        state["window"] = window()
        press(state["window"], getattr(Qt.Key, key_name))

    script = KeyScript([(painted, quit_key)], window)
    out = tmp_path / "frames.jsonl"
    code = main(["run", "--gui", "--source", "synthetic:short", "--model", str(checked_model["model"]),
                 "--config", str(checked_model["config_path"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert script.failure is None and not script.steps, script.failure or f"the app ended at step {script.done}"
    assert code == 0, err
    assert not state["window"].isVisible()
    assert "[database]" in err  # the record of the fixture's scan: no scan here
    frames = len(out.read_text().splitlines())
    assert 0 < frames < 115, f"{frames} frames: the key did not stop the 115-frame drive"
    assert f"frames {frames}," in err


def test_trial_gui_t_marks_trigger_phases_in_the_trial_log(qapp, checked_model, tmp_path, capsys):
    """``edge-app trial --gui`` offscreen on the synthetic participant: each t starts a new phase,
    and the log's rows say trigger on exactly between the two presses."""
    from PyQt6.QtCore import Qt
    from PyQt6.QtWidgets import QApplication

    from edge_app.cli import main
    from edge_app.gui.app import OverlayWindow
    from edge_app.trial.log import read_frames

    def window():
        shown = [w for w in QApplication.topLevelWidgets() if isinstance(w, OverlayWindow) and w.isVisible()]
        return shown[0] if shown else None

    seen: dict = {"texts": [], "shown": 0, "last": None}

    def shown() -> int:
        """Records shown so far: each repaint with a new record replaces the window's state."""
        w = window()
        if w is not None and w.state.image is not None and w.state is not seen["last"]:
            seen["last"] = w.state
            seen["shown"] += 1
        return seen["shown"]

    def key(k):
        def act() -> None:
            w = window()
            press(w, k)
            seen["last"] = w.state  # the key's own repaint is not a new record
            seen["at"] = shown()
            seen["texts"].append(status_text(w))
        return act

    def after(n):
        return lambda: shown() >= seen.get("at", 0) + n

    # 7 records shown between the presses: the first one shown after a press can have been logged
    # (its phase read) just before it, while it waited in the window's mailbox, so at least 6 rows
    # carry the trigger.
    script = KeyScript([(after(4), key(Qt.Key.Key_T)), (after(7), key(Qt.Key.Key_T)), (after(4), key(Qt.Key.Key_Q))],
                       window)
    db = tmp_path / "trial.db"
    code = main(["trial", "--gui", "--db", str(db), "--participant", "P01", "--source", "synthetic", "--model",
                 str(checked_model["model"]), "--config", str(checked_model["config_path"]), "--dwell-s", "2",
                 "--fps", "5"])
    err = capsys.readouterr().err
    assert script.failure is None and not script.steps, script.failure or f"the app ended at step {script.done}"
    assert code == 0, err
    assert "TRIGGER ON" in seen["texts"][0] and "trigger off" in seen["texts"][1]
    rows = read_frames(db, 1)
    phases = [(r["phase"], r["trigger_on"]) for k, r in enumerate(rows)
              if k == 0 or r["phase"] != rows[k - 1]["phase"]]
    assert phases == [("clean-1", 0), ("trigger-1", 1), ("clean-2", 0)], phases
    assert sum(r["trigger_on"] for r in rows) >= 6
