"""MPIIFaceGaze reader: the normalised full-face data of Zhang et al. (CVPR-W 2017), 15 subjects p00-p14.

Every layout below gives the same samples: (H, W, 3) uint8 **RGB** upright face crops and gaze
(pitch, yaw) in **radians**, subject ids ``"p00"``...

Layouts read
------------
1. **The released normalised MATLAB files** (``MPIIFaceGaze_normalized.zip``: ``p00.mat`` ... ``p14.mat``,
   3000 samples of 448x448 faces each). Each holds a struct ``Data`` with two fields:

   * ``Data.data``, the images. In MATLAB the array is ``rows x cols x 3 x N`` uint8. The project page
     says the faces were prepared for Caffe with ``img(:,:,[3 2 1])`` (RGB -> BGR), ``flip(img, 2)``
     (left-right) and ``imrotate(img, 90)``; a left-right flip followed by a 90 degree counter-clockwise
     rotation is a transpose, so MATLAB holds each face transposed, in BGR order.

     - v7.3 files are HDF5 (read with h5py). h5py shows a MATLAB array with its axes reversed, here
       ``(N, 3, 448, 448)``, and that reversal undoes the transpose: ``data[n].transpose(1, 2, 0)`` is
       the upright face in BGR (as pytorch_mpiigaze's ``tools/preprocess_mpiifacegaze.py`` reads it).
     - v5/v7 files (scipy.io.loadmat) keep MATLAB's axis order, ``(448, 448, 3, N)``:
       ``data[:, :, :, n].transpose(1, 0, 2)`` is the upright face in BGR. SciPy cannot read part of
       such a file, so the whole file of one subject is loaded when one of its samples is first read
       and kept until a sample of another subject is read (use the v7.3 or HDF5 files for random access).

   * ``Data.label``, ``16 x N`` in MATLAB (``(N, 16)`` through h5py): columns 0-1 are the gaze
     (pitch, yaw) in radians, columns 2-3 the head pose (pitch, yaw) in radians; the rest (facial
     landmarks) are not used here.

2. **Per-subject HDF5 files** written by common preprocessing scripts: ``p00.h5`` ... with datasets
   ``image`` (N, H, W, 3) uint8 BGR, ``gaze`` (N, 2) (pitch, yaw) radians and ``pose`` (N, 2). The
   ETH-XGaze-style names ``face_patch`` / ``face_gaze`` are accepted in place of ``image`` / ``gaze``.

3. **One HDF5 file with a group per subject** (pytorch_mpiigaze's ``MPIIFaceGaze.h5``): groups ``p00``
   ... each holding either the datasets of layout 2, or groups ``image`` and ``gaze`` of per-sample
   datasets ``0000``, ``0001``... ((H, W, 3) uint8 BGR and (2,) radians).

Some scripts write RGB instead of BGR into the HDF5 layouts (2 and 3); pass ``h5_channel_order="rgb"``
for those. The MATLAB files are always BGR.

Gaze convention: the released labels are ``pitch = asin(-g_y)``, ``yaw = atan2(-g_x, -g_z)`` of the unit
gaze vector ``g`` in the normalised camera frame, the convention of the MPIIGaze conversion scripts,
pytorch_mpiigaze and ETH-XGaze, and of :mod:`securegaze.geometry`: they are used as stored. (Files
re-normalised with X-Shi/Data-Normalization-Gaze-Estimation use the opposite signs, as its README
notes; negate both angles of such files before use.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from securegaze.data.base import GazeSample, resize_images
from securegaze.data.dataset_files import (
    HDF5Handles,
    load_mat_v5,
    open_hdf5,
    reading_hdf5,
    sample_position,
    select_subjects,
)
from securegaze.errors import DatasetError

#: The 15 subjects of the release, in the order of the standard leave-one-subject-out protocol.
MPIIFACEGAZE_SUBJECTS = tuple(f"p{i:02d}" for i in range(15))

_SUBJECT_ID = re.compile(r"^p\d+$")
_H5_SUFFIXES = (".h5", ".hdf5")
_IMAGE_KEYS = ("image", "face_patch")
_GAZE_KEYS = ("gaze", "face_gaze")


@dataclass(frozen=True)
class _SubjectFile:
    """Where one subject's samples live and how they are laid out."""

    subject: str
    path: Path
    layout: str  # "array" | "indexed" | "mat73" | "mat5"
    group: str = "/"  # HDF5 group holding the image and gaze entries (layouts 2 and 3)
    image_key: str = ""
    sample_keys: tuple[str, ...] = ()  # per-sample dataset names ("indexed" layout)


