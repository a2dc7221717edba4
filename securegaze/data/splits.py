"""Leave-subjects-out splits: no person's face is seen both in training and in testing.

Gaze models are evaluated person-independently: a model that has seen a subject's face is measurably
better on that subject, so a random split of samples overstates accuracy. Every split here partitions
*subjects*, and the pieces are :class:`~securegaze.data.base.SubsetGazeDataset` views, so lazy readers
stay lazy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from securegaze.data.base import GazeDataset, SubsetGazeDataset
from securegaze.data.mpiifacegaze import MPIIFACEGAZE_SUBJECTS
from securegaze.errors import DatasetError


@dataclass(frozen=True)
class SubjectSplit:
    """One train/test split; ``test_subjects`` are the held-out people, sorted."""

    test_subjects: tuple[str, ...]
    train: SubsetGazeDataset
    test: SubsetGazeDataset


def dataset_subjects(dataset: GazeDataset) -> list[str]:
    """The distinct subject ids of ``dataset``, sorted."""
    return sorted(set(np.asarray(dataset.subjects).astype(str).tolist()))


def leave_subjects_out(
    dataset: GazeDataset, test_subjects: str | Iterable[str]
) -> tuple[SubsetGazeDataset, SubsetGazeDataset]:
    """(train, test) views of ``dataset``: test holds every sample of ``test_subjects``, train the rest.

    Raises :class:`DatasetError` if a test subject is not in the dataset, if no test subject is given,
    or if the training part would be empty.
    """
    wanted = [test_subjects] if isinstance(test_subjects, str) else [str(s) for s in test_subjects]
    subjects = np.asarray(dataset.subjects).astype(str)
    known = dataset_subjects(dataset)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise DatasetError(
            f"unknown test subject(s) {', '.join(unknown)}; the dataset has {', '.join(known)}"
        )
    if not wanted:
        raise DatasetError("no test subjects given; name at least one subject to hold out")
    in_test = np.isin(subjects, wanted)
    if in_test.all():
        raise DatasetError(f"holding out {', '.join(sorted(set(wanted)))} leaves no subject to train on")
    return SubsetGazeDataset(dataset, np.flatnonzero(~in_test)), SubsetGazeDataset(
        dataset, np.flatnonzero(in_test)
    )


def split_subjects(subjects: Iterable[str], k: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Deal the distinct ``subjects`` into ``k`` test folds at random (deterministic in ``seed``).

    Every subject lands in exactly one fold; fold sizes differ by at most one. Each fold is sorted.
    The result does not depend on the order of ``subjects``.
    """
    distinct = sorted(set(str(s) for s in subjects))
    if not 2 <= k <= len(distinct):
        raise DatasetError(
            f"cannot make {k} subject folds from {len(distinct)} subject(s); need 2 <= k <= {len(distinct)}"
        )
    order = np.random.default_rng(seed).permutation(len(distinct))
    # Dealing round-robin from a shuffled list gives folds of size n // k or n // k + 1.
    return [tuple(sorted(distinct[i] for i in order[fold::k])) for fold in range(k)]


def subject_folds(dataset: GazeDataset, k: int, seed: int = 0) -> list[SubjectSplit]:
    """k-fold cross-validation over subjects: ``k`` splits whose test parts cover every subject once."""
    return [
        SubjectSplit(fold, *leave_subjects_out(dataset, fold))
        for fold in split_subjects(dataset_subjects(dataset), k, seed)
    ]


def leave_one_subject_out(dataset: GazeDataset) -> list[SubjectSplit]:
    """One split per subject, in sorted subject order, testing that subject alone."""
    subjects = dataset_subjects(dataset)
    if len(subjects) < 2:
        raise DatasetError(
            f"leave-one-subject-out needs at least 2 subjects, the dataset has {len(subjects)}"
        )
    return [SubjectSplit((s,), *leave_subjects_out(dataset, s)) for s in subjects]


def mpiifacegaze_protocol(dataset: GazeDataset, require_all: bool = True) -> list[SubjectSplit]:
    """The standard MPIIFaceGaze evaluation: 15 leave-one-subject-out splits, test p00 ... p14 in turn.

    The reported figure is the mean angular error over the 15 test subjects. With ``require_all``
    (default) a dataset missing any of p00-p14, or holding other subjects, is an error, since its mean
    would not be comparable with published numbers; without it, the subjects present are used.
    """
    present = dataset_subjects(dataset)
    if require_all:
        missing = [s for s in MPIIFACEGAZE_SUBJECTS if s not in present]
        extra = [s for s in present if s not in MPIIFACEGAZE_SUBJECTS]
        if missing or extra:
            problem = f"lacks {', '.join(missing)}" if missing else f"has other subjects {', '.join(extra)}"
            raise DatasetError(
                f"the MPIIFaceGaze protocol needs exactly subjects p00-p14; this dataset {problem} "
                "(pass require_all=False to use the subjects present)"
            )
    ordered = [s for s in MPIIFACEGAZE_SUBJECTS if s in present] + [
        s for s in present if s not in MPIIFACEGAZE_SUBJECTS
    ]
    if len(ordered) < 2:
        raise DatasetError(f"leave-one-subject-out needs at least 2 subjects, the dataset has {len(ordered)}")
    return [SubjectSplit((s,), *leave_subjects_out(dataset, s)) for s in ordered]
