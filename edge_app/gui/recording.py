"""The session recording of the overlay (key r): raw video and one JSON line per frame, written on
their own thread so the display never waits for the disk."""

from __future__ import annotations

import json
import queue
import threading
from datetime import datetime
from pathlib import Path


def new_recording_folder(root: Path) -> Path:
    """A new, empty ``root/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when a recording already started
    in that second: r pressed twice quickly must not overwrite the previous recording)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        folder = root / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            k += 1


class SessionRecording:
    """Key r: the raw frames to ``DIR/video.mp4`` and each record's JSON line (plus the trigger
    mark) to ``DIR/frames.jsonl``, written on its own thread from a bounded queue; when the disk
    falls behind, frames are dropped from the recording (``dropped``), never from the pipeline."""

    def __init__(self, folder: Path, fps: float = 30.0, max_queue: int = 64) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="gui-recording", daemon=True)
        self._thread.start()

    def add(self, rec, trigger_on: bool) -> None:
        line = rec.to_json()
        line["trigger_marked"] = bool(trigger_on)
        try:
            self._queue.put_nowait((rec.frame.image, line))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        import cv2

        writer = None
        with open(self.folder / "frames.jsonl", "w", encoding="utf-8") as fh:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                image, line = item
                if writer is None:
                    h, w = image.shape[:2]
                    writer = cv2.VideoWriter(str(self.folder / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                             self.fps, (w, h))
                writer.write(image)
                fh.write(json.dumps(line) + "\n")
        if writer is not None:
            writer.release()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
