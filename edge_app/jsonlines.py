"""The JSON-lines log of a run: one JSON object per processed frame, written on its own thread.

Into a file it is written as :mod:`edge_app.outputs` says: checked at start, never replacing an
earlier recording without ``--overwrite`` or ``--append``, renamed onto its name at the end.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path

from edge_app.outputs import OutputTarget


class JsonLinesWriter:
    """Writes one JSON object per line on its own thread, so a slow disk or pipe never stalls the
    frame loop (docs/architecture.md section 2). ``path`` None or "-": stdout; an
    :class:`~edge_app.outputs.OutputTarget`: written as it says; a plain path: a new file or an
    atomic replacement of the old one (the command line decides before that, with :func:`~edge_app.outputs.plan_output`).

    The queue between the frame loop and the writer holds at most ``max_queue`` lines (about 1 kB
    each), so a disk that cannot keep up never makes the run grow without limit. When it is full:

    * ``drop_when_full`` (live sources): the line is dropped and counted in ``dropped``, and the run
      summary reports the count. A driver-monitoring loop must keep raising alerts on time: waiting
      for the disk would delay the alarm for the driver in front of the camera, whereas a gap in
      the log is visible (consecutive ``frame`` numbers) and counted, never silent;
    * otherwise (recorded sources: video, folder, synthetic drive; nothing happens in real time)
      ``write`` waits for room, so every processed frame reaches the log. The capture thread never
      waits on this queue either way: only the frame loop calls ``write``.

    A line that cannot be written (disk full, a closed pipe) is counted in ``dropped`` too, and
    ``error`` keeps the first such error; the writer keeps draining so ``write`` never blocks for ever.
    ``written``: lines written so far.
    """

    def __init__(self, path: str | OutputTarget | None, drop_when_full: bool = False, max_queue: int = 1024) -> None:
        if path in (None, "-"):
            self._fh = sys.stdout
        else:
            target = path if isinstance(path, OutputTarget) else OutputTarget(
                Path(path), "stream" if Path(path).exists() and not Path(path).is_file() else "overwrite")
            self._fh = target.open()
        self._owns = self._fh is not sys.stdout
        self.written = 0
        self.drop_when_full = drop_when_full
        self.dropped = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="jsonl-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self.error is not None:
                self.dropped += 1
                continue
            try:
                self._fh.write(json.dumps(item) + "\n")
                self.written += 1
            except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
                self.error = exc
                self.dropped += 1
        try:
            self._fh.flush()
        except (OSError, ValueError) as exc:
            self.error = self.error or exc

    def write(self, obj: dict) -> None:
        if not self.drop_when_full:
            self._queue.put(obj)
            return
        try:
            self._queue.put_nowait(obj)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Drain the queue, then close the file (a new or replaced recording is renamed onto its
        name here); a failure of that last step is kept in ``error``, not raised."""
        self._queue.put(None)  # waits for room: the writer is draining
        self._thread.join()
        if self._owns:
            try:
                self._fh.close()
            except OSError as exc:
                self.error = self.error or exc

