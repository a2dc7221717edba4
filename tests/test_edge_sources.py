"""Sources, the capture thread and the config file: bad input gives one clear line."""

import time

import cv2
import numpy as np
import pytest
from conftest import write_grey_video

from edge_app.config import load_config
from edge_app.sources import (
    CaptureThread,
    FrameSource,
    ImageFolderSource,
    MemorySource,
    VideoFileSource,
    open_source,
)
from securegaze.errors import ConfigError, InputFileError


def test_no_camera_at_that_index():
    with pytest.raises(InputFileError, match="camera:97: no camera at index 97"):
        open_source("camera:97")
    with pytest.raises(ConfigError, match="camera index must be"):
        open_source("camera:front")


def test_unreadable_and_missing_video(tmp_path):
    junk = tmp_path / "clip.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not really a video")
    with pytest.raises(InputFileError, match="clip.mp4: not a readable video"):
        VideoFileSource(junk)
    with pytest.raises(InputFileError, match="no such file or folder"):
        open_source(str(tmp_path / "missing.mp4"))


def test_video_file_frames_and_timestamps(tmp_path):
    path = tmp_path / "tiny.avi"
    write_grey_video(path, [40 * i for i in range(5)])
    src = VideoFileSource(path)
    frames = [f for f in iter(src.read, None)]
    assert len(frames) == 5 and frames[0].image.shape == (48, 64, 3)
    assert [round(f.timestamp_s, 3) for f in frames] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_image_folder_source(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((20, 30, 3), i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageFolderSource) and len(src.files) == 3
    assert [f.index for f in iter(src.read, None)] == [0, 1, 2]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError, match="no images"):
        ImageFolderSource(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="a.png: not a readable image"):
        ImageFolderSource(broken, check=True)
    unchecked = ImageFolderSource(broken)  # a file gone bad after the check: skipped when its turn comes
    assert unchecked.read() is None and unchecked.unreadable == [broken / "a.png"]


class _Camera(FrameSource):
    """A live source that yields ``n`` frames as fast as it can."""

    live = True

    def __init__(self, n):
        self.inner = MemorySource([np.zeros((4, 4, 3), np.uint8)], duration_s=n / 30.0)

    def read(self):
        return self.inner.read()


def _drain(capture):
    got = []
    while True:
        frame = capture.get(timeout=5.0)
        if frame is None and capture.finished:
            return got
        if frame is not None:
            got.append(frame.index)


def test_capture_thread_drops_stale_frames_of_a_live_source():
    capture = CaptureThread(_Camera(50), drop_stale=True).start()
    # Let the camera run ahead before reading: a slow consumer.
    while not capture.finished and capture.captured < 50:
        time.sleep(0.01)
    got = _drain(capture)
    capture.stop()
    assert got == [49]  # only the newest frame survives
    assert capture.dropped == 49


def test_capture_thread_keeps_every_frame_of_a_recording():
    capture = CaptureThread(MemorySource([np.zeros((4, 4, 3), np.uint8)], duration_s=50 / 30.0), drop_stale=False,
                            queue_size=2).start()
    got = _drain(capture)
    capture.stop()
    assert got == list(range(50)) and capture.dropped == 0


class _Vanishing(FrameSource):
    """A source whose file is gone by the time it is read."""

    def read(self):
        raise InputFileError("clip.mp4: no longer readable")


def test_capture_thread_hands_source_errors_to_the_reader():
    capture = CaptureThread(_Vanishing(), drop_stale=False).start()
    with pytest.raises(InputFileError, match="clip.mp4"):
        _drain(capture)
    capture.stop()


@pytest.mark.parametrize("text,match", [
    ("attention:\n  warnin_after_s: 3\n", r"attention\.warnin_after_s: unknown setting"),
    ("colour: red\n", "colour: unknown setting"),
    ("attention:\n  warning_after_s: -2\n", r"attention\.warning_after_s: Input should be greater than 0"),
    ("integrity:\n  policy: shrug\n", r"integrity\.policy"),
    ("face:\n  min_detection_confidence: 1.5\n", r"face\.min_detection_confidence: Input should be less than or equal"),
    ("attention:\n  warning_after_s: 6\n", "warning_after_s < loud_after_s"),
    ("- just\n- a list\n", "expected a mapping"),
    ("attention: [unclosed\n", "not a readable YAML config"),
    # driver selection's settings (edge_app/driver_select.py)
    ("cabin:\n  drive_side: middle\n", "cabin.drive_side: Input should be 'left' or 'right'"),
    ("face:\n  max_faces: 0\n", r"face\.max_faces"),
    ("driver_selection:\n  min_presence: 1.5\n", r"driver_selection\.min_presence"),
    ("driver_selection:\n  window: 2\n", r"driver_selection\.window: unknown setting"),
    ("camera:\n  mirrored: sometimes\n", r"camera\.mirrored"),
    ("synthetic:\n  passenger: left\n", r"synthetic\.passenger"),
    ("synthetic:\n  conditions: [beard]\n", "unknown cabin condition 'beard'"),
    # eye availability (edge_app/eye_visibility.py); its thresholds moved there from anomaly:
    ("eyes:\n  enter_share: 0.2\n  exit_share: 0.4\n", "exit_share < enter_share"),
    ("eyes:\n  window_s: 0\n", r"eyes\.window_s"),
    ("eyes:\n  min_face_grey: 300\n", r"eyes\.min_face_grey"),
    ("anomaly:\n  min_iris_contrast: 0.1\n", r"anomaly\.min_iris_contrast: unknown setting"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, match):
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    with pytest.raises((ConfigError, InputFileError), match=match) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_config_paths_are_relative_to_the_file_and_defaults_fill_in(tmp_path):
    path = tmp_path / "sub" / "edge.yaml"
    path.parent.mkdir()
    path.write_text("zones: zones.yaml\nintegrity:\n  audit_db: audit.sqlite3\n  policy: warn\n")
    cfg = load_config(path)
    assert cfg.zones == path.parent / "zones.yaml" and cfg.integrity.audit_db == path.parent / "audit.sqlite3"
    assert cfg.integrity.policy == "warn" and cfg.attention.warning_after_s == 3.0


def test_the_documented_default_config_file_is_the_default():
    from pathlib import Path

    from edge_app.config import EdgeConfig

    cfg = load_config(Path(__file__).resolve().parent.parent / "calibration" / "edge_default.yaml")
    assert cfg.model_dump(exclude={"zones"}) == EdgeConfig().model_dump(exclude={"zones"})
