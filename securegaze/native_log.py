"""MediaPipe's native start-up lines kept off the user's terminal.

MediaPipe's graph (TensorFlow Lite and absl underneath) writes a few lines straight to file
descriptor 2 when it starts: that it created the XNNPACK delegate, that absl logs to stderr before
it is initialised, and calculator warnings such as ``Using NORM_RECT without IMAGE_DIMENSIONS``.
None of them is about the user's input, and next to the project's one-line messages they read like
errors. :func:`quiet_native_start` sends descriptor 2 to a temporary file while a face mesh is built
and first run, then writes back every line that is not one of those (an error line of the graph, or
anything Python printed meanwhile, still reaches the terminal, only later).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: Lines dropped: TensorFlow Lite's delegate notice, absl's pre-initialisation notice, and absl
#: INFO / WARNING lines of native code (``I0000 00:00:... file.cc:123] ...``); errors are kept.
NOISE = (
    re.compile(r"^INFO: Created TensorFlow Lite .*delegate"),
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    re.compile(r"^[IW]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\] "),
)

__all__ = ["NOISE", "quiet_native_start"]


def is_noise(line: str) -> bool:
    return any(pattern.match(line) for pattern in NOISE)


@contextmanager
def quiet_native_start() -> Iterator[None]:
    """Within the block, descriptor 2 goes to a temporary file; afterwards every line of it that is not
    :data:`NOISE` is written to the real descriptor 2. Where descriptor 2 cannot be redirected (closed,
    or no descriptors), the block runs as it is."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not is_noise(line)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))
