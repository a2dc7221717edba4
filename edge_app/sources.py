"""Frame sources and the capture thread.

A source yields :class:`Frame` s: (H, W, 3) uint8 **BGR** images (OpenCV's order) with a
timestamp in seconds. Sources:

* ``camera:N``: a camera through OpenCV (V4L2 on Linux); live, timestamps from the clock;
* ``PATH.mp4`` (any video OpenCV reads): timestamps from the frame index and the container's fps;
* ``DIR``: the images in a folder in name order (not its subfolders, which
  :attr:`ImageFolderSource.note` counts; hidden files skipped), at ``fps``; ``PHOTO.jpg`` (any image
  suffix of :data:`IMAGE_SUFFIXES`): that one image as a one-frame source. Images are read through
  bytes (:mod:`edge_app.image_files`: any file name). Their frames are ``still``: the face stage
  detects afresh on each (a folder may hold unrelated photos, and tracking the previous image's face
  into the next one loses every face after the first);
* ``synthetic[:short|:full]``: the scripted synthetic driver (:mod:`edge_app.synthetic_driver`),
  with ground truth per frame;
* ``camera:synthetic``: a simulated camera filming the synthetic driver: live, paced on the clock
  at ``synthetic.fps``, endless (the drive loops); for soak tests of the live path without a camera.

:class:`CaptureThread` reads a source on its own thread. For a live source it keeps only the
newest frame (``drop_stale``): when processing falls behind, stale frames are dropped and
counted instead of queueing up latency (docs/architecture.md section 2: drop frames, not time). Recorded
sources are not real time, so by default every frame is processed (a short blocking queue).
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_app.image_files import (
    IMAGE_SUFFIXES,
    folder_images,
    holds_images,
    listing,
    looks_like_image,
    names_text,
    opencv_path,
    read_image,
    subfolder_note,
    tree_images,
)
from edge_app.latency import LatencyHistogram
from securegaze.data.face_share import enlarged
from securegaze.errors import ConfigError, InputFileError
from securegaze.io import shown


@dataclass
class Frame:
    """``image`` (H, W, 3) uint8 BGR; ``timestamp_s`` source time, s; ``index`` from 0;
    ``captured_at`` time.perf_counter() when the frame was read (for latency); ``truth``: ground
    truth of a synthetic frame (None otherwise); ``read_ms``: time ``source.read`` took for this
    frame, ms (set by :class:`CaptureThread`; the capture stage's latency); ``still``: a still
    image unrelated to the frame before it (image folders, single images): the face stage
    detects on it afresh instead of tracking the previous frame's face."""

    image: np.ndarray
    timestamp_s: float
    index: int
    captured_at: float
    truth: Any = None
    read_ms: float | None = None
    still: bool = False


class FrameSource(ABC):
    """``read()`` -> the next :class:`Frame`, or None at the end. ``live``: a real-time source."""

    live: bool = False
    description: str = "source"

    @abstractmethod
    def read(self) -> Frame | None: ...

    def close(self) -> None:  # noqa: B027 - optional hook: sources without a device need nothing
        pass


class CameraSource(FrameSource):
    """Camera ``index`` via OpenCV; ``width`` x ``height`` requested (the camera may pick another)."""

    live = True

    def __init__(self, index: int, width: int = 640, height: int = 480) -> None:
        self.description = f"camera:{index}"
        # CAP_ANY tries V4L2 first on Linux; a missing /dev/videoN gives an unopened capture.
        self._cap = cv2.VideoCapture(int(index))
        if not self._cap.isOpened():
            self._cap.release()
            raise InputFileError(f"camera:{index}: no camera at index {index} (OpenCV could not open it; "
                                 f"check /dev/video{index} exists and is not in use)")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._index = 0
        self._t0 = time.perf_counter()

    def read(self) -> Frame | None:
        ok, image = self._cap.read()
        now = time.perf_counter()
        if not ok or image is None:
            return None
        frame = Frame(image, now - self._t0, self._index, now)
        self._index += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class VideoFileSource(FrameSource):
    """A video file; timestamps are frame index / the container's frame rate (30 if it gives none).
    A file name that is not valid UTF-8 is refused with one line: OpenCV cannot open it by that name."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.description = shown(self.path)
        if not self.path.is_file():
            raise InputFileError(f"{self.description}: video file not found")
        name = opencv_path(self.path)
        if name is None:
            raise InputFileError(f"{self.description}: OpenCV cannot open a file whose name is not valid "
                                 "UTF-8; rename it (or link it under a plain name) and pass that")
        self._cap = cv2.VideoCapture(name)
        first = None
        if self._cap.isOpened():
            ok, first = self._cap.read()
            first = first if ok else None
        if first is None:
            self._cap.release()
            raise InputFileError(f"{self.description}: not a readable video (OpenCV cannot decode a frame "
                                 "from it)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else 30.0
        self._pending: np.ndarray | None = first
        self._index = 0

    def read(self) -> Frame | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._cap.read()
            if not ok or image is None:
                return None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        frame = Frame(image, self._index / self.fps, self._index, time.perf_counter())
        self._index += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource(FrameSource):
    """The images of a folder (name order), or one image file, as frames at ``fps``; every frame
    is ``still`` (detected afresh, see :class:`Frame`); a small one is enlarged (:func:`securegaze.data.face_share.enlarged`).

    Only the folder's own files are read (a folder is one recording, its frames in name order), and
    hidden ones (``.DS_Store``, macOS ``._name.jpg`` resource forks) are skipped; :attr:`note` counts
    the images in subfolders, which are not read. With ``subfolders`` (``edge-app crops``: photos, not
    a recording) the subfolders are read too, at any depth, hidden ones skipped, ordered by the path
    relative to the folder, as ``securegaze scan --clean`` reads a folder. Every file is read through
    bytes (:func:`edge_app.image_files.read_image`: any file name). With ``check`` every file's header
    must be one OpenCV decodes, so that a stray non-image stops the run with one line before it
    starts rather than after the frames before it (:func:`open_source` checks). A file whose header
    passes but whose image does not decode (a photo cut short) is skipped when its turn comes and
    listed in :attr:`unreadable`.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, check: bool = False,
                 subfolders: bool = False) -> None:
        self.path = Path(path)
        self.description = shown(self.path)
        #: The folder the files' names are given relative to (an image file's own folder).
        self.root = self.path if self.path.is_dir() else self.path.parent
        #: One line on the images in subfolders that are not read (None: there are none, or they are read).
        self.note: str | None = None
        suffixes = ", ".join(IMAGE_SUFFIXES)
        if self.path.is_file():
            if self.path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputFileError(f"{self.description}: not an image ({suffixes})")
            self.files = [self.path]
        elif subfolders:
            self.files = tree_images(self.path)
        else:
            self.files = folder_images(self.path)
            self.note = subfolder_note(self.path) if self.files else None
        if not self.files:
            held = [] if subfolders else [shown(d.name) for d in listing(self.path)
                                          if d.is_dir() and not d.name.startswith(".") and holds_images(d)]
            sub = (f"; subfolders are not read, and {names_text(held)} hold images: pass one of them"
                   if held else "")
            where = " or its subfolders" if subfolders else ""
            raise InputFileError(f"{self.description}: no images ({suffixes}) in this folder{where}{sub}")
        if check:
            bad = [p for p in self.files if not p.is_file() or not looks_like_image(p)]
            if bad:
                more = f" (and {len(bad) - 1} more such files)" if len(bad) > 1 else ""
                where = f"; remove it from {self.description}" if self.path.is_dir() else ""
                raise InputFileError(f"{shown(bad[0])}: not a readable image (OpenCV recognises no image "
                                     f"format in it, or it cannot be opened){more}{where}")
        self.fps = float(fps)
        self._index = 0
        #: Files that did not decode when their turn came: skipped like a dropped frame (the frame
        #: numbers and times keep the file's place, so a gap shows), and named in the run summary.
        self.unreadable: list[Path] = []

    def name(self, path: Path) -> str:
        """A file's name to print: its path relative to :attr:`root`, odd bytes escaped."""
        return shown(path.relative_to(self.root))

    def read(self) -> Frame | None:
        image = None
        while image is None:
            if self._index >= len(self.files):
                return None
            path = self.files[self._index]
            image = read_image(path)
            if image is None:  # a file that went bad after the check, or one truncated past its header
                self.unreadable.append(path)
                self._index += 1
        frame = Frame(enlarged(image), self._index / self.fps, self._index, time.perf_counter(), still=True)
        self._index += 1
        return frame


