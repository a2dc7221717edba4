"""Where ``edge-app run`` writes its recording, without losing a file the user already has.

The recording (``--out``, one JSON line per frame) follows three rules:

* **checked before the work**: the folder must exist and the path must not be a folder; an
  existing recording is refused unless the user chose what happens to it. All of this is decided
  at start, before the integrity scan, and a refused run leaves every file as it was;
* **never replaced without an explicit choice**: with an existing (non-empty) file, ``--overwrite``
  replaces it and ``--append`` adds this run's lines at its end; with neither, the run is refused
  (one ``error:`` line naming the file and both options, exit 2). ``{n}`` or ``{time}`` in the file
  name give a new file per run instead (see :func:`expand_placeholders`);
* **written atomically**: a new or replaced recording is written to a temporary file in the same
  folder (``NAME.XXXXXXXX.part``) and renamed onto its name when the run ends, also when it is
  stopped by Ctrl-C or SIGTERM; an earlier file under that name stays whole until that moment.
  Only a process killed outright (SIGKILL, power loss) leaves the lines recorded so far in the
  ``.part`` file. ``--append`` writes in append mode: earlier lines are never rewritten.

A path that exists and is not a regular file (``/dev/null``, a named pipe) is written to directly.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from securegaze.errors import ConfigError, InputFileError
from securegaze.io import check_output_file

#: ``new``: the file must not exist (or be empty); ``overwrite``: replaced at the end of the run;
#: ``append``: lines added at its end; ``stream``: not a regular file, written directly.
MODES = ("new", "overwrite", "append", "stream")


def expand_placeholders(path: str, now: datetime | None = None) -> str:
    """``path`` with ``{time}`` as the UTC start time (``20250131T142501Z``) and ``{n}`` as one more
    than the highest number of an existing file of the same pattern in its folder (1 when there is
    none), so each run gets a new file and the numbers follow the order of the runs. Only the file
    name may hold ``{n}``; other braces are left alone."""
    now = now or datetime.now(UTC)
    text = path.replace("{time}", now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"))
    if "{n}" not in text:
        return text
    folder, name = os.path.split(text)
    if "{n}" in folder:
        raise ConfigError(f"{path}: {{n}} may only stand in the file name, not in the folder")
    parts = name.split("{n}")
    pattern = re.compile(re.escape(parts[0]) + r"(\d+)" + re.escape(parts[1])
                         + "".join(r"\1" + re.escape(p) for p in parts[2:]))
    try:
        names = os.listdir(folder or ".")
    except OSError:
        names = []  # a missing folder is named by the output check that follows
    used = [int(m.group(1)) for m in map(pattern.fullmatch, names) if m is not None]
    return os.path.join(folder, str(max(used, default=0) + 1).join(parts))


@dataclass(frozen=True)
class OutputTarget:
    """A checked output file and how it is written (one of :data:`MODES`). ``str()`` is its path."""

    path: Path
    mode: str

    def __str__(self) -> str:
        return str(self.path)

    def open(self) -> RecordingFile:
        return RecordingFile(self)


def plan_output(out: str | None, option: str = "--out", what: str = "the JSON lines", overwrite: bool = False,
                append: bool = False, now: datetime | None = None) -> OutputTarget | None:
    """The checked target of ``out`` (None or "-": stdout, returned as None), placeholders expanded.

    Raises InputFileError (exit 2) for a missing folder, a folder, or an existing recording with
    neither ``overwrite`` nor ``append``; ConfigError when both are given. Opens nothing."""
    if overwrite and append:
        raise ConfigError("--overwrite and --append exclude each other: replace the recording, or add to it")
    if out in (None, "-"):
        return None
    path = Path(expand_placeholders(str(out), now))
    if path.is_symlink():
        path = path.resolve()  # replace the file the link names, never the link
    check_output_file(path, option, what)
    if path.exists() and not path.is_file():
        return OutputTarget(path, "stream")
    if path.is_file() and path.stat().st_size > 0:
        if not (overwrite or append):
            raise InputFileError(f"{option} {path}: already exists (an earlier recording); pass --overwrite to "
                                 "replace it or --append to add this run's lines to it (or put {n} or {time} in "
                                 "the file name for a new file per run)")
        return OutputTarget(path, "overwrite" if overwrite else "append")
    return OutputTarget(path, "append" if append else ("overwrite" if overwrite else "new"))


class RecordingFile:
    """A text file written as :class:`OutputTarget` says: ``write``/``flush`` as a file object;
    ``close`` moves a new or replaced recording onto its name (see the module docstring)."""

    def __init__(self, target: OutputTarget) -> None:
        self.target = target
        self._tmp: str | None = None
        if target.mode == "stream":
            self._fh = open(target.path, "w", encoding="utf-8")  # noqa: SIM115
        elif target.mode == "append":
            self._fh = open(target.path, "a", encoding="utf-8")  # noqa: SIM115
            if self._fh.tell() > 0 and not _ends_with_newline(target.path):
                self._fh.write("\n")  # a line cut short earlier does not swallow this run's first line
        else:
            fd, self._tmp = tempfile.mkstemp(prefix=f"{target.path.name}.", suffix=".part", dir=target.path.parent)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # what a plain open() would have given
            self._fh = os.fdopen(fd, "w", encoding="utf-8")

    @property
    def temporary_path(self) -> str | None:
        """Where the lines go until ``close`` (None when written in place)."""
        return self._tmp

    def write(self, text: str) -> int:
        return self._fh.write(text)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        """Flush, sync and (new or replaced recording) rename onto the final name; safe to call twice.
        The rename happens also when the flush fails (a full disk): what reached the file is kept
        under the final name, and the error is raised after it."""
        if self._fh.closed:
            return
        try:
            self._fh.flush()
            if self.target.mode != "stream":
                os.fsync(self._fh.fileno())
        finally:
            try:
                self._fh.close()
            finally:
                if self._tmp is not None:
                    tmp, self._tmp = self._tmp, None
                    os.replace(tmp, self.target.path)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
