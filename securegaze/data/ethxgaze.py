"""ETH-XGaze reader: the normalised per-subject HDF5 files of Zhang et al. (ECCV 2020).

The release has folders ``train/`` and ``test/`` of ``subject0000.h5``... (``train_test_split.json`` lists
them). Each file holds, for its N samples:

* ``face_patch``: (N, 224, 224, 3) uint8 normalised face crops in **BGR** order (they were read with
  ``cv2.imread`` and warped; the official data loader swaps channels ``[2, 1, 0]`` to get RGB). The
  normalisation script writes 448x448 crops when run at full size; any (H, W, 3) is accepted.
* ``face_gaze``: (N, 2) float64 gaze **(pitch, yaw) radians**, computed as ``asin(-g_y)``,
  ``atan2(-g_x, -g_z)`` of the normalised gaze vector ``g``: the convention of
  :mod:`securegaze.geometry`, so labels are used as stored. **Absent from the test split**, whose
  labels are withheld for the online benchmark.
* ``face_head_pose`` (N, 2) radians, ``frame_index`` and ``cam_index`` (N, 1) int, and in some versions
  ``face_mat_norm`` (N, 3, 3) and ``facial_landmarks`` (N, 68, 2); not used here.

The reader keeps the labels in memory and reads one crop per ``__getitem__`` (a subject file of the
train split is several GB).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from securegaze.data.base import GazeSample, resize_images
from securegaze.data.dataset_files import (
    HDF5Handles,
    open_hdf5,
    reading_hdf5,
    sample_position,
    select_subjects,
)
from securegaze.errors import DatasetError

_SUBJECT_FILE = re.compile(r"^subject\d+$")
_H5_SUFFIXES = (".h5", ".hdf5")


def _subject_files(root: Path) -> list[Path]:
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder (expected ETH-XGaze subject0000.h5 files)")
    if root.is_file():
        return [root]
    files = sorted(
        p
        for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in _H5_SUFFIXES and _SUBJECT_FILE.match(p.stem)
    )
    if not files:
        hint = " (point at its train/ folder)" if (root / "train").is_dir() else ""
        raise DatasetError(f"{root}: no ETH-XGaze subject files (subject0000.h5...) in this folder{hint}")
    return files


def list_ethxgaze_subjects(root: str | os.PathLike) -> list[str]:
    """Subject ids (file stems, ``"subject0000"``...) at ``root`` (a folder or one subject file)."""
    return [p.stem for p in _subject_files(Path(root))]


def _read_labels(path: Path) -> tuple[int, np.ndarray]:
    """(N, (N, 2) float32 gaze) of one subject file; errors for test-split or malformed files."""
    with open_hdf5(path) as f, reading_hdf5(path):
        if "face_patch" not in f:
            raise DatasetError(f"{path}: no 'face_patch' dataset; expected an ETH-XGaze subject file")
        patches = f["face_patch"]
        if patches.ndim != 4 or patches.shape[-1] != 3:
            raise DatasetError(
                f"{path}: 'face_patch' has shape {patches.shape}; expected (N, H, W, 3) images"
            )
        count = patches.shape[0]
        if "face_gaze" not in f:
            raise DatasetError(f"{path} has no 'face_gaze' labels; the ETH-XGaze test split is unlabelled")
        gaze = np.asarray(f["face_gaze"][()], dtype=np.float64)
    if gaze.shape != (count, 2):
        raise DatasetError(
            f"{path}: 'face_gaze' has shape {gaze.shape}; expected ({count}, 2) pitch/yaw radians"
        )
    if not np.all(np.isfinite(gaze)):
        raise DatasetError(f"{path}: 'face_gaze' contains NaN or infinite values")
    return count, gaze.astype(np.float32)


class ETHXGaze:
    """Lazy ETH-XGaze dataset over one subject file or a folder of them (normally the train split).

    ``subjects``: file stems to keep (``"subject0000"``...), default all. ``size``: resize every crop to
    ``(size, size)``. Attributes: ``subjects`` (N,) str per sample, ``gaze`` (N, 2) float32
    (pitch, yaw) radians, ``subject_ids``. Items are :class:`GazeSample` with (H, W, 3) uint8 RGB images.
    A file without ``face_gaze`` (the test split) raises :class:`DatasetError`.
    """

    def __init__(
        self, root: str | os.PathLike, subjects: Sequence[str] | None = None, size: int | None = None
    ) -> None:
        self.root = Path(root)
        self.size = size
        files = {p.stem: p for p in _subject_files(self.root)}
        keep = select_subjects(list(files), subjects, self.root)
        self._paths = [files[s] for s in keep]
        counts, gaze = [], []
        for path in self._paths:
            count, labels = _read_labels(path)
            counts.append(count)
            gaze.append(labels)
        self._offsets = np.concatenate([[0], np.cumsum(np.array(counts, dtype=np.int64))])
        self.subject_ids = list(keep)
        self.gaze = np.concatenate(gaze) if gaze else np.zeros((0, 2), np.float32)
        self.subjects = np.repeat(np.array(self.subject_ids, dtype=str), counts)
        self._handles = HDF5Handles()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> GazeSample:
        part, local = sample_position(self._offsets, index)
        path = self._paths[part]
        f = self._handles.get(path)
        with reading_hdf5(path):
            bgr = f["face_patch"][local]
        image = np.ascontiguousarray(bgr[..., ::-1])  # stored BGR (cv2.imread order) -> RGB
        if self.size is not None:
            image = resize_images(image[None], self.size)[0]
        return GazeSample(image, self.gaze[int(self._offsets[part]) + local], self.subject_ids[part])

    def close(self) -> None:
        """Close the HDF5 files opened for reading (they reopen on the next access)."""
        self._handles.close()