class SyntheticSource(FrameSource):
    """The synthetic driver's frames; ``truth`` is a :class:`~edge_app.synthetic_driver.DriverFrameTruth`."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.description = f"synthetic driver ({driver.duration_s:.1f} s at {driver.fps:g} fps)"
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= self.driver.frame_count:
            return None
        image, t, truth = self.driver.render_frame(self._index)
        frame = Frame(image, t, self._index, time.perf_counter(), truth)
        self._index += 1
        return frame


class SyntheticCameraSource(FrameSource):
    """A simulated camera filming the synthetic driver (``camera:synthetic``): live, at most ``fps``
    frames a second on the clock (never in a burst), endless; Ctrl-C or ``--max-frames`` stop it.

    Rendering costs far more than a camera read (tens of ms a frame), so ``frames`` poses spread
    evenly over the drive are rendered once at start; each read shows the pose the drive has at that
    moment of the clock (the drive loops). Frames carry no ground truth: it is a camera, not the
    checked synthetic drive."""

    live = True

    def __init__(self, driver, fps: float = 30.0, frames: int = 48) -> None:
        if not 1 <= fps <= 1000 or frames < 1:
            raise ConfigError(f"camera:synthetic: fps {fps} outside 1..1000 or no frames ({frames})")
        self.duration_s = driver.duration_s
        picks = np.linspace(0, driver.frame_count - 1, frames).round().astype(int)
        self.images = [driver.render_frame(int(i))[0] for i in picks]
        self.fps = float(fps)
        self.description = (f"camera:synthetic (synthetic driver, {self.duration_s:.1f}-s drive looped, "
                            f"{frames} poses, {self.fps:g} fps)")
        self._t0: float | None = None
        self._due = 0.0
        self._index = 0

    def read(self) -> Frame | None:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = self._due = now
        elif now < self._due:
            time.sleep(self._due - now)
            now = time.perf_counter()
        self._due = max(self._due, now) + 1.0 / self.fps  # a late read does not make the next one early
        t = now - self._t0
        pose = int((t % self.duration_s) / self.duration_s * len(self.images))
        frame = Frame(self.images[min(pose, len(self.images) - 1)], t, self._index, now)
        self._index += 1
        return frame


class MemorySource(FrameSource):
    """Frames held in memory, replayed (looped) for ``duration_s`` of source time at ``fps``; for
    benchmarks, where the source itself must cost nothing."""

    def __init__(self, images: list[np.ndarray], fps: float = 30.0, duration_s: float | None = None,
                 live: bool = False) -> None:
        if not images:
            raise ConfigError("MemorySource needs at least one image")
        self.images, self.fps, self.live = images, float(fps), live
        self.count = len(images) if duration_s is None else int(duration_s * fps)
        self.description = f"{len(images)} frames in memory"
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= self.count:
            return None
        image = self.images[self._index % len(self.images)]
        frame = Frame(image, self._index / self.fps, self._index, time.perf_counter())
        self._index += 1
        return frame


def open_source(spec: str, config=None, subfolders: bool = False) -> FrameSource:
    """A source from its command-line spelling (see the module docstring); ``config``: EdgeConfig;
    ``subfolders``: an image folder's subfolders are read too (:class:`ImageFolderSource`)."""
    from edge_app.config import EdgeConfig

    cfg = config or EdgeConfig()
    if spec.startswith("camera:"):
        text = spec.split(":", 1)[1]
        if text == "synthetic":
            return SyntheticCameraSource(_synthetic_driver(spec, cfg, cfg.synthetic.script), cfg.synthetic.fps)
        if not text.isdigit():
            raise ConfigError(f"--source {spec}: camera index must be a non-negative integer, e.g. camera:0 "
                              "(or camera:synthetic)")
        return CameraSource(int(text), cfg.camera.width, cfg.camera.height)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        name = spec.split(":", 1)[1] if ":" in spec else cfg.synthetic.script
        return SyntheticSource(_synthetic_driver(spec, cfg, name))
    path = Path(spec)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return ImageFolderSource(path, cfg.synthetic.fps, check=True, subfolders=subfolders)
    if not path.exists():
        raise InputFileError(f"--source {shown(spec)}: no such file or folder; expected camera:N, a video "
                             "file, an image folder or synthetic")
    return VideoFileSource(path)


