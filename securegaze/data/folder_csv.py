"""Our own plain dataset format: a folder of face crops and one ``labels.csv``.

Format
------
A folder holds ``labels.csv`` and the images. The CSV (UTF-8, comma-separated, first line a header)
has one row per sample::

    image,subject,pitch,yaw
    faces/a/0001.png,alice,0.0523,-0.1745
    faces/b/0001.jpg,bob,-0.10,0.31

* ``image``: path of the face crop, relative to the folder of ``labels.csv`` (absolute paths work too);
  any format OpenCV reads (PNG, JPEG, BMP, TIFF...). Colour images are read as RGB, grey ones are
  repeated over three channels, an alpha channel is dropped. Crops should be normalised faces
  (docs/architecture.md section 3); they may differ in size if a ``size`` is given to resize them.
* ``subject``: any non-empty identifier of the person, used for leave-subjects-out splits.
* ``pitch``, ``yaw``: gaze in **radians**, in :mod:`securegaze.geometry`'s convention (normalised
  camera frame; positive pitch looks up, positive yaw towards the image's left). Instead, columns
  ``pitch_deg``, ``yaw_deg`` give the same angles in **degrees** (one pair or the other, not both).
  Pitch must lie within +-90 degrees and yaw within +-180 degrees.

Other columns are ignored, and so are blank lines. Labels are checked when the dataset is opened (a
missing column, an empty or non-numeric cell, an angle out of range, a missing image file are reported
with the file, line and column); images are read when a sample is accessed.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from securegaze.data.base import GazeSample, resize_images
from securegaze.data.dataset_files import sample_position, select_subjects
from securegaze.errors import DatasetError

LABELS_FILENAME = "labels.csv"
REQUIRED_COLUMNS = ("image", "subject")
RADIAN_COLUMNS = ("pitch", "yaw")
DEGREE_COLUMNS = ("pitch_deg", "yaw_deg")
#: Largest |pitch| and |yaw| accepted, degrees: beyond them a direction has another (pitch, yaw) name.
PITCH_LIMIT_DEG = 90.0
YAW_LIMIT_DEG = 180.0
_TOLERANCE_DEG = 1e-6  # so that pi/2 written with a few decimals still passes


def _csv_path(root: Path) -> Path:
    path = root / LABELS_FILENAME if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(
            f"{path}: file not found (a folder+CSV dataset needs {LABELS_FILENAME} with columns image,subject,pitch,yaw)"
        )
    return path


def _angle_columns(header: dict[str, int], path: Path) -> tuple[tuple[str, str], bool]:
    """The (pitch, yaw) column names and whether they hold degrees."""
    has_rad = [c in header for c in RADIAN_COLUMNS]
    has_deg = [c in header for c in DEGREE_COLUMNS]
    if any(has_rad) and any(has_deg):
        raise DatasetError(
            f"{path}: has both radian (pitch, yaw) and degree (pitch_deg, yaw_deg) columns; keep one pair"
        )
    if all(has_deg):
        return DEGREE_COLUMNS, True
    if all(has_rad):
        return RADIAN_COLUMNS, False
    pair = DEGREE_COLUMNS if any(has_deg) else RADIAN_COLUMNS
    missing = [c for c in pair if c not in header]
    hint = "" if any(has_deg) else " (or 'pitch_deg' and 'yaw_deg' in degrees)"
    raise DatasetError(
        f"{path}: missing column '{missing[0]}'{hint}; header must hold image,subject,pitch,yaw"
    )


def _cell(row: list[str], header: dict[str, int], column: str, path: Path, line: int) -> str:
    index = header[column]
    value = row[index].strip() if index < len(row) else ""
    if not value:
        raise DatasetError(f"{path}, line {line}, column '{column}': empty cell")
    return value


def _angle(
    row: list[str], header: dict[str, int], column: str, path: Path, line: int, degrees: bool
) -> float:
    text = _cell(row, header, column, path, line)
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}, line {line}, column '{column}': {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}, line {line}, column '{column}': {text!r} is not a finite number")
    value_deg = value if degrees else math.degrees(value)
    limit = PITCH_LIMIT_DEG if column.startswith("pitch") else YAW_LIMIT_DEG
    if abs(value_deg) > limit + _TOLERANCE_DEG:
        unit = "degrees" if degrees else f"radians ({value_deg:.1f} degrees)"
        hint = "" if degrees else "; use columns pitch_deg,yaw_deg for values in degrees"
        raise DatasetError(
            f"{path}, line {line}, column '{column}': {text} {unit} is outside +-{limit:g} degrees{hint}"
        )
    return math.radians(value_deg) if degrees else value


def read_labels(root: str | os.PathLike) -> tuple[Path, list[Path], np.ndarray, np.ndarray]:
    """Parse and check ``labels.csv``: (csv path, image paths, (N, 2) float32 radians, (N,) str subjects).

    ``root`` is the dataset folder or the CSV file itself. Raises :class:`DatasetError` naming the file,
    line and column of the first problem, or the first image file that does not exist.
    """
    path = _csv_path(Path(root))
    try:
        # utf-8-sig: spreadsheet programs often start a UTF-8 CSV with a byte-order mark.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(_numbered_rows(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(
            f"{path}: cannot be read as a UTF-8 CSV file ({' '.join(str(exc).split())})"
        ) from exc
    if not rows:
        raise DatasetError(f"{path}: empty file; expected a header line image,subject,pitch,yaw")
    _, header_cells = rows[0]
    names = [name.strip() for name in header_cells]
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path}: column '{duplicates[0]}' appears more than once in the header")
    header = {name: i for i, name in enumerate(names)}
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise DatasetError(f"{path}: missing column '{column}'; header must hold image,subject,pitch,yaw")
    (pitch_col, yaw_col), degrees = _angle_columns(header, path)

    folder = path.parent
    images: list[Path] = []
    gaze: list[tuple[float, float]] = []
    subjects: list[str] = []
    missing: list[tuple[int, Path]] = []
    for line, row in rows[1:]:
        image = folder / _cell(row, header, "image", path, line)
        subjects.append(_cell(row, header, "subject", path, line))
        gaze.append(
            (
                _angle(row, header, pitch_col, path, line, degrees),
                _angle(row, header, yaw_col, path, line, degrees),
            )
        )
        if not image.is_file():
            missing.append((line, image))
        images.append(image)
    if not images:
        raise DatasetError(f"{path}: no samples below the header")
    if missing:
        line, image = missing[0]
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise DatasetError(f"{path}, line {line}: image file {image} not found{more}")
    return path, images, np.array(gaze, dtype=np.float32), np.array(subjects, dtype=str)


def _numbered_rows(handle):
    """(line number where the row starts, cells) for every non-blank CSV row."""
    reader = csv.reader(handle)
    start = 1
    for row in reader:
        if any(cell.strip() for cell in row):
            yield start, row
        start = reader.line_num + 1  # a quoted cell may span lines; the next row starts after them


def read_image_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB image from any file OpenCV decodes; :class:`DatasetError` naming it otherwise."""
    import cv2

    try:
        # fromfile + imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"{path}: image file cannot be read ({' '.join(str(exc).split())})") from exc
    bgr = None
    if data.size:
        try:
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)  # always 8-bit, 3-channel BGR
        except cv2.error:
            bgr = None
    if bgr is None:
        raise DatasetError(f"{path}: not an image OpenCV can decode (empty, truncated or unknown format)")
    return np.ascontiguousarray(bgr[..., ::-1])  # OpenCV decodes to BGR; the library works in RGB


