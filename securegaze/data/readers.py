"""Opening real gaze datasets from disk: one entry point, and the file helpers the readers share.

:func:`open_dataset` looks at a path and picks the reader (the helpers the readers share are in
:mod:`securegaze.data.dataset_files`):

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
from collections.abc import Sequence
from pathlib import Path

from securegaze.data.dataset_files import (
    H5_SUFFIXES,
    HDF5Handles,
    load_mat_v5,
    open_hdf5,
    read_failure,
    reading_hdf5,
    sample_position,
    select_subjects,
)
from securegaze.data.ethxgaze import ETHXGaze
from securegaze.data.folder_csv import FolderCsvDataset
from securegaze.data.mpiifacegaze import MPIIFaceGaze
from securegaze.errors import DatasetError

__all__ = ["ACCEPTED_LAYOUTS", "HDF5Handles", "detect_layout", "load_mat_v5", "open_dataset", "open_hdf5",
           "read_failure", "reading_hdf5", "sample_position", "select_subjects"]

#: What :func:`open_dataset` accepts, quoted in its error message.
ACCEPTED_LAYOUTS = (
    "a folder with labels.csv (image,subject,pitch,yaw)",
    "an MPIIFaceGaze folder with p00.h5... or p00.mat... (or one such file, or an HDF5 file with groups p00...)",
    "an ETH-XGaze folder with subject0000.h5... (or one such file)",
)

_MPII_STEM = re.compile(r"^p\d+$")
_ETH_STEM = re.compile(r"^subject\d+$")
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
        if _files_matching(p, _MPII_STEM, (*H5_SUFFIXES, ".mat")):
            return "mpiifacegaze"
        if _files_matching(p, _ETH_STEM, H5_SUFFIXES):
            return "ethxgaze"
    else:
        suffix = p.suffix.lower()
        if suffix == ".csv":
            return "folder_csv"
        if suffix == ".mat" and _MPII_STEM.match(p.stem):
            return "mpiifacegaze"
        if suffix in H5_SUFFIXES:
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
    if layout == "folder_csv":
        return FolderCsvDataset(spec, subjects=subjects, size=size)
    if layout == "mpiifacegaze":
        return MPIIFaceGaze(spec, subjects=subjects, size=size)
    return ETHXGaze(spec, subjects=subjects, size=size)