def _subject_order(subject: str) -> tuple[int, str]:
    return int(subject[1:]), subject


def _find_subject_files(root: Path) -> list[tuple[str, Path, str]]:
    """(subject, file, HDF5 group or '' for a whole file) for every subject under ``root``."""
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder (expected MPIIFaceGaze p00.h5/p00.mat files)")
    if root.is_dir():
        found: dict[str, Path] = {}
        for path in sorted(root.iterdir()):
            if not (path.is_file() and _SUBJECT_ID.match(path.stem)):
                continue
            if path.suffix.lower() not in (*_H5_SUFFIXES, ".mat"):
                continue
            if path.stem in found:
                # Two files for one subject (say p00.h5 next to p00.mat) may disagree; refuse to guess.
                raise DatasetError(
                    f"{root}: both {found[path.stem].name} and {path.name} hold subject {path.stem}; "
                    "keep one layout per folder"
                )
            found[path.stem] = path
        if not found:
            raise DatasetError(
                f"{root}: no MPIIFaceGaze subject files (p00.h5... or p00.mat...) in this folder"
            )
        return [(s, found[s], "") for s in sorted(found, key=_subject_order)]
    suffix = root.suffix.lower()
    if suffix == ".mat" and _SUBJECT_ID.match(root.stem):
        return [(root.stem, root, "")]
    if suffix in _H5_SUFFIXES:
        import h5py

        with open_hdf5(root) as f, reading_hdf5(root):
            groups = sorted(
                (k for k, v in f.items() if isinstance(v, h5py.Group) and _SUBJECT_ID.match(k)),
                key=_subject_order,
            )
        if groups:
            return [(g, root, g) for g in groups]
        if _SUBJECT_ID.match(root.stem):
            return [(root.stem, root, "")]
    raise DatasetError(
        f"{root}: not an MPIIFaceGaze file (expected p00.mat, p00.h5, or an HDF5 file with groups p00, p01...)"
    )


def list_mpiifacegaze_subjects(root: str | os.PathLike) -> list[str]:
    """Subject ids (``"p00"``...) found at ``root`` (a folder, one subject file, or a grouped HDF5 file)."""
    return [subject for subject, _, _ in _find_subject_files(Path(root))]


def _label_rows(label: np.ndarray, count: int, samples_first: bool, where: str) -> np.ndarray:
    """``label`` as (count, K) rows, whichever axis holds the samples."""
    label = np.asarray(label, dtype=np.float64)
    if label.ndim == 1:
        label = label[None, :] if count == 1 else label[:, None]
    if label.ndim != 2:
        raise DatasetError(
            f"{where}: 'Data/label' has shape {label.shape}; expected a 2-D array of 16 numbers per sample"
        )
    candidates = [label, label.T] if samples_first else [label.T, label]
    for rows in candidates:
        if rows.shape[0] == count and rows.shape[1] >= 2:
            return rows
    raise DatasetError(
        f"{where}: 'Data/label' has shape {label.shape}, which does not match the {count} images"
    )


def _checked_gaze(gaze: np.ndarray, count: int, where: str) -> np.ndarray:
    gaze = np.asarray(gaze, dtype=np.float64)
    if gaze.ndim != 2 or gaze.shape[0] != count or gaze.shape[1] < 2:
        raise DatasetError(
            f"{where}: gaze labels have shape {gaze.shape}; expected ({count}, 2) pitch/yaw radians"
        )
    gaze = gaze[:, :2]
    if not np.all(np.isfinite(gaze)):
        raise DatasetError(f"{where}: gaze labels contain NaN or infinite values")
    return gaze.astype(np.float32)


def _first_key(group, keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in group), None)


def _sample_key_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


