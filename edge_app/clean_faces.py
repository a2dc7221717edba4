"""Clean faces from photos: a start-up check's image folder read the way the app reads a frame.

The start-up check scans the model on clean faces (``--clean FOLDER``, ``integrity.clean``). A
folder may hold face crops, each image mostly face, which are resized to the model's input as
``securegaze scan`` reads them; or photos and camera frames in which the face is a small part of
the picture (a driver in the cabin, a portrait with background). Resized whole, such an image shows
the model a small face in a large scene, nothing like the crops the app gives it while driving,
and a scan on such inputs says little about the model.

So the app first looks at the folder (:mod:`securegaze.data.face_share`: the median width of the
face's landmarks over the image's width, on the first 8 images in name order). When the face is
narrower than half its image, the folder is read as photos: in each image drawn for the scan the
face is found, its head pose fitted and the face normalised exactly as the pipeline does for a
still frame (the same face stage, driver choice, camera approximation from the image size and
normalisation settings), at the model's input size; an image without a face is left out and
counted.

The audit key of a folder read as photos says so (``framing=face-stage``), so a record made on the
resized photos is never taken for one made on their faces.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_app.driver_select import DriverSelector, face_box
from edge_app.face import FaceMeshStage
from edge_app.head_pose import CameraIntrinsics, estimate_head_pose
from edge_app.image_files import write_png
from edge_app.normalisation import normalise_face
from securegaze.data.face_share import enlarged
from securegaze.io import shown

#: What the audit key and the notes call the photos' reading.
FRAMING = "face-stage"


class FaceStageFramer:
    """Cuts the face out of a photo as the app's pipeline does for a still frame (module docstring):
    ``framer(rgb)`` -> (S, S, 3) RGB normalised crop at ``size``, or None when no face is found.
    ``config``: the app's :class:`~edge_app.config.EdgeConfig`."""

    description = "found and normalised by the app's face stage, as a camera frame is"

    def __init__(self, config, size: int) -> None:
        f = config.face
        self.size = int(size)
        self.config = config
        self.stage = FaceMeshStage(True, f.min_detection_confidence, f.min_tracking_confidence,
                                   f.min_face_width_px, f.max_faces)
        self.selector = DriverSelector(config.driver_selection, config.cabin.drive_side, config.camera.mirrored)

    def _face(self, bgr: np.ndarray):
        faces = self.stage.detect_all(bgr, fresh=True)
        choice = self.selector.pick_still([face_box(face.points_px) for face in faces], bgr.shape[1])
        return None if choice.index is None else faces[choice.index]

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        bgr = enlarged(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        face = self._face(bgr)
        if face is None:
            return None
        h, w = bgr.shape[:2]
        camera = CameraIntrinsics.approximate(w, h)
        pose = estimate_head_pose(face.points_px, camera)
        if pose.face_centre_mm[2] <= 0:  # the fit failed: no face to normalise
            return None
        return normalise_face(bgr, pose.face_centre_mm, pose.rotation, camera.matrix, self.size,
                              self.config.normalisation)[1]

    def close(self) -> None:
        self.stage.close()


def folder_framing(folder: str | Path) -> tuple[str | None, str]:
    """(:data:`FRAMING` when ``folder`` holds photos rather than face crops, else None; one line saying
    what the look found: :func:`securegaze.data.face_share.folder_face_share`)."""
    from securegaze.data.face_share import folder_face_share

    share = folder_face_share(folder)
    return (FRAMING if share.photos else None), share.describe()


def write_face_crops(source, out: Path, config, size: int) -> tuple[int, int, list[str]]:
    """The face of every frame of ``source`` (an opened :class:`~edge_app.sources.FrameSource`), as
    the app normalises it, written to the new folder ``out`` as PNG at ``size`` px: a clean set for
    ``securegaze scan --clean``. An image folder's crops keep the images' names and subfolders
    (``sub/a.jpg`` -> ``OUT/sub/a.png``; the file name's bytes as they are). Written into a hidden
    folder beside ``out`` and renamed onto it at the end, so ``out`` is either whole or as it was
    (also when no face was found at all).
    -> (crops written, frames read, names of the frames without a face, odd bytes escaped)."""
    import shutil
    import tempfile

    files, root = getattr(source, "files", None), getattr(source, "root", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    framer = FaceStageFramer(config, size)
    written, frames, missed = 0, 0, []
    try:
        while (frame := source.read()) is not None:
            frames += 1
            name = Path(f"frame{frame.index:06d}")
            if files is not None:  # the image's name, under its subfolder (relative to the folder read)
                path = Path(files[frame.index])
                name = path.relative_to(root).with_suffix("") if root is not None else Path(path.stem)
            crop = framer(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))
            if crop is None:
                missed.append(shown(name))
                continue
            target = work / name.parent / f"{name.name}.png"
            if target.exists():  # a.jpg beside a.png: the second keeps its frame number too
                target = target.with_name(f"{name.name}-{frame.index}.png")
            target.parent.mkdir(parents=True, exist_ok=True)
            write_png(target, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            written += 1
        if not written:  # nothing to keep: ``out`` is left as it was
            shutil.rmtree(work)
            return written, frames, missed
        if out.exists():  # an empty folder, checked by the caller
            out.rmdir()
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        framer.close()
    return written, frames, missed
