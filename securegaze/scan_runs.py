"""Scan or mitigate one model file: what ``securegaze scan`` and ``securegaze mitigate`` run.

Each run is prepared first (the model opened, the images drawn, the detector built, an earlier scan
checked), so that bad input fails before the long part starts, and then run with a progress
callback. The model file is read through :func:`securegaze.bundle.open_model`; the original is never
written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from securegaze.bench.mitigation import MitigationReport, load_earlier_scan, mitigate_and_measure
from securegaze.bench.mitigation_methods import mitigate_with
from securegaze.bundle import BundleManifest, ModelFile, export_bundle, open_model
from securegaze.data.base import ArrayGazeDataset
from securegaze.data.image_folder import MIN_FOLDER_IMAGES, ImageFolderDataset
from securegaze.data.sources import load_gaze_data
from securegaze.defense import ScanReport, create_detector
from securegaze.defense.inputs import add_input_check, check_gaze_plausible
from securegaze.errors import InputFileError
from securegaze.io import atomic_write_json


def detector_settings(seed: int, threshold: float | None = None, settings: dict | None = None) -> dict:
    """A detector's settings for a run: ``settings`` (``scan --set``), its seed, and the threshold only
    when overridden (the detector's calibrated default otherwise)."""
    merged = {**(settings or {}), "seed": seed}
    return merged if threshold is None else {**merged, "threshold": threshold}


def scan_minimum(detector) -> tuple[int, str]:
    """(fewest clean images, whose figure) that a plain image folder must hold for ``detector``: its
    ``min_clean`` setting when it has one, else :data:`~securegaze.data.image_folder.MIN_FOLDER_IMAGES`."""
    minimum = detector.settings().get("min_clean")
    if minimum:
        return int(minimum), f"the scan's minimum clean-set size, min_clean = {int(minimum)}"
    return MIN_FOLDER_IMAGES, f"the minimum clean-set size for a plain folder, {MIN_FOLDER_IMAGES}"


def clean_set_record(spec: str, data: ArrayGazeDataset) -> dict:
    """What a report keeps about the clean set: the source as given, how many images were used, and
    for a plain image folder its note and :func:`~securegaze.data.image_folder.clean_set_identity`."""
    record = {"source": spec, "count": len(data), "labelled": data.labelled}
    if isinstance(data, ImageFolderDataset):
        record.update(identity=data.identity, note=data.note)
    return record


def photos_warning(spec: str, data: ArrayGazeDataset) -> tuple[float | None, str | None]:
    """For a plain image folder: (the median share of its image width the face spans, the warning line
    when the folder holds photos rather than face crops: :mod:`securegaze.data.face_share`)."""
    if not isinstance(data, ImageFolderDataset):
        return None, None
    from securegaze.data.face_share import folder_face_share, photo_warning

    share = folder_face_share(data.folder, data.files)
    return share.median, photo_warning(share, spec)


@dataclass
class ScanRun:
    """A prepared scan of one model file (:meth:`prepare`), ready to :meth:`run`."""

    model_file: ModelFile
    model: torch.nn.Module
    clean_images: Any
    detector: Any
    clean_record: dict | None = None

    @property
    def clean_note(self) -> str | None:
        """The plain image folder's note (what was read, how it was resized), with its warning line
        when the images look like photos, else None."""
        record = self.clean_record or {}
        return _with_warning(record.get("note"), record.get("warning"))

    @classmethod
    def prepare(cls, model: str | Path, clean: str, samples: int, seed: int, threshold: float | None = None,
                detector: str = "securegaze", settings: dict | None = None) -> ScanRun:
        """Open ``model``, draw ``samples`` clean images from ``clean`` (its test split, at the model's
        input size) and build the registered ``detector`` with ``settings``; seeds torch with ``seed``
        first, so the scan is deterministic. ``clean`` may be unlabelled (a plain image folder): the
        scan uses no labels."""
        # The detector first: a bad name, setting or --threshold is refused before the model is converted.
        detector = create_detector(detector, **detector_settings(seed, threshold, settings))
        torch.manual_seed(seed)
        model_file = open_model(model)
        net = model_file.gaze_model()
        minimum, why = scan_minimum(detector)
        data = load_gaze_data(clean, int(net.input_size), samples, seed, "test", need_labels=None,
                              min_images=minimum, min_reason=why)
        check_gaze_plausible(net, data.images, str(model))  # degrees read as radians: refused before the scan
        record = clean_set_record(clean, data)
        share, warning = photos_warning(clean, data)
        if share is not None:
            record["face_share"] = round(share, 3)
        if warning:
            record["warning"] = warning
        return cls(model_file, net, data.images, detector, record)

    def run(self, out: str | Path, progress: Callable | None = None) -> ScanReport:
        """Scan; write the artifacts and ``out/report.json``; return the report."""
        out = Path(out)
        report = self.detector.scan(self.model, self.clean_images, progress=progress, artifacts_dir=out,
                                    model_sha256=self.model_file.sha256())
        if self.clean_record is not None:
            report.details["clean_set"] = self.clean_record
            if self.clean_record.get("warning"):
                report.details["warnings"] = [*report.details.get("warnings", []), self.clean_record["warning"]]
        add_input_check(report, self.model, self.clean_images)  # a wrong input range, or faces that look one way
        report.save(out / "report.json")
        return report


@dataclass
class MitigationRun:
    """A prepared mitigation of one model file (:meth:`prepare`), ready to :meth:`run`."""

    model_path: Path
    out: Path
    model: torch.nn.Module
    sha256: str
    clean: str
    clean_set: ArrayGazeDataset
    test_set: ArrayGazeDataset
    attack: Any
    test_faces: Any
    detector: Any
    scan_before: tuple[ScanReport, Any] | None
    options: dict
    method: Any = None
    clean_warning: str | None = None

    @property
    def clean_note(self) -> str | None:
        """The plain image folder's note when ``clean`` is one (with its warning line when the images
        look like photos), else None."""
        if not isinstance(self.clean_set, ImageFolderDataset):
            return None
        return _with_warning(self.clean_set.note, self.clean_warning)

    @classmethod
    def prepare(cls, model: str | Path, out: str | Path, clean: str = "synthetic", samples: int = 2048,
                test: str = "synthetic", test_samples: int = 1000, attack_run: str | Path | None = None,
                scan_dir: str | Path | None = None, true_labels: bool = False, epochs: int = 10,
                lr: float = 3e-4, seed: int = 0, threshold: float | None = None, rounds: int = 3,
                uniform_reversal: bool = True, strengths: tuple[float, ...] = (1.0, 2.0, 3.0),
                method=None) -> MitigationRun:
        """Open ``model``; draw the clean images (``clean``'s val split) and the labelled test images.

        The test images are those of ``attack_run`` when given (then its real trigger is measured
        too; it must be at the model's input size), else ``test``'s test split. ``scan_dir``: an
        earlier scan of this same model to reuse (:func:`~securegaze.bench.mitigation.load_earlier_scan`).
        ``clean`` may be unlabelled (a plain image folder) unless ``true_labels``; the test images must
        be labelled. ``method``: a built baseline mitigation method (:mod:`securegaze.defense.mitigations`)
        to run instead of SecureGaze's scan, unlearning and re-scan (``epochs`` to ``strengths`` and
        ``scan_dir`` are SecureGaze's and unused then).
        """
        detector = create_detector("securegaze", **detector_settings(seed, threshold))  # settings checked first
        torch.manual_seed(seed)
        model_file = open_model(model)
        net = model_file.gaze_model()
        sha = model_file.sha256()
        size = int(net.input_size)
        minimum, why = scan_minimum(detector)
        clean_set = load_gaze_data(clean, size, samples, seed, "val", min_images=minimum, min_reason=why,
                                   need_labels="mitigate --true-labels" if true_labels else None)
        check_gaze_plausible(net, clean_set.images, str(model))  # as a scan: no unlearning of a gaze that is none
        clean_warning = photos_warning(clean, clean_set)[1]
        attack = faces = None
        if attack_run is not None:
            from securegaze.attacks.runner import load_attack_run

            attack, test_set, faces = load_attack_run(attack_run, test_samples)
            if test_set.images.shape[1] != size:
                raise InputFileError(f"{attack_run}: the attack run is at {test_set.images.shape[1]} px, "
                                     f"the model takes {size} px")
        else:
            test_set = load_gaze_data(test, size, test_samples, seed, "test",
                                      need_labels="mitigate --test (the before/after error figures)")
        before = None if scan_dir is None else load_earlier_scan(scan_dir, sha, str(model))
        options = {"true_labels": true_labels, "epochs": epochs, "lr": lr, "seed": seed, "rounds": rounds,
                   "uniform_reversal": uniform_reversal, "strengths": strengths, "samples": samples}
        return cls(Path(model), Path(out), net, sha, clean, clean_set, test_set, attack, faces, detector, before,
                   options, method, clean_warning)

    def run(self, progress: Callable | None = None) -> tuple[MitigationReport, BundleManifest]:
        """Scan (unless reused), fine-tune, re-scan (or run the baseline ``method``); write the new bundle,
        the scans and ``mitigation.json`` to ``out``. Returns the report and the new bundle's manifest."""
        o, out = self.options, self.out
        labels = self.clean_set.gaze if o["true_labels"] else None
        if self.method is not None:
            tuned, result = mitigate_with(self.method, self.model, self.clean_set.images, self.test_set, self.attack,
                                          self.test_faces, labels=labels, model_name=str(self.model_path),
                                          model_sha256=self.sha256, out=str(out), progress=progress)
            how = f"mitigated by the {self.method.name} method with"
        else:
            tuned, result = self._securegaze(labels, progress)
            how = "fine-tuned against the reversed trigger on"
        manifest = export_bundle(tuned, out, name=out.name, provenance={
            "training_data": f"{how} {len(self.clean_set)} clean images ({self.clean}"
                             + (f", {self.clean_set.identity}" if isinstance(self.clean_set, ImageFolderDataset) else "")
                             + ")",
            "seed": o["seed"],
            "notes": f"mitigated from {self.model_path} (sha256 {self.sha256}) by securegaze mitigate"})
        atomic_write_json(out / "mitigation.json", result.to_dict())
        return result, manifest

    def _securegaze(self, labels, progress):
        o, out = self.options, self.out
        return mitigate_and_measure(
            self.model, self.clean_set.images, self.detector, self.test_set, attack=self.attack,
            test_faces=self.test_faces, labels=labels, epochs=o["epochs"], lr=o["lr"], seed=o["seed"],
            scan_before=self.scan_before, scan_dirs=(out / "scan_before", out / "scan_after"),
            model_name=str(self.model_path), out=str(out), model_sha256=self.sha256, progress=progress,
            rounds=o["rounds"], uniform_reversal=o["uniform_reversal"], strengths=o["strengths"])


def _with_warning(note: str | None, warning: str | None) -> str | None:
    """``note`` and, on its own line, ``warning: ...`` (either may be missing)."""
    lines = [line for line in (note, f"warning: {warning}" if warning else None) if line]
    return "\n".join(lines) or None