def _inspect_hdf5(subject: str, path: Path, group_name: str) -> tuple[_SubjectFile, np.ndarray]:
    import h5py

    where = f"{path}" if not group_name else f"{path} (group '{group_name}')"
    with open_hdf5(path) as f, reading_hdf5(path):
        group = f[group_name] if group_name else f
        image_key = _first_key(group, _IMAGE_KEYS)
        gaze_key = _first_key(group, _GAZE_KEYS)
        if image_key is None or gaze_key is None:
            missing = "'image'" if image_key is None else "'gaze'"
            raise DatasetError(
                f"{where}: no {missing} entry; expected MPIIFaceGaze 'image' (N, H, W, 3) and 'gaze' (N, 2)"
            )
        images, gaze = group[image_key], group[gaze_key]
        if isinstance(images, h5py.Dataset):
            if images.ndim != 4 or images.shape[-1] != 3:
                raise DatasetError(
                    f"{where}: '{image_key}' has shape {images.shape}; expected (N, H, W, 3) images"
                )
            if not isinstance(gaze, h5py.Dataset):
                raise DatasetError(
                    f"{where}: '{gaze_key}' is a group but '{image_key}' is an array; expected both arrays"
                )
            count = images.shape[0]
            labels = _checked_gaze(gaze[()], count, where)
            part = _SubjectFile(subject, path, "array", group.name, image_key)
        else:
            keys = tuple(sorted(images.keys(), key=_sample_key_order))
            if not isinstance(gaze, h5py.Group):
                raise DatasetError(f"{where}: '{image_key}' is a group of samples but '{gaze_key}' is not")
            missing_keys = [k for k in keys if k not in gaze]
            if missing_keys:
                raise DatasetError(
                    f"{where}: sample '{image_key}/{missing_keys[0]}' has no '{gaze_key}/{missing_keys[0]}' label"
                )
            per_sample = [np.ravel(gaze[k][()]) for k in keys]
            part = _SubjectFile(subject, path, "indexed", group.name, image_key, keys)
    if part.layout == "indexed":
        # Stacked outside the read block, so a malformed label is reported as such, not as a damaged file.
        short = [k for k, g in zip(keys, per_sample, strict=True) if g.size < 2]
        if short:
            raise DatasetError(f"{where}: label '{gaze_key}/{short[0]}' does not hold (pitch, yaw)")
        stacked = np.stack([g[:2] for g in per_sample]) if keys else np.zeros((0, 2))
        labels = _checked_gaze(stacked, len(keys), where)
    return part, labels


def _inspect_mat73(subject: str, path: Path) -> tuple[_SubjectFile, np.ndarray]:
    with open_hdf5(path) as f, reading_hdf5(path):
        for key in ("Data/data", "Data/label"):
            if key not in f:
                raise DatasetError(
                    f"{path}: no '{key}' in this MATLAB v7.3 file; expected the MPIIFaceGaze struct Data"
                )
        images = f["Data/data"]
        if images.ndim != 4 or images.shape[1] != 3:
            raise DatasetError(
                f"{path}: 'Data/data' has shape {images.shape}; expected (N, 3, H, W) as h5py shows MATLAB's HxWx3xN"
            )
        count = images.shape[0]
        # h5py shows MATLAB's 16 x N label as (N, 16): samples first.
        label = _label_rows(f["Data/label"][()], count, samples_first=True, where=str(path))
    return _SubjectFile(subject, path, "mat73"), _checked_gaze(label[:, :2], count, str(path))


def _mat5_struct(path: Path, contents: dict) -> tuple[np.ndarray, np.ndarray]:
    """(images rows x cols x 3 x N, label) from a loadmat result."""
    data = contents.get("Data")
    names = getattr(getattr(data, "dtype", None), "names", None) or ()
    if "data" not in names or "label" not in names:
        raise DatasetError(
            f"{path}: no struct 'Data' with fields 'data' and 'label'; expected an MPIIFaceGaze .mat file"
        )
    record = data.flat[0]
    images = np.asarray(record["data"])
    if images.ndim == 3:  # MATLAB drops a trailing singleton: one sample is stored as rows x cols x 3
        images = images[..., None]
    if images.ndim != 4 or images.shape[2] != 3:
        raise DatasetError(f"{path}: 'Data.data' has shape {images.shape}; expected H x W x 3 x N")
    return images, np.asarray(record["label"])


def _inspect_mat5(subject: str, path: Path) -> tuple[_SubjectFile, np.ndarray]:
    images, label = _mat5_struct(path, load_mat_v5(path))
    count = images.shape[3]
    # loadmat keeps MATLAB's 16 x N: samples along the second axis.
    rows = _label_rows(label, count, samples_first=False, where=str(path))
    return _SubjectFile(subject, path, "mat5"), _checked_gaze(rows[:, :2], count, str(path))


