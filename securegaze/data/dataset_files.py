"""File helpers the dataset readers share: HDF5 and MATLAB files opened with one-line errors, the
subject filter, and the sample index of a dataset stored in parts.

Every failure of h5py or SciPy to read a file (truncated download, corrupt bytes, not HDF5 at all) is
turned into a one-line :class:`~securegaze.errors.InputFileError` that names the file.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from securegaze.errors import DatasetError, InputFileError

H5_SUFFIXES = (".h5", ".hdf5")

# Exceptions h5py raises for damaged files: OSError for truncation and bad signatures ("Unable to open
# file", "Can't read data"), RuntimeError/ValueError/KeyError when an object header or B-tree is damaged.
_H5_READ_FAILURES = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def read_failure(path: str | os.PathLike, exc: BaseException, what: str = "HDF5") -> InputFileError:
    """The user-facing error for a low-level read failure of ``path`` (one line, names the file)."""
    return InputFileError(
        f"{path}: cannot read this {what} file ({_one_line(exc)}); it may be truncated or corrupt, "
        "copy or download it again"
    )


@contextmanager
def reading_hdf5(path: str | os.PathLike) -> Iterator[None]:
    """Turn h5py failures raised inside the block into :func:`read_failure` errors naming ``path``."""
    try:
        yield
    except _H5_READ_FAILURES as exc:
        raise read_failure(path, exc) from exc


def open_hdf5(path: str | os.PathLike):
    """``h5py.File(path, 'r')``, or a one-line :class:`InputFileError` if it cannot be opened."""
    import h5py

    if not Path(path).is_file():
        raise DatasetError(f"{path}: file not found")
    with reading_hdf5(path):
        return h5py.File(path, "r")


def load_mat_v5(path: str | os.PathLike) -> dict:
    """``scipy.io.loadmat`` of a MATLAB v5/v7 file, or a one-line :class:`InputFileError`."""
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    # SciPy reports a damaged .mat as MatReadError, ValueError, TypeError, EOFError, zlib.error, struct
    # errors or even MemoryError (a garbage size field); none of them helps a user, so all are wrapped.
    except Exception as exc:
        raise read_failure(path, exc, what="MATLAB") from exc


class HDF5Handles:
    """Opens HDF5 files on first use and keeps the ``max_open`` most recent ones open.

    Reading one sample per ``h5py.File`` open costs milliseconds, so lazy readers keep handles; the
    handles are dropped when the object is pickled (DataLoader workers) or used in a forked child
    process, where an inherited HDF5 handle is not safe to use, and are reopened there on demand.
    """

    def __init__(self, max_open: int = 16) -> None:
        self.max_open = max_open
        self._files: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: str | os.PathLike):
        if os.getpid() != self._pid:  # forked: forget (do not close) the parent's handles
            self._files = OrderedDict()
            self._pid = os.getpid()
        key = str(path)
        handle = self._files.get(key)
        if handle is not None:
            self._files.move_to_end(key)
            return handle
        handle = open_hdf5(key)
        self._files[key] = handle
        while len(self._files) > self.max_open:
            _, oldest = self._files.popitem(last=False)
            oldest.close()
        return handle

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_open"])


def select_subjects(
    available: Sequence[str], wanted: Sequence[str] | str | None, where: str | os.PathLike
) -> list[str]:
    """The subjects of ``available`` to keep: all when ``wanted`` is None, else ``wanted`` in the given order.

    Raises :class:`DatasetError` naming the unknown ids and listing the known ones.
    """
    if wanted is None:
        return list(available)
    wanted = [wanted] if isinstance(wanted, str) else [str(s) for s in wanted]
    known = set(available)
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise DatasetError(
            f"{where}: unknown subject(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    if not wanted:
        raise DatasetError(f"{where}: the subject list is empty")
    return list(dict.fromkeys(wanted))


def sample_position(offsets, index: int) -> tuple[int, int]:
    """(part, index within part) of a global sample index, given the (P + 1,) cumulative part sizes.

    Negative indices count from the end; an out-of-range index raises IndexError (iteration relies on it).
    """
    import numpy as np

    total = int(offsets[-1])
    i = int(index)
    if i < 0:
        i += total
    if not 0 <= i < total:
        raise IndexError(f"sample index {index} out of range for {total} samples")
    part = int(np.searchsorted(offsets, i, side="right")) - 1
    return part, i - int(offsets[part])


