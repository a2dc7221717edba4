"""The dataset interface shared by the synthetic renderer and the real-data readers.

A gaze dataset is a sequence of samples with exact labels:

* ``images``: (N, H, W, 3) uint8 **RGB** face crops (normalised faces, docs/architecture.md section 3);
* ``gaze``: (N, 2) float32 (pitch, yaw) **radians** in the normalised camera frame; all NaN for an
  unlabelled set (a plain image folder, :mod:`securegaze.data.image_folder`): ``labelled`` is then
  False, and a use that needs labels calls :func:`require_labels`, which refuses it in one line;
* ``subjects``: (N,) str subject identifiers, for leave-subjects-out splits.

Readers of large files implement :class:`GazeDataset` lazily (``__getitem__`` reads one sample);
:class:`ArrayGazeDataset` holds everything in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from securegaze.errors import DatasetError


@dataclass(frozen=True)
class GazeSample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    gaze: np.ndarray  # (2,) float32 radians (pitch, yaw)
    subject: str


@runtime_checkable
class GazeDataset(Protocol):
    subjects: np.ndarray  # (N,) str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> GazeSample: ...


class ArrayGazeDataset:
    """An in-memory dataset; also what :func:`materialize` turns any dataset into."""

    def __init__(self, images: np.ndarray, gaze: np.ndarray, subjects: Sequence[str] | np.ndarray | None = None):
        images = np.asarray(images)
        gaze = np.asarray(gaze, dtype=np.float32)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8 RGB, got {images.shape} {images.dtype}")
        if gaze.shape != (len(images), 2):
            raise ValueError(f"gaze must be (N, 2) radians with N={len(images)}, got {gaze.shape}")
        if subjects is None:
            subjects = np.full(len(images), "unknown")
        subjects = np.asarray(subjects).astype(str)
        if subjects.shape != (len(images),):
            raise ValueError(f"subjects must be (N,) with N={len(images)}, got {subjects.shape}")
        self.images = images
        self.gaze = gaze
        self.subjects = subjects

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> GazeSample:
        return GazeSample(self.images[index], self.gaze[index], str(self.subjects[index]))

    @property
    def labelled(self) -> bool:
        """True when every sample has a gaze label (an unlabelled set holds NaN)."""
        return bool(np.isfinite(self.gaze).all())

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ArrayGazeDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayGazeDataset(self.images[idx], self.gaze[idx], self.subjects[idx])


class SubsetGazeDataset:
    """A view of some indices of another dataset (lazy readers stay lazy)."""

    def __init__(self, base: GazeDataset, indices: Sequence[int] | np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.subjects = np.asarray(base.subjects)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> GazeSample:
        return self.base[int(self.indices[index])]


#: Where labelled data comes from, as the refusals of an unlabelled set say.
LABELLED_SOURCES = "'synthetic', a folder with labels.csv, or an MPIIFaceGaze / ETH-XGaze dataset"


def unlabelled_error(source: str | None, purpose: str) -> DatasetError:
    """The one-line error for unlabelled images given to ``purpose``, which needs gaze labels."""
    where = f"{source}: " if source else ""
    return DatasetError(f"{where}the images have no gaze labels, and {purpose} needs labelled data: "
                        f"give {LABELLED_SOURCES}")


def require_labels(dataset: ArrayGazeDataset, purpose: str, source: str | None = None) -> None:
    """Refuse an unlabelled ``dataset`` (:func:`unlabelled_error`) for a ``purpose`` that needs gaze
    labels (e.g. ``"securegaze evaluate"``); ``source`` names where it came from."""
    if not dataset.labelled:
        raise unlabelled_error(source, purpose)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 (area interpolation when shrinking)."""
    import cv2

    if images.shape[1] == size and images.shape[2] == size:
        return images
    interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])


def materialize(dataset: GazeDataset, size: int | None = None, indices=None) -> ArrayGazeDataset:
    """Read (some of) a dataset into memory, resizing the crops to ``size`` when given."""
    if isinstance(dataset, ArrayGazeDataset) and indices is None:
        out = dataset
    else:
        idx = range(len(dataset)) if indices is None else indices
        samples = [dataset[int(i)] for i in idx]
        if not samples:
            raise ValueError("cannot materialise an empty dataset")
        shapes = {s.image.shape for s in samples}
        ims = [s.image for s in samples]
        if len(shapes) > 1 and size is None:
            raise ValueError(f"images have different shapes {sorted(shapes)}; give a size to resize them to")
        if size is not None:
            ims = [resize_images(im[None], size)[0] for im in ims]
        out = ArrayGazeDataset(np.stack(ims), np.stack([s.gaze for s in samples]), [s.subject for s in samples])
    if size is not None and out.images.shape[1] != size:
        out = ArrayGazeDataset(resize_images(out.images, size), out.gaze, out.subjects)
    return out


def to_tensor_batch(images: np.ndarray):
    """(N, H, W, 3) uint8 RGB -> torch (N, 3, H, W) float32 in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
