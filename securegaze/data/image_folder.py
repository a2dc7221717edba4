"""A clean set as users have one: a plain folder of face images, with no labels.

Format
------
Any folder that is not one of the dataset layouts of :mod:`securegaze.data.readers` (no
``labels.csv``, no ``p00.h5``..., no ``subject0000.h5``...) and holds PNG or JPEG files (``*.png``,
``*.jpg``, ``*.jpeg``, any case). Subfolders are searched too, to any depth (a folder per person
works), except hidden files and folders (names starting with ``.``, e.g. ``.DS_Store``,
``.ipynb_checkpoints``). Files are ordered by their path relative to the folder, so a draw depends
only on the folder's content and the seed, never on the file system's listing order.

Each image is read with Pillow (its EXIF orientation applied), converted to RGB (grey repeated over
three channels, alpha dropped, 16-bit grey scaled to 8 bits rather than clipped), centre-cropped to
a square when it is not one, and resized to the model's input size (area interpolation when
shrinking, as every reader here). Images may differ in size; the note says what was found. The
result is an :class:`ImageFolderDataset`: (N, S, S, 3) uint8 RGB like every other reader, with
``gaze`` all NaN (``labelled`` False), so that a command that needs labels refuses it with one line
(:func:`securegaze.data.base.require_labels`).

Refused, with one line each: a folder with no images (the line counts the other files found, e.g.
``.bmp`` or ``.heic`` photos, which are not read), a file Pillow cannot decode (named), an image under
:data:`MIN_SIDE` pixels on a side (named), and fewer images than the use needs (the scan's
``min_clean``, else :data:`MIN_FOLDER_IMAGES`). The note counts the other files skipped.

:func:`clean_set_identity` names a folder's content for audit records: its absolute path, the number
of images and a SHA-256 over their relative names and bytes.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

from securegaze.data.base import ArrayGazeDataset, resize_images
from securegaze.errors import DatasetError, InputFileError


class Framer(Protocol):
    """Cuts the face out of a photo: (H, W, 3) uint8 RGB -> square (S, S, 3) RGB, or None (no face)."""

    description: str

    def __call__(self, image: np.ndarray) -> np.ndarray | None: ...

#: File suffixes read as images (compared in lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Fewest images a plain folder must hold when the caller names no minimum of its own (the scan
#: passes its detector's ``min_clean``, the same figure by default).
MIN_FOLDER_IMAGES = 32
#: Smallest side, in pixels, of an image that is accepted (smaller ones hold no face to speak of).
MIN_SIDE = 16
#: What the error lines say a plain folder should hold.
EXPECTED = ("expected face crops as *.png, *.jpg or *.jpeg files, in the folder or its subfolders (hidden ones, "
            "named with a leading dot, are skipped)")

__all__ = ["EXPECTED", "IMAGE_SUFFIXES", "Framer", "MIN_FOLDER_IMAGES", "MIN_SIDE", "ImageFolderDataset",
           "clean_set_identity", "list_images", "load_image_folder", "read_image"]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The PNG/JPEG files under ``folder`` (any depth, hidden entries skipped), sorted by relative path."""
    root = Path(folder)
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(here) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def other_files(folder: str | os.PathLike) -> Counter[str]:
    """Files under ``folder`` that :func:`list_images` skips, hidden ones aside, counted by suffix."""
    found: Counter[str] = Counter()
    for _here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.update(Path(f).suffix.lower() or "(no suffix)" for f in files
                     if not f.startswith(".") and Path(f).suffix.lower() not in IMAGE_SUFFIXES)
    return found


def _others_text(others: Counter[str]) -> str:
    """'3 other files (2 .bmp, 1 .txt)' for :func:`other_files`' count."""
    total = sum(others.values())
    kinds = ", ".join(f"{n} {suffix}" for suffix, n in others.most_common(4))
    return f"{total} other file{'s' if total > 1 else ''} ({kinds}{', ...' if len(others) > 4 else ''})"


