"""A clean set as users have one: a plain folder of face images, with no labels.

Format
------
Any folder that is not one of the dataset layouts of :mod:`securegaze.data.readers` (no
``labels.csv``, no ``p00.h5``..., no ``subject0000.h5``...) and holds PNG or JPEG files (``*.png``,
``*.jpg``, ``*.jpeg``, any case). Subfolders are searched too, to any depth (a folder per person
works; linked files and folders are followed, each real folder once), except hidden files and
folders (names starting with ``.``, e.g. ``.DS_Store``, ``.ipynb_checkpoints``). Files are ordered by their path relative to the folder, so a draw depends
only on the folder's content and the seed, never on the file system's listing order.

Each image is read with Pillow (its EXIF orientation applied), converted to RGB (grey repeated over
three channels, alpha dropped, 16-bit grey scaled to 8 bits from the bit depth the drawn images use
together, :func:`sensor_bits`: a 12-bit camera's 0..4095 becomes 0..255), centre-cropped to a square
when it is not one, and resized to the model's input size (area interpolation when shrinking, as
every reader here). Images may differ in size; the note says what was found, how many faces were
enlarged (smaller than the input: less detail than the model expects) and the bit depth read. The
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
from securegaze.io import shown


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


def walk_folders(folder: str | os.PathLike):
    """(folder, file names) for ``folder`` and its subfolders at any depth, top down: hidden folders
    skipped, linked folders entered (each real folder once, so a link back up cannot loop)."""
    seen = {os.path.realpath(folder)}
    for here, dirs, files in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(here, d))
            if not d.startswith(".") and real not in seen:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        yield here, files


def list_images(folder: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The files under ``folder`` with one of ``suffixes`` (any case; PNG/JPEG by default), at any depth,
    linked files and folders included, hidden entries skipped, sorted by relative path."""
    root = Path(folder)
    found = [Path(here) / f for here, files in walk_folders(root) for f in files
             if not f.startswith(".") and Path(f).suffix.lower() in suffixes]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def other_files(folder: str | os.PathLike) -> Counter[str]:
    """Files under ``folder`` that :func:`list_images` skips, hidden ones aside, counted by suffix."""
    found: Counter[str] = Counter()
    for _here, files in walk_folders(folder):
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
    its relative path (the file system's bytes: UTF-8 for UTF-8 names), a NUL byte, its size as 8 bytes and its bytes. Renaming, adding,
    removing or editing an image changes it; moving the folder changes only the path.
    """
    base = Path(os.path.abspath(folder))  # absolute, links kept: a linked image's name is the link's
    files = list_images(base) if files is None else [Path(os.path.abspath(f)) for f in files]
    digest = hashlib.sha256()
    for path in files:
        data = _read_bytes(path)
        # The name's bytes as the file system has them (UTF-8 for UTF-8 names; any other name as well).
        digest.update(os.fsencode(path.relative_to(base).as_posix()) + b"\0")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return f"folder:{shown(base.resolve())} n={len(files)} sha256={digest.hexdigest()}"  # text for any name


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputFileError(f"{path}: cannot be read ({e.strerror or e})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one PNG/JPEG file, upright per its EXIF orientation; 16-bit grey scaled
    from the bit depth its values use (:func:`sensor_bits`).

    Raises :class:`InputFileError` naming the file when it cannot be decoded, and :class:`DatasetError`
    when it is under :data:`MIN_SIDE` pixels on a side.
    """
    image = _read_decoded(path)
    return _to_uint8(image, sensor_bits([float(image.max())] if image.ndim == 2 else []))


def _read_decoded(path: str | os.PathLike) -> np.ndarray:
    """The decoded image: (H, W, 3) uint8 RGB, or (H, W) float64 grey in its own units for the 16-bit and
    32-bit integer modes (``I;16``, ``I``: what 16-bit PNGs open as), or (H, W) float in [0, 1] scaled
    to 0..255 already for float grey (``F``)."""
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
                # Pillow's own conversion clips 16-bit grey and float grey at 255: those are scaled here.
                if image.mode.startswith("I;16") or image.mode == "I":
                    decoded = np.asarray(image, dtype=np.float64)
                elif image.mode == "F":
                    decoded = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
                    decoded = np.repeat(decoded[..., None], 3, axis=2)
                else:
                    decoded = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # Pillow's decoders raise many types: OSError, SyntaxError, struct.error, ...
        reason = (e.strerror if isinstance(e, OSError) and e.strerror
                  else str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise InputFileError(f"{path}: not a readable PNG/JPEG image ({reason}); remove or replace it") from None
    h, w = decoded.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise DatasetError(f"{path}: {w}x{h} px is too small for a face crop (each side needs at least "
                           f"{MIN_SIDE} px); remove it")
    return decoded


#: Bit depths a 16-bit grey image may hold (camera sensors give 10, 12 or 14 bits, stored in 16).
SENSOR_BITS = (8, 10, 12, 14, 16)


def sensor_bits(peaks: list[float]) -> int | None:
    """The bit depth a set of 16-bit grey images uses together, from each one's largest value: the
    fewest of :data:`SENSOR_BITS` that holds the largest (a 12-bit infrared camera's frames, 0..4095
    in a 16-bit PNG, are 12-bit; a full-range one 16-bit), or None for no such image. One depth for a
    whole set, so that a dark frame of a 12-bit camera is not brightened more than a light one."""
    if not peaks:
        return None
    return next((bits for bits in SENSOR_BITS if max(peaks) < 2 ** bits), 16)


def grey16_peaks(paths: list[Path]) -> list[float]:
    """The largest value of each 16-bit grey image among ``paths`` (only those are decoded: the others'
    mode is read from the header); unreadable files are left to the reading that follows."""
    from PIL import Image

    peaks = []
    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode.startswith("I;16") or image.mode == "I":
                    peaks.append(float(np.asarray(image).max()))
        except Exception:  # noqa: BLE001 - the file is read again and refused by name there
            continue
    return peaks


def _to_uint8(image: np.ndarray, bits: int | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a :func:`_read_decoded` image; grey of ``bits`` bits scaled to 0..255."""
    if image.ndim == 3:
        return image
    grey = np.clip(np.rint(image * (255.0 / (2 ** (bits or 16) - 1))), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


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
    peaks = grey16_peaks(used)
    bits = sensor_bits(peaks)
    sizes, crops, cropped, enlarged, kept = [], [], 0, 0, []
    for path in used:
        image = _to_uint8(_read_decoded(path), bits)
        sizes.append((image.shape[1], image.shape[0]))
        square = centre_square(image) if framer is None else framer(image)
        if square is None:
            continue
        cropped += framer is None and square.shape != image.shape
        enlarged += square.shape[0] < size
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
    if enlarged:  # upsampled faces carry less detail than the model was trained on
        square_note += (f"; {enlarged} enlarged: their face is smaller than the model's {size}x{size} input, "
                        "so finer detail is missing")
    if grey16 := len(peaks):
        square_note += (f"; {grey16} 16-bit grey image{'s' if grey16 > 1 else ''} holding {bits}-bit values "
                        f"(none above {2 ** bits - 1}), scaled from 0..{2 ** bits - 1} to 0..255")
    skipped = f"; {_others_text(others)} skipped" if others else ""
    if framer is None:
        note = f"clean set: {count}, resized from {_size_text(sizes)} to {size}x{size}{square_note}; no labels{skipped}"
    else:
        missed = len(sizes) - len(kept)
        left = f" ({missed} without a face found left out)" if missed else ""
        note = (f"clean set: {count} ({_size_text(sizes)}), each face {framer.description}, at {size}x{size}{left}; "
                f"no labels{skipped}")
    return ImageFolderDataset(np.stack(crops), root, files, used, note)