class FolderCsvDataset:
    """A folder + ``labels.csv`` dataset (module docstring); labels are checked at construction.

    ``root``: the folder or the CSV file. ``subjects``: subject ids to keep (default all). ``size``:
    resize every crop to ``(size, size)``. Attributes: ``subjects`` (N,) str, ``gaze`` (N, 2) float32
    (pitch, yaw) radians, ``image_paths``. Items are :class:`GazeSample` with (H, W, 3) uint8 RGB images.
    """

    def __init__(
        self, root: str | os.PathLike, subjects: Sequence[str] | None = None, size: int | None = None
    ) -> None:
        self.csv_path, paths, gaze, all_subjects = read_labels(root)
        present = list(dict.fromkeys(all_subjects.tolist()))
        keep = select_subjects(present, subjects, self.csv_path)
        mask = np.isin(all_subjects, keep)
        self.image_paths = [p for p, k in zip(paths, mask, strict=True) if k]
        self.gaze = gaze[mask]
        self.subjects = all_subjects[mask]
        self.size = size
        self._offsets = np.array([0, len(self.image_paths)])

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> GazeSample:
        _, i = sample_position(self._offsets, index)
        image = read_image_rgb(self.image_paths[i])
        if self.size is not None:
            image = resize_images(image[None], self.size)[0]
        return GazeSample(image, self.gaze[i], str(self.subjects[i]))
