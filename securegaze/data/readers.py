"""Opening real gaze datasets from disk: one entry point, and the file helpers the readers share.

:func:`open_dataset` looks at a path and picks the reader:

* a folder holding ``labels.csv``, or a ``.csv`` file -> :class:`~securegaze.data.folder_csv.FolderCsvDataset`;
* a folder holding ``p00.h5``/``p00.mat``..., one such file, or an HDF5 file whose top-level groups are
  ``p00``... (pytorch_mpiigaze's ``MPIIFaceGaze.h5``) -> :class:`~securegaze.data.mpiifacegaze.MPIIFaceGaze`;
* a folder holding ``subject0000.h5``..., or one HDF5 file with a ``face_patch`` dataset
  -> :class:`~securegaze.data.ethxgaze.ETHXGaze`.

Every failure of h5py or SciPy to read a file (truncated download, corrupt bytes, not HDF5 at all) is
turned into a one-line :class:`~securegaze.errors.InputFileError` that names the file, so the command
line can print it instead of an HDF5 traceback.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from securegaze.errors import DatasetError, InputFileError

#: What :func:`open_dataset` accepts, quoted in its error message.
ACCEPTED_LAYOUTS = (
    "a folder with labels.csv (image,subject,pitch,yaw)",
    "an MPIIFaceGaze folder with p00.h5... or p00.mat... (or one such file, or an HDF5 file with groups p00...)",
    "an ETH-XGaze folder with subject0000.h5... (or one such file)",
)

_MPII_STEM = re.compile(r"^p\d+$")
_ETH_STEM = re.compile(r"^subject\d+$")
_H5_SUFFIXES = (".h5", ".hdf5")

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


def _files_matching(folder: Path, pattern: re.Pattern, suffixes: Sequence[str]) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and pattern.match(p.stem)
    )


def _hdf5_top_level(path: Path) -> tuple[set[str], set[str]]:
    """(dataset names, group names) at the root of an HDF5 file."""
    import h5py

    with open_hdf5(path) as f, reading_hdf5(path):
        datasets = {k for k, v in f.items() if isinstance(v, h5py.Dataset)}
        groups = {k for k, v in f.items() if isinstance(v, h5py.Group)}
    return datasets, groups


def detect_layout(path: str | os.PathLike) -> str:
    """``'folder_csv'``, ``'mpiifacegaze'`` or ``'ethxgaze'`` for a dataset path, or :class:`DatasetError`."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder; expected " + "; or ".join(ACCEPTED_LAYOUTS))
    if p.is_dir():
        if (p / "labels.csv").is_file():
            return "folder_csv"
        if _files_matching(p, _MPII_STEM, (*_H5_SUFFIXES, ".mat")):
            return "mpiifacegaze"
        if _files_matching(p, _ETH_STEM, _H5_SUFFIXES):
            return "ethxgaze"
    else:
        suffix = p.suffix.lower()
        if suffix == ".csv":
            return "folder_csv"
        if suffix == ".mat" and _MPII_STEM.match(p.stem):
            return "mpiifacegaze"
        if suffix in _H5_SUFFIXES:
            datasets, groups = _hdf5_top_level(p)
            if "face_patch" in datasets or _ETH_STEM.match(p.stem):
                return "ethxgaze"
            if _MPII_STEM.match(p.stem) or any(_MPII_STEM.match(g) for g in groups):
                return "mpiifacegaze"
    raise DatasetError(
        f"{p}: not a gaze dataset layout this program reads; expected " + "; or ".join(ACCEPTED_LAYOUTS)
    )


def open_dataset(spec: str | os.PathLike, *, subjects: Sequence[str] | None = None, size: int | None = None):
    """Open the real gaze dataset at ``spec`` (a folder or file path), choosing the reader by layout.

    ``subjects`` keeps only those subject ids; ``size`` resizes every crop to ``(size, size)``.
    Returns a lazy :class:`~securegaze.data.base.GazeDataset` whose samples hold (H, W, 3) uint8 RGB
    images and (pitch, yaw) radians. Raises :class:`DatasetError` for an unknown layout (the message
    lists the accepted ones) and :class:`InputFileError` for a file that cannot be read.
    """
    layout = detect_layout(spec)
    # Imported here: the format modules use the helpers above, so importing them at the top would be circular.
    if layout == "folder_csv":
        from securegaze.data.folder_csv import FolderCsvDataset

        return FolderCsvDataset(spec, subjects=subjects, size=size)
    if layout == "mpiifacegaze":
        from securegaze.data.mpiifacegaze import MPIIFaceGaze

        return MPIIFaceGaze(spec, subjects=subjects, size=size)
    from securegaze.data.ethxgaze import ETHXGaze

    return ETHXGaze(spec, subjects=subjects, size=size)
