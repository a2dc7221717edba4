"""Image files as the edge app reads them: which files a folder holds, their pixels, their names.

OpenCV takes a path as a UTF-8 string. A file name that is not valid UTF-8 (Latin-1 bytes from an
old zip or a Windows share: ``b"caf\\xe9.png"``, which Python holds as ``"caf\\udce9.png"``) makes
``cv2.imread`` and ``cv2.haveImageReader`` crash the process (a segmentation fault, nothing printed).
So an image is read as bytes in Python and decoded with ``cv2.imdecode`` (:func:`read_image`), a
crop is encoded with ``cv2.imencode`` and written by Python (:func:`write_png`), and a path OpenCV
cannot take at all (a video file) is found out first (:func:`opencv_path`). Such a name prints with
its odd bytes escaped (:func:`securegaze.io.shown`: ``caf\\xe9.png``), so a line that names it never raises.

A folder's images are the files with a suffix of :data:`IMAGE_SUFFIXES` (any case), hidden entries
(a leading dot: ``.DS_Store``, macOS ``._name.jpg``) skipped: either its own files in name order
(:func:`folder_images`), or those of its subfolders too, found as ``securegaze scan --clean`` finds
them (:func:`tree_images`). Names print through :func:`securegaze.io.shown`.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from securegaze.data.image_folder import list_images, walk_folders
from securegaze.errors import InputFileError
from securegaze.io import shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def opencv_path(path: str | os.PathLike) -> str | None:
    """``path`` as OpenCV takes it, or None when its name is not valid UTF-8 (OpenCV would crash on it)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR of an image file, as ``cv2.imread(path, cv2.IMREAD_COLOR)`` gives it, read
    through bytes (any file name); None when the file cannot be read or does not decode."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if not data.size:
        return None
    try:
        return cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        return None


def looks_like_image(path: str | os.PathLike) -> bool:
    """Whether OpenCV recognises an image format in the file's header (``cv2.haveImageReader``). A name
    OpenCV cannot take is decoded whole instead: for such a file, pixels cut short fail here too."""
    text = opencv_path(path)
    if text is not None:
        return bool(cv2.haveImageReader(text))
    return read_image(path) is not None


def write_png(path: Path, bgr: np.ndarray) -> None:
    """``bgr`` as a PNG file at ``path`` (any file name); OSError when it cannot be written."""
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"{shown(path)}: OpenCV could not encode the image as PNG")
    path.write_bytes(data.tobytes())


def is_image_name(path: Path) -> bool:
    """An image suffix of :data:`IMAGE_SUFFIXES` (any case) on a name that is not hidden."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def listing(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; InputFileError when it cannot be listed."""
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise InputFileError(f"{shown(folder)}: cannot list the folder ({e.strerror or e})") from None


def folder_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` itself (not its subfolders), in name order."""
    return [p for p in listing(folder) if is_image_name(p) and (p.is_file() or p.is_symlink())]


def tree_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` and its subfolders at any depth, as ``securegaze scan --clean``
    finds them (:func:`securegaze.data.image_folder.list_images`: hidden entries skipped, linked folders
    entered once, ordered by the path relative to ``folder``), with this module's suffixes."""
    listing(folder)  # a folder that cannot be listed fails with one line, as os.walk would say nothing
    return list_images(folder, IMAGE_SUFFIXES)


def holds_images(folder: Path) -> bool:
    """Whether ``folder`` or a subfolder of it, at any depth, holds an image file."""
    return any(any(is_image_name(Path(f)) for f in files) for _here, files in walk_folders(folder))


def subfolder_images(folder: Path) -> tuple[int, list[str]]:
    """(how many image files the subfolders of ``folder`` hold at any depth, the subfolders that hold
    them as paths relative to ``folder``, in name order): what :func:`folder_images` leaves out."""
    count, where = 0, []
    for here, files in walk_folders(folder):
        held = sum(1 for f in files if is_image_name(Path(f)))
        if held and Path(here) != folder:
            count += held
            where.append(Path(here).relative_to(folder).as_posix())
    return count, sorted(where)


def subfolder_note(folder: Path) -> str | None:
    """One line on the images in subfolders of ``folder`` that a top-level reading leaves out, e.g.
    ``16 images in 2 subfolders not read: sub, sub/deeper``; None when there are none."""
    count, where = subfolder_images(folder)
    if not count:
        return None
    images, folders = f"image{'s' if count > 1 else ''}", f"subfolder{'s' if len(where) > 1 else ''}"
    return f"{count} {images} in {len(where)} {folders} not read: {names_text([shown(w) for w in where])}"


def names_text(names: list[str], most: int = 3) -> str:
    """Up to ``most`` of ``names`` joined by commas, ``, ...`` when there are more."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")