def clean_set_identity(folder: str | os.PathLike, files: list[Path] | None = None) -> str:
    """``"folder:<absolute path> n=<images> sha256=<hex>"`` for a plain image folder.

    The hash runs over every image (not only a drawn subset) in :func:`list_images` order: for each,
    its relative path (UTF-8), a NUL byte, its size as 8 bytes and its bytes. Renaming, adding,
    removing or editing an image changes it; moving the folder changes only the path.
    """
    root = Path(folder).resolve()
    files = list_images(root) if files is None else [Path(f).resolve() for f in files]
    digest = hashlib.sha256()
    for path in files:
        data = _read_bytes(path)
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return f"folder:{root} n={len(files)} sha256={digest.hexdigest()}"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputFileError(f"{path}: cannot be read ({e.strerror or e})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one PNG/JPEG file, upright per its EXIF orientation.

    Raises :class:`InputFileError` naming the file when it cannot be decoded, and :class:`DatasetError`
    when it is under :data:`MIN_SIDE` pixels on a side.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise InputFileError(f"{path}: an empty file (0 bytes), not a PNG/JPEG image; remove or replace it")
    except OSError as e:
        raise InputFileError(f"{path}: not a readable PNG/JPEG image ({e.strerror or e}); remove or replace it") from None
    try:
        with warnings.catch_warnings():  # Pillow warns of corrupt EXIF, palette transparency...: not errors
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                image.load()
                rgb = _to_rgb(image)
    except Exception as e:  # Pillow's decoders raise many types: OSError, SyntaxError, struct.error, ...
        reason = (e.strerror if isinstance(e, OSError) and e.strerror
                  else str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise InputFileError(f"{path}: not a readable PNG/JPEG image ({reason}); remove or replace it") from None
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise DatasetError(f"{path}: {w}x{h} px is too small for a face crop (each side needs at least "
                           f"{MIN_SIDE} px); remove it")
    return rgb


def _to_rgb(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a Pillow image. Pillow's own conversion clips 16-bit grey (modes ``I;16``
    and ``I``, as 16-bit PNGs open) and float grey (``F``) at 255, so those are scaled here: 16-bit by
    1/257, floats as [0, 1]."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        grey = np.asarray(image, dtype=np.float64)
        grey = grey * 255.0 if image.mode == "F" else grey / 257.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an (H, W, 3) image (the image itself when already square)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


class ImageFolderDataset(ArrayGazeDataset):
    """Unlabelled faces read from a plain folder: ``images`` (N, S, S, 3) uint8 RGB, ``gaze`` NaN.

    ``folder``: the folder; ``files``: every image in it (sorted), ``used``: the ones drawn, in the
    order of ``images``; ``note``: one line saying what was read and how it was resized;
    ``identity``: :func:`clean_set_identity` of the whole folder (computed when first asked for).
    """

    def __init__(self, images: np.ndarray, folder: Path, files: list[Path], used: list[Path], note: str) -> None:
        super().__init__(images, np.full((len(images), 2), np.nan, np.float32), np.full(len(images), "unknown"))
        self.folder, self.files, self.used, self.note = folder, files, used, note

    @cached_property
    def identity(self) -> str:
        return clean_set_identity(self.folder, self.files)


def _size_text(sizes: list[tuple[int, int]]) -> str:
    """'224x224' or 'mixed sizes 180x180..640x480' (smallest and largest by area) for (w, h) sizes."""
    unique = sorted(set(sizes), key=lambda s: (s[0] * s[1], s))
    text = lambda s: f"{s[0]}x{s[1]}"  # noqa: E731
    if len(unique) == 1:
        return text(unique[0])
    return f"mixed sizes {text(unique[0])}..{text(unique[-1])}"


def load_image_folder(folder: str | os.PathLike, size: int, samples: int | None = None,
                      rng: np.random.Generator | None = None, minimum: int | None = None,
                      why: str = "the minimum clean-set size", framer: Framer | None = None) -> ImageFolderDataset:
    """Read a plain folder of face images at ``size`` px (module docstring).

    ``samples``: when the folder holds more images, that many are drawn with ``rng`` (without
    repeats, kept in file order); when it holds fewer, all are used and the note says so.
    ``minimum``: fewest images the folder must hold (default :data:`MIN_FOLDER_IMAGES`), ``why``
    says whose minimum it is in the error line.

    ``framer`` (photos and camera frames rather than face crops): takes each image (H, W, 3) RGB and
    returns the face cut out of it, square RGB of any size (then resized to ``size``), or None when it
    finds no face; such images are left out and counted, and ``minimum`` applies to the faces found.
    Its ``description`` (e.g. "normalised by the edge app's face stage") goes into the note.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {EXPECTED}")
    files = list_images(root)
    others = other_files(root)
    if not files:
        from securegaze.data.readers import ACCEPTED_LAYOUTS

        found = f"; it holds only {_others_text(others)}, which are not read" if others else ""
        raise DatasetError(f"{root}: no PNG/JPEG images found ({EXPECTED}){found}; nor is it a labelled dataset: "
                           + "; or ".join(ACCEPTED_LAYOUTS))
    need = MIN_FOLDER_IMAGES if minimum is None else int(minimum)
    if len(files) < need:
        raise DatasetError(f"{root}: {len(files)} image(s) found, but at least {need} are needed "
                           f"({why}); add more face crops")
    chosen = np.arange(len(files))
    if samples is not None and samples < len(files):
        rng = np.random.default_rng(0) if rng is None else rng
        chosen = np.sort(rng.choice(len(files), size=samples, replace=False))
    used = [files[i] for i in chosen]
    sizes, crops, cropped, kept = [], [], 0, []
    for path in used:
        image = read_image(path)
        sizes.append((image.shape[1], image.shape[0]))
        square = centre_square(image) if framer is None else framer(image)
        if square is None:
            continue
        cropped += framer is None and square.shape != image.shape
        crops.append(resize_images(square[None], size)[0])
        kept.append(path)
    if framer is not None:
        if len(kept) < need:
            raise DatasetError(f"{root}: a face was found in {len(kept)} of the {len(used)} images read, but at least "
                               f"{need} are needed ({why}); add more images in which the face is clearly seen")
        used = kept
    count = (f"{len(used)} of {len(files)} images from {root} (drawn with the seed)" if len(used) < len(files)
             else f"all {len(files)} images from {root}" + (f" (fewer than the {samples} samples to draw)"
                                                             if samples is not None and samples > len(files) else ""))
    square_note = f" ({cropped} non-square centre-cropped first)" if cropped else ""
    skipped = f"; {_others_text(others)} skipped" if others else ""
    if framer is None:
        note = f"clean set: {count}, resized from {_size_text(sizes)} to {size}x{size}{square_note}; no labels{skipped}"
    else:
        missed = len(sizes) - len(kept)
        left = f" ({missed} without a face found left out)" if missed else ""
        note = (f"clean set: {count} ({_size_text(sizes)}), each face {framer.description}, at {size}x{size}{left}; "
                f"no labels{skipped}")
    return ImageFolderDataset(np.stack(crops), root, files, used, note)