def _synthetic_driver(spec: str, cfg, name: str):
    from edge_app.synthetic_driver import SCRIPTS, SyntheticDriver
    from edge_app.zones import load_zone_map

    if name not in SCRIPTS:
        raise ConfigError(f"--source {spec}: unknown synthetic script {name!r}; expected one of "
                          f"{', '.join(sorted(SCRIPTS))}")
    zones = load_zone_map(cfg.zones)
    s = cfg.synthetic
    passenger_side = None
    if s.passenger:  # on the image side opposite the driver's, as the cabin settings place them
        from edge_app.driver_select import driver_image_side

        passenger_side = "left" if driver_image_side(cfg.cabin.drive_side, cfg.camera.mirrored) == "right" else "right"
    return SyntheticDriver(zones.targets_deg(), SCRIPTS[name], s.width, s.height, s.fps, s.seed, s.distance_mm,
                           personal_offset_deg=s.personal_offset_deg, head_follow=s.head_follow,
                           passenger_side=passenger_side, conditions=s.conditions)


class CaptureThread:
    """Reads ``source`` on a background thread.

    ``drop_stale``: keep only the newest frame (for live sources); otherwise frames wait in a
    queue of ``queue_size`` and the reader blocks (nothing is lost). ``get(timeout)`` returns the
    next frame or None once the source is exhausted. ``dropped``: frames overwritten unread;
    ``read_stats``: the time spent in ``source.read`` of every frame read, dropped ones included
    (a :class:`~edge_app.latency.LatencyHistogram`, ms: constant memory however long the run);
    each frame also carries its own ``read_ms``.
    """

    def __init__(self, source: FrameSource, drop_stale: bool, queue_size: int = 2) -> None:
        self.source, self.drop_stale = source, drop_stale
        self.queue_size = max(1, int(queue_size))
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._done = False
        self._stop = False
        self.error: BaseException | None = None
        self.dropped = 0
        self.captured = 0
        self.read_stats = LatencyHistogram()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop:
                t0 = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    break
                frame.read_ms = (time.perf_counter() - t0) * 1000.0
                self.read_stats.add(frame.read_ms)
                with self._cond:
                    if self.drop_stale:
                        self.dropped += len(self._frames)
                        self._frames.clear()
                    else:
                        while len(self._frames) >= self.queue_size and not self._stop:
                            self._cond.wait(0.1)
                    self._frames.append(frame)
                    self.captured += 1
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, which raises it on its own thread
            self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._frames and not self._done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            if self._frames:
                frame = self._frames.popleft()
                self._cond.notify_all()
                return frame
        if self.error is not None:
            raise self.error
        return None

    @property
    def finished(self) -> bool:
        """The source is exhausted and every frame has been taken."""
        with self._cond:
            return self._done and not self._frames

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self.source.close()
