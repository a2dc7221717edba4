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

An image under :data:`ENLARGE_BELOW` px on a side is enlarged first (the face mesh finds no face
in a 32-48 px crop as it is); an image in which no face is found does not count, and a folder in
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
#: Smaller images are enlarged to at least twice this before the face mesh looks at them.
ENLARGE_BELOW = 64

__all__ = ["LOOK", "PHOTO_FACE_WIDTH", "FaceShare", "folder_face_share", "photo_warning"]


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


def _share(mesh, rgb: np.ndarray) -> float | None:
    import cv2

    short = min(rgb.shape[:2])
    if short < ENLARGE_BELOW:
        factor = -(-2 * ENLARGE_BELOW // short)
        rgb = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    found = mesh.process(np.ascontiguousarray(rgb)).multi_face_landmarks
    if not found:
        return None
    xs = [p.x for p in found[0].landmark]
    return float(max(xs) - min(xs))  # landmarks are in image widths


def folder_face_share(folder: str | os.PathLike, files: list[Path] | None = None) -> FaceShare:
    """:class:`FaceShare` of the first :data:`LOOK` images of ``folder`` (``files``: its listing)."""
    import mediapipe as mp

    from securegaze.data.image_folder import list_images, read_image

    files = (list_images(folder) if files is None else files)[:LOOK]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        return FaceShare([_share(mesh, read_image(path)) for path in files])


def photo_warning(share: FaceShare, folder: str | os.PathLike) -> str | None:
    """The scan's warning line for a folder of photos, else None."""
    if not share.photos:
        return None
    return (f"{folder}: {share.describe()}; the model sees each whole picture resized, a small face in a large "
            f"scene, and the scan's figures are weak on that. Cut the faces out first: edge-app crops {folder} "
            "--out FACES, then --clean FACES")