def _inspect(subject: str, path: Path, group: str) -> tuple[_SubjectFile, np.ndarray]:
    if path.suffix.lower() == ".mat":
        import h5py

        # MATLAB v7.3 files are HDF5 with a 512-byte MATLAB header in the user block; older ones are not HDF5.
        if h5py.is_hdf5(str(path)):
            return _inspect_mat73(subject, path)
        return _inspect_mat5(subject, path)
    return _inspect_hdf5(subject, path, group)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Pixel values 0-255 of any numeric dtype (some conversions store doubles) -> uint8."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class MPIIFaceGaze:
    """Lazy MPIIFaceGaze dataset: labels are read at construction, images one sample at a time.

    ``root``: a folder of ``p00.mat``/``p00.h5``... files, one such file, or an HDF5 file with a group per
    subject (see the module docstring for every layout). ``subjects``: ids to keep (default all found).
    ``size``: resize every crop to ``(size, size)`` (the release's faces are 448x448).

    Attributes: ``subjects`` (N,) str per sample, ``gaze`` (N, 2) float32 (pitch, yaw) radians,
    ``subject_ids`` the subjects present in file order. Items are :class:`GazeSample` with an
    (H, W, 3) uint8 RGB image.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        subjects: Sequence[str] | None = None,
        size: int | None = None,
        *,
        h5_channel_order: str = "bgr",
    ) -> None:
        if h5_channel_order not in ("bgr", "rgb"):
            raise DatasetError(f"h5_channel_order must be 'bgr' or 'rgb', got {h5_channel_order!r}")
        self.root = Path(root)
        self.size = size
        self.h5_channel_order = h5_channel_order
        found = _find_subject_files(self.root)
        keep = select_subjects([s for s, _, _ in found], subjects, self.root)
        by_subject = {s: (p, g) for s, p, g in found}
        self._parts: list[_SubjectFile] = []
        gaze = []
        for subject in keep:
            part, labels = _inspect(subject, *by_subject[subject])
            self._parts.append(part)
            gaze.append(labels)
        counts = np.array([len(g) for g in gaze], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self.subject_ids = [p.subject for p in self._parts]
        self.gaze = np.concatenate(gaze).astype(np.float32) if gaze else np.zeros((0, 2), np.float32)
        self.subjects = np.repeat(np.array(self.subject_ids, dtype=str), counts)
        self._handles = HDF5Handles()
        self._mat5_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> GazeSample:
        part_index, local = sample_position(self._offsets, index)
        part = self._parts[part_index]
        bgr = self._read_image(part_index, part, local)
        image = np.ascontiguousarray(bgr[..., ::-1]) if self._is_bgr(part) else np.ascontiguousarray(bgr)
        if self.size is not None:
            image = resize_images(image[None], self.size)[0]
        global_index = int(self._offsets[part_index]) + local
        return GazeSample(image, self.gaze[global_index], part.subject)

    def _is_bgr(self, part: _SubjectFile) -> bool:
        return part.layout in ("mat73", "mat5") or self.h5_channel_order == "bgr"

    def _read_image(self, part_index: int, part: _SubjectFile, local: int) -> np.ndarray:
        """(H, W, 3) uint8 upright image in the file's channel order."""
        if part.layout == "mat5":
            if self._mat5_cache is None or self._mat5_cache[0] != part_index:
                self._mat5_cache = None  # free the previous subject before loading the next
                images, _ = _mat5_struct(part.path, load_mat_v5(part.path))
                self._mat5_cache = (part_index, images)
            # loadmat keeps MATLAB's rows x cols x 3 x N of transposed faces (module docstring).
            return _to_uint8(self._mat5_cache[1][:, :, :, local].transpose(1, 0, 2))
        f = self._handles.get(part.path)
        with reading_hdf5(part.path):
            if part.layout == "mat73":
                # h5py's (N, 3, H, W) view of MATLAB's H x W x 3 x N: channels last gives the upright face.
                image = f["Data/data"][local].transpose(1, 2, 0)
            elif part.layout == "array":
                image = f[part.group][part.image_key][local]
            else:
                image = f[part.group][part.image_key][part.sample_keys[local]][()]
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DatasetError(
                f"{part.path}: sample {local} of {part.subject} has shape {image.shape}; expected (H, W, 3)"
            )
        return _to_uint8(image)

    def close(self) -> None:
        """Close the HDF5 files opened for reading (they reopen on the next access)."""
        self._handles.close()
        self._mat5_cache = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_mat5_cache"] = None  # a whole subject's images: reload in the worker instead of pickling
        return state
