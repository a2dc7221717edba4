"""Turn a data argument ("synthetic" or a path) into an in-memory dataset at a model's input size."""

from __future__ import annotations

import numpy as np

from securegaze.data.base import ArrayGazeDataset, materialize
from securegaze.errors import ConfigError, DatasetError

SYNTHETIC = "synthetic"

#: Seed offsets keep the synthetic train, validation and test sets disjoint (different identities)
#: for any user seed.
SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def load_gaze_data(spec: str, size: int, samples: int | None = None, seed: int = 0, split: str = "train",
                   subjects: list[str] | None = None, exclude_subjects: list[str] | None = None) -> ArrayGazeDataset:
    """Load ``samples`` faces of ``size`` px from ``spec``.

    ``spec == "synthetic"`` renders faces (deterministic in ``seed`` and ``split``). Anything else is
    a path to a real dataset (see :func:`securegaze.data.readers.open_dataset`); ``subjects`` /
    ``exclude_subjects`` select by subject id (leave-subjects-out), and ``samples`` draws a
    seeded random subset.
    """
    if split not in SPLIT_SEED_OFFSET:
        raise ConfigError(f"split must be one of {sorted(SPLIT_SEED_OFFSET)}, got {split!r}")
    if samples is not None and samples < 1:
        raise ConfigError(f"number of samples must be >= 1, got {samples}")
    if spec == SYNTHETIC:
        from securegaze.data.synthetic import render_dataset

        return render_dataset(samples or 1000, size=size, seed=seed + SPLIT_SEED_OFFSET[split])

    from securegaze.data.readers import open_dataset

    dataset = open_dataset(spec)
    all_subjects = np.asarray(dataset.subjects).astype(str)
    keep = np.ones(len(all_subjects), bool)
    for name, wanted in (("--subjects", subjects), ("--exclude-subjects", exclude_subjects)):
        if wanted:
            unknown = sorted(set(wanted) - set(all_subjects))
            if unknown:
                raise DatasetError(f"{spec}: {name} names unknown subjects {unknown}; it has {sorted(set(all_subjects))}")
    if subjects:
        keep &= np.isin(all_subjects, subjects)
    if exclude_subjects:
        keep &= ~np.isin(all_subjects, exclude_subjects)
    indices = np.flatnonzero(keep)
    if len(indices) == 0:
        raise DatasetError(f"{spec}: no samples left after subject selection")
    if samples is not None and samples < len(indices):
        rng = np.random.default_rng([seed, SPLIT_SEED_OFFSET[split]])
        indices = np.sort(rng.choice(indices, size=samples, replace=False))
    return materialize(dataset, size=size, indices=indices)
