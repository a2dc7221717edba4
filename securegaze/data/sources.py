"""Turn a data argument ("synthetic", "synthetic:STYLE" or a path) into an in-memory dataset at a model's input size.

``synthetic`` renders the ``standard`` renderer style; ``synthetic:STYLE`` another registered style
(:data:`securegaze.data.synthetic.STYLES`, e.g. ``synthetic:face_centred``, the framing the edge app's
normalisation gives); ``synthetic:STYLE+COND+...`` adds cabin conditions
(:data:`securegaze.data.synthetic.conditions.CONDITIONS`, e.g. ``synthetic:standard+sunglasses_dark+night_ir``)
to every face, and ``synthetic:STYLE+mix:NAME`` draws each face's conditions from a named mix
(:data:`securegaze.data.synthetic.condition_names.CONDITION_MIXES`, e.g. ``synthetic:face_centred+mix:cabin``).

A path is a labelled dataset layout (:func:`securegaze.data.readers.detect_layout`) or, when it is a
folder with none of the layouts' markers, a plain folder of unlabelled face images
(:mod:`securegaze.data.image_folder`): :func:`source_kind` tells which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from securegaze.data.base import ArrayGazeDataset, materialize, unlabelled_error
from securegaze.errors import ConfigError, DatasetError

SYNTHETIC = "synthetic"
#: A data argument's ``+mix:NAME`` part names a condition mix.
MIX_PREFIX = "mix:"
IMAGE_FOLDER = "image_folder"
DATASET = "dataset"

#: Seed offsets keep the synthetic train, validation and test sets disjoint (different identities)
#: for any user seed.
SPLIT_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


def synthetic_spec_style(spec: str) -> str | None:
    """The renderer style a synthetic data argument names (``"synthetic"``: ``"standard"``;
    ``"synthetic:STYLE"`` or ``"synthetic:STYLE+COND+..."``: STYLE, checked against the registered styles,
    and the conditions checked too), None for anything else."""
    if spec == SYNTHETIC:
        return "standard"
    if not spec.startswith(SYNTHETIC + ":"):
        return None
    from securegaze.data.synthetic import STYLES

    style = spec[len(SYNTHETIC) + 1:].split("+")[0]
    synthetic_spec_conditions(spec)
    synthetic_spec_mix(spec)
    if style not in STYLES.names():
        raise ConfigError(f"data {spec!r}: unknown renderer style {style!r}; expected synthetic or synthetic:STYLE "
                          f"with STYLE one of {', '.join(STYLES.names())}")
    return style


def synthetic_spec_conditions(spec: str) -> tuple[str, ...]:
    """The cabin conditions a ``"synthetic:STYLE+COND+..."`` data argument names (checked), () for none."""
    if not spec.startswith(SYNTHETIC + ":"):
        return ()
    from securegaze.data.synthetic.condition_names import check_conditions

    names = tuple(n for n in spec[len(SYNTHETIC) + 1:].split("+")[1:] if not n.startswith(MIX_PREFIX))
    try:
        return check_conditions(names)
    except ConfigError as exc:
        raise ConfigError(f"data {spec!r}: {exc}") from None


def synthetic_spec_mix(spec: str) -> str | None:
    """The condition mix a ``"synthetic:STYLE+mix:NAME"`` data argument names (checked), None for none."""
    if not spec.startswith(SYNTHETIC + ":"):
        return None
    from securegaze.data.synthetic.condition_names import check_mix

    mixes = [n[len(MIX_PREFIX):] for n in spec[len(SYNTHETIC) + 1:].split("+")[1:] if n.startswith(MIX_PREFIX)]
    try:
        if len(mixes) > 1:
            raise ConfigError(f"give one condition mix at most, got {', '.join(mixes)}")
        if mixes:
            check_mix(mixes[0])
        if mixes and synthetic_spec_conditions(spec):
            raise ConfigError("give cabin conditions or a condition mix, not both")
    except ConfigError as exc:
        raise ConfigError(f"data {spec!r}: {exc}") from None
    return mixes[0] if mixes else None


def source_kind(spec: str) -> str:
    """``"synthetic"`` (also ``synthetic:STYLE``), ``"image_folder"`` (a folder with none of the
    dataset layouts' markers) or ``"dataset"`` (anything else, including paths that do not exist:
    the reader reports those)."""
    if synthetic_spec_style(spec) is not None:
        return SYNTHETIC
    path = Path(spec)
    if not path.is_dir():
        return DATASET
    from securegaze.data.readers import detect_layout

    try:
        detect_layout(path)
    except DatasetError:
        return IMAGE_FOLDER
    return DATASET


def load_gaze_data(spec: str, size: int, samples: int | None = None, seed: int = 0, split: str = "train",
                   subjects: list[str] | None = None, exclude_subjects: list[str] | None = None, *,
                   need_labels: str | None = "this command", min_images: int | None = None,
                   min_reason: str = "the minimum clean-set size", workers: int = 1,
                   framer=None) -> ArrayGazeDataset:
    """Load ``samples`` faces of ``size`` px from ``spec``.

    ``spec == "synthetic"`` (or ``"synthetic:STYLE"``) renders faces (deterministic in ``seed`` and ``split``). A path is a real
    dataset (see :func:`securegaze.data.readers.open_dataset`); ``subjects`` / ``exclude_subjects``
    select by subject id (leave-subjects-out), and ``samples`` draws a seeded random subset.

    A plain folder of images (:func:`source_kind`) gives an unlabelled
    :class:`~securegaze.data.image_folder.ImageFolderDataset` (with its ``note``), drawn the same
    seeded way; it is refused in one line when ``need_labels`` (what needs the labels, e.g.
    ``"securegaze evaluate"``; None: labels unused) is set, and when it holds fewer than
    ``min_images`` images (``min_reason`` says whose minimum that is). ``workers``: processes that
    render synthetic faces (the same bytes whatever the number). ``framer``: for a plain folder of
    photos, what cuts each face out (:func:`securegaze.data.image_folder.load_image_folder`).
    """
    if split not in SPLIT_SEED_OFFSET:
        raise ConfigError(f"split must be one of {sorted(SPLIT_SEED_OFFSET)}, got {split!r}")
    if samples is not None and samples < 1:
        raise ConfigError(f"number of samples must be >= 1, got {samples}")
    kind = source_kind(spec)
    if kind == SYNTHETIC:
        from securegaze.data.synthetic import render_dataset, synthetic_style

        config = synthetic_style(synthetic_spec_style(spec), size=size, conditions=synthetic_spec_conditions(spec),
                                 condition_mix=synthetic_spec_mix(spec))
        return render_dataset(samples or 1000, seed=seed + SPLIT_SEED_OFFSET[split], config=config, workers=workers)
    if kind == IMAGE_FOLDER:
        return _image_folder(spec, size, samples, seed, split, bool(subjects or exclude_subjects), need_labels,
                             min_images, min_reason, framer)

    from securegaze.data.readers import open_dataset

    if need_labels is None and not Path(spec).is_dir():  # a clean set: a plain folder would do too
        from securegaze.data.image_folder import EXPECTED, IMAGE_SUFFIXES

        if Path(spec).suffix.lower() in IMAGE_SUFFIXES:
            raise DatasetError(f"{spec}: a single image; a clean set is a folder of them ({EXPECTED})")
        if not Path(spec).exists():
            raise DatasetError(f"{spec}: no such file or folder; expected 'synthetic', a folder of face images "
                               f"({EXPECTED}) or a labelled dataset")
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


def _image_folder(spec: str, size: int, samples: int | None, seed: int, split: str, by_subject: bool,
                  need_labels: str | None, min_images: int | None, min_reason: str, framer=None) -> ArrayGazeDataset:
    from securegaze.data.image_folder import list_images, load_image_folder

    if need_labels is not None and list_images(spec):  # an empty folder gets the "no images" line instead
        raise unlabelled_error(f"{spec} (a plain image folder)", need_labels)
    if by_subject:
        raise ConfigError(f"{spec}: a plain image folder has no subject ids to select by "
                          "(--subjects / --exclude-subjects need a labelled dataset)")
    rng = np.random.default_rng([seed, SPLIT_SEED_OFFSET[split]])
    return load_image_folder(spec, size, samples, rng, minimum=min_images, why=min_reason, framer=framer)
