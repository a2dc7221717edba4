"""How much of its image a face fills: face crops told from photos in a plain image folder.

A gaze model reads face crops. A clean set of photos or camera frames (a driver in the cabin, a
portrait with background), resized whole, shows it a small face in a large scene, and a scan on
such inputs says little. :func:`folder_face_share` runs MediaPipe Face Mesh (static images; the
graph ships inside the mediapipe wheel) on the first :data:`LOOK` images of a folder, in name
order, and takes the median width of the face's landmarks over the image's width. Below
:data:`PHOTO_FACE_WIDTH` the folder holds photos: ``securegaze scan`` warns and names
``edge-app crops``; the edge app's start-up check reads such a folder through its face stage
(``edge_app/clean_faces.py``). Measured: face crops of the renderer's styles 0.67-0.88 (12 faces
each of the standard, studio and face-centred styles at 64 and 128 px), a cabin frame of the
synthetic driver 0.19, the scikit-image astronaut portrait 0.18.

An image under :data:`ENLARGE_BELOW` px on a side is enlarged first (:func:`enlarged`); an image in which no face is found does not count, and a folder in
which none is found is taken for face crops (nothing to cut out).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: A folder whose median face is narrower than this share of its image width holds photos.
PHOTO_FACE_WIDTH = 0.5
#: Images looked at (the first ones in name order, the same on every run).
LOOK = 8
#: An image whose shorter side is under ENLARGE_BELOW px is enlarged (bicubic, by the smallest whole
#: factor that brings it to ENLARGE_TO) before the face mesh looks at it: MediaPipe finds no face in a
#: small face crop (40 crops of the renderer's faces: none found at 32, 40 and 48 px, 11 at 56 px, all 40
#: at 64, 80 and 96 px; enlarged so, 119 of the 120 crops of 32-48 px and 40 of 40 at 56 px). The edge
#: app's face stage enlarges its still frames by the same rule (:func:`enlarged`).
ENLARGE_BELOW, ENLARGE_TO = 64, 128

__all__ = ["ENLARGE_BELOW", "ENLARGE_TO", "LOOK", "PHOTO_FACE_WIDTH", "FaceShare", "enlarged", "folder_face_share",
           "photo_warning"]


class FaceShare:
    """The median face width share of a folder's first images (``median`` None: no face found)."""

    def __init__(self, shares: list[float | None]) -> None:
        self.looked = len(shares)
        found = [s for s in shares if s is not None]
        self.found = len(found)
        self.median = float(np.median(found)) if found else None

    @property
    def photos(self) -> bool:
        return self.median is not None and self.median < PHOTO_FACE_WIDTH

    def describe(self) -> str:
        if self.median is None:
            return f"no face found in the first {self.looked} images: read as face crops"
        where = f"median of {self.found} of the first {self.looked} images"
        if self.photos:
            return (f"the face spans {self.median:.0%} of the image width ({where}; under {PHOTO_FACE_WIDTH:.0%}): "
                    "photos, not face crops")
        return f"the face spans {self.median:.0%} of the image width ({where}): face crops"


def enlarged(image: np.ndarray) -> np.ndarray:
    """``image`` enlarged for the face mesh when it is small (:data:`ENLARGE_BELOW`), else itself."""
    import cv2

    short = min(image.shape[:2])
    if short >= ENLARGE_BELOW:
        return image
    factor = -(-ENLARGE_TO // short)
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)


def _share(mesh, rgb: np.ndarray) -> float | None:
    found = mesh.process(np.ascontiguousarray(enlarged(rgb))).multi_face_landmarks
    if not found:
        return None
    xs = [p.x for p in found[0].landmark]
    return float(max(xs) - min(xs))  # landmarks are in image widths


def folder_face_share(folder: str | os.PathLike, files: list[Path] | None = None) -> FaceShare:
    """:class:`FaceShare` of the first :data:`LOOK` images of ``folder`` (``files``: its listing)."""
    import mediapipe as mp

    from securegaze.data.image_folder import list_images, read_image
    from securegaze.native_log import quiet_native_start

    files = (list_images(folder) if files is None else files)[:LOOK]
    with quiet_native_start(), mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        return FaceShare([_share(mesh, read_image(path)) for path in files])


def photo_warning(share: FaceShare, folder: str | os.PathLike) -> str | None:
    """The scan's warning line for a folder of photos, else None."""
    if not share.photos:
        return None
    return (f"{folder}: {share.describe()}; the model sees each whole picture resized, the face only part of "
            f"it, and the scan's figures are weak on that. Cut the faces out first: edge-app crops {folder} "
            "--out FACES, then --clean FACES")
