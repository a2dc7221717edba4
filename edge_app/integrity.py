"""Startup integrity check (docs/architecture.md section 7): no gaze alarm from a model nobody has scanned.

At start the app hashes the model file (for a bundle: its ONNX, the file the gaze actually comes
from, ``securegaze.bundle.open_model(path).sha256()``) and asks for the audit record that answers
the question being asked now: this model, this scanner version, these scan settings, this clean
set, this calibration (the :class:`~edge_app.audit.RecordKey`, see :mod:`edge_app.audit`). It looks

1. in the local SQLite audit database (authoritative: it lives on the device, not with the model);
2. in the audit file next to the model (``securegaze_audit.json`` in a bundle directory,
   ``<file>.audit.json`` beside a single file). Whoever can swap the model can also rewrite that
   file, so it is trusted only with ``trust_model_sidecar`` (for read-only model stores that ship
   their audit); otherwise it is informational and rewritten after a scan.

A record applies only when every key field equals the question's: a stricter threshold, a larger clean set
or any other scan setting in the config is a new question, and the model is scanned again. The reason line
says which record was used and why it applies, or, after a scan, which record did not apply and what
differed. No applying record: the SecureGaze scan runs (progress goes to a callback) on clean faces
(``clean``: synthetic ones rendered at the model's input size by default, or the user's own folder of face
images, drawn with ``clean_seed``), and the result is written to both places: the database in a transaction,
the JSON file atomically (temp file + rename). A read-only audit database is read; a scan whose record it
cannot take is refused before the scan. A ``backdoored`` verdict blocks the model under policy ``block``
(the default; the pipeline then yields neither gaze nor alarms and says why, and ``edge-app run`` exits with
:data:`EXIT_BLOCKED`) or only warns under ``warn``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_app.audit import (
    AUDIT_SCHEMA_VERSION,
    SIDECAR_NAME,
    AuditDatabase,
    AuditRecord,
    IntegrityError,
    RecordKey,
    StoredRecord,
    key_differences,
    read_sidecar,
    sidecar_path,
)
from securegaze.errors import ConfigError
from securegaze.io import atomic_write_json

if TYPE_CHECKING:
    from securegaze.bundle import ModelFile

#: Exit code of ``edge-app run`` when the integrity check blocks the model (the same code
#: ``securegaze scan`` gives a backdoored model).
EXIT_BLOCKED = 10
#: Renderer style of the synthetic clean faces the scan uses (securegaze.data.synthetic's default).
CLEAN_STYLE = "standard"

__all__ = ["AUDIT_SCHEMA_VERSION", "EXIT_BLOCKED", "SIDECAR_NAME", "AuditDatabase", "AuditRecord", "IntegrityChecker",
           "IntegrityError", "IntegrityResult", "IntegritySettings", "RecordKey", "default_audit_db", "read_sidecar",
           "sidecar_path"]


def default_audit_db() -> Path:
    """``$SECUREGAZE_AUDIT_DB``, else ``$XDG_DATA_HOME/securegaze-edge/audit.sqlite3``."""
    if os.environ.get("SECUREGAZE_AUDIT_DB"):
        return Path(os.environ["SECUREGAZE_AUDIT_DB"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "securegaze-edge" / "audit.sqlite3"


class IntegritySettings(BaseModel):
    """Settings of the startup check.

    ``policy``: what a backdoored verdict does (``block`` | ``warn``); ``audit_db``: SQLite file
    (None: :func:`default_audit_db`); ``clean``: where the scan's clean faces come from, as
    ``securegaze scan --clean`` takes it: ``synthetic`` (or ``synthetic:STYLE``, rendered at the
    model's input size), a plain folder of face images (PNG/JPEG, any size, no labels: resized to the
    model's input) or a labelled dataset; ``clean_samples`` / ``clean_seed``: how many clean faces the
    scan uses and the seed that renders or draws them (docs/architecture.md section 6 asks for
    hundreds); ``detector`` and ``scan_settings``: passed to
    ``securegaze.defense.create_detector`` (empty: the scanner's defaults, the calibrated ones);
    ``trust_model_sidecar``: accept a current record found only in the file next to the model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["block", "warn"] = "block"
    audit_db: Path | None = None
    clean: str = "synthetic"
    clean_samples: int = Field(256, ge=8, le=10_000)
    clean_seed: int = Field(20_250_505, ge=0)
    detector: str = "securegaze"
    scan_settings: dict[str, Any] = Field(default_factory=dict)
    trust_model_sidecar: bool = False

    @field_validator("clean")
    @classmethod
    def _clean_exists(cls, value: str) -> str:
        return check_clean_spec(value)


def check_clean_spec(spec: str) -> str:
    """``spec`` when it names a synthetic style or an existing folder or file, else a ValueError that
    says what is expected (the images themselves are read at the scan, which names a bad one)."""
    from securegaze.data.sources import synthetic_spec_style

    try:
        if synthetic_spec_style(spec) is not None:
            return spec
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if not spec or not Path(spec).exists():
        raise ValueError(f"{spec!r}: no such folder or file; expected 'synthetic', 'synthetic:STYLE', a folder of "
                         "face images (PNG/JPEG) or a labelled dataset")
    return spec


def clean_set_key(spec: str, samples: int, seed: int, framing: str | None = None) -> str:
    """The audit key's clean set: :func:`synthetic_clean_set` for synthetic faces; for a plain image
    folder its identity (path, image count, SHA-256 of names and bytes: an edited, added or removed
    image is a new question), the draw and, for photos, how their faces were cut out (``framing``,
    :mod:`edge_app.clean_faces`); for a dataset its path and the draw."""
    from securegaze.data.sources import IMAGE_FOLDER, SYNTHETIC, source_kind, synthetic_spec_style

    kind = source_kind(spec)
    if kind == SYNTHETIC:
        return synthetic_clean_set(samples, seed, synthetic_spec_style(spec) if spec != "synthetic" else CLEAN_STYLE)
    if kind == IMAGE_FOLDER:
        from securegaze.data.image_folder import clean_set_identity

        framed = f" framing={framing}" if framing else ""
        return f"{clean_set_identity(spec)} samples={int(samples)} seed={int(seed)}{framed}"
    return f"dataset:{Path(spec).resolve()} samples={int(samples)} seed={int(seed)}"


@dataclass(frozen=True)
class IntegrityResult:
    """Outcome of the startup check.

    ``source``: where the verdict came from (``"database"``, ``"sidecar"`` or ``"scan"``); ``blocked``: True
    when the policy blocks the model; ``reason``: one line for the user (and the BLOCKED state): the
    verdict, which record it comes from and why that record applies (or, after a scan, what kept the earlier
    record from applying); ``notes``: things worth telling (stale records, an unwritable audit file);
    ``record_where``: the record used, e.g. ``audit record #12 from <db>``.
    """

    model_sha256: str
    verdict: str
    policy: str
    blocked: bool
    reason: str
    source: str
    record: AuditRecord
    notes: tuple[str, ...] = field(default_factory=tuple)
    record_where: str = ""

    def summary(self) -> dict[str, Any]:
        r = self.record
        return {"model_sha256": self.model_sha256, "verdict": self.verdict, "policy": self.policy,
                "blocked": self.blocked, "reason": self.reason, "source": self.source,
                "scanner_version": r.scanner_version, "score": r.score, "threshold": r.threshold,
                "record": self.record_where, "settings_hash": r.settings_hash, "clean_set": r.clean_set,
                "calibration": r.calibration, "notes": list(self.notes)}


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, ASCII: the same value always gives the same text (and hash)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def detector_settings(detector) -> dict[str, Any]:
    """The detector's full effective settings as plain JSON values, however it exposes them (a
    ``settings()`` method or a ``settings`` attribute holding a dict or a dataclass, or ``to_dict()``)."""
    raw = getattr(detector, "settings", None)
    if callable(raw):
        raw = raw()
    if raw is None and callable(getattr(detector, "to_dict", None)):
        raw = detector.to_dict()
    if is_dataclass(raw) and not isinstance(raw, type):
        raw = asdict(raw)
    elif callable(getattr(raw, "to_dict", None)):
        raw = raw.to_dict()
    if not isinstance(raw, dict):
        raise ConfigError(f"integrity.detector: {type(detector).__name__} exposes no settings to key audit records on")
    return json.loads(canonical_json(raw))


def settings_hash(detector_name: str, settings: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``{"detector": name, "settings": settings}``."""
    return hashlib.sha256(canonical_json({"detector": detector_name, "settings": settings}).encode()).hexdigest()


def calibration_version(detector, settings: dict[str, Any], version: str) -> str:
    """The scanner version, plus the threshold's calibration id when the settings or the detector
    expose one (``threshold_calibration``; a long description is shortened to 12 hex of its sha256)."""
    calibration = settings.get("threshold_calibration") or getattr(detector, "threshold_calibration", None)
    if not calibration:
        return str(version)
    text = str(calibration)
    return f"{version}+{text if len(text) <= 24 else hashlib.sha256(text.encode()).hexdigest()[:12]}"


def synthetic_clean_set(samples: int, seed: int, style: str = CLEAN_STYLE) -> str:
    """The identity of a synthetic clean set: ``synthetic:<style> n=<count> seed=<seed>`` (rendered at
    the model's input size, which the model's sha256 fixes; ``style`` may carry ``+condition`` parts)."""
    return f"synthetic:{style} n={int(samples)} seed={int(seed)}"


def _new_record(key: RecordKey, model_path, settings: dict, verdict: str, score, threshold, clean_images: str,
                report: dict) -> AuditRecord:
    return AuditRecord(model_sha256=key.model_sha256, model_path=str(model_path), detector=key.detector,
                       scanner_version=key.scanner_version, settings=settings, verdict=verdict, score=score,
                       threshold=threshold, clean_images=clean_images,
                       scanned_at=datetime.now(UTC).isoformat(timespec="seconds"), report=report,
                       settings_hash=key.settings_hash, clean_set=key.clean_set, calibration=key.calibration)


ScanProgressCallback = Callable[[Any], None]


@dataclass(frozen=True)
class _Question:
    """What a check asks: the record key, the detector that would scan, its effective settings."""

    key: RecordKey
    detector: Any
    settings: dict[str, Any]


class IntegrityChecker:
    """Runs the startup check for a model file: ``check(path, progress)`` -> :class:`IntegrityResult`."""

    def __init__(self, settings: IntegritySettings | None = None, app_config=None) -> None:
        self.settings = settings or IntegritySettings()
        self.app_config = app_config  # the app's EdgeConfig: a folder of photos is read through its face stage
        self._framing: tuple[str | None, str] | None = None

    def clean_framing(self) -> tuple[str | None, str]:
        """How a folder clean set is read: (None, ...) as face crops, (``face-stage``, why) as photos
        (:func:`edge_app.clean_faces.folder_framing`; only with the app's config). Looked at once."""
        from securegaze.data.sources import IMAGE_FOLDER, source_kind

        if self._framing is None:
            self._framing = (None, "")
            if self.app_config is not None and source_kind(self.settings.clean) == IMAGE_FOLDER:
                from edge_app.clean_faces import folder_framing

                self._framing = folder_framing(self.settings.clean)
        return self._framing

    def _detector(self):
        from securegaze.defense import create_detector

        try:
            return create_detector(self.settings.detector, **self.settings.scan_settings)
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"integrity.detector / integrity.scan_settings: {exc}") from None

    def _question(self, model_file: ModelFile) -> _Question:
        from securegaze.defense import SCANNER_VERSION

        s = self.settings
        sha = model_file.sha256()
        detector = self._detector()
        effective = detector_settings(detector)
        reading = model_file.reading()
        if reading:  # a manifest that reads the graph another way asks another question of the same ONNX
            effective["model_reading"] = json.loads(canonical_json(reading))
        version = str(getattr(detector, "version", SCANNER_VERSION))
        key = RecordKey(sha, s.detector, version, settings_hash(s.detector, effective),
                        clean_set_key(s.clean, s.clean_samples, s.clean_seed, self.clean_framing()[0]),
                        calibration_version(detector, effective, version))
        return _Question(key, detector, effective)

    def key_for(self, model_path: str | os.PathLike) -> RecordKey:
        """The record key a check of ``model_path`` with these settings asks for."""
        from securegaze.bundle import open_model

        return self._question(open_model(Path(model_path))).key

    def record_verdict(self, model_path: str | os.PathLike, verdict: str, score: float, threshold: float,
                       clean_images: str) -> AuditRecord:
        """Store a verdict reached without this app's scan (a review elsewhere, a test's fixture) in the
        audit database, keyed as a check with these settings asks; returns the record."""
        from securegaze.bundle import open_model

        if verdict not in ("clean", "backdoored"):
            raise ConfigError(f"verdict must be clean or backdoored, got {verdict!r}")
        q = self._question(open_model(Path(model_path)))
        record = _new_record(q.key, model_path, q.settings, verdict, score, threshold, clean_images, {})
        db = AuditDatabase(self.settings.audit_db or default_audit_db())
        try:
            db.add(record)
        finally:
            db.close()
        return record

    def check(self, model_path: str | os.PathLike, progress: ScanProgressCallback | None = None) -> IntegrityResult:
        from securegaze.bundle import open_model

        s = self.settings
        model_path = Path(model_path)
        model_file = open_model(model_path)
        q = self._question(model_file)
        key = q.key
        db = AuditDatabase(s.audit_db or default_audit_db())
        notes: list[str] = []
        try:
            found = db.find(key)
            source = "database"
            side_path = sidecar_path(model_path)
            side, note = read_sidecar(side_path)
            if note:
                notes.append(note)
            if found is None and side is not None:
                differ = key_differences(side, key, q.settings)
                if differ:
                    notes.append(f"{side_path}: audit record is stale, it does not apply ({'; '.join(differ)}); "
                                 "rescanning")
                elif s.trust_model_sidecar:
                    found, source = StoredRecord(side, f"the audit file {side_path}"), "sidecar"
                    if db.read_only:
                        notes.append(f"{db.path}: read-only; the trusted record of {side_path} is not copied into it")
                    else:
                        db.add(side)
                else:
                    notes.append(f"{side_path}: a record for this model exists only beside the model, which is not "
                                 "trusted (integrity.trust_model_sidecar is false); rescanning")
            why_new = ""
            if found is None:
                earlier = db.latest(key.model_sha256, key.detector)
                why_new = (f"no audit record of this model in {db.path}" if earlier is None else
                           f"{earlier.where} does not apply: "
                           + "; ".join(key_differences(earlier.record, key, q.settings)))
                db.refuse_writes(f"this scan's record cannot be stored ({why_new})")
                record = self._scan(model_file, q, progress)
                found, source = StoredRecord(record, f"audit record #{db.add(record)} in {db.path}"), "scan"
            record = found.record
            if source != "sidecar" and not _same_record(side, record):
                try:
                    atomic_write_json(side_path, record.to_dict())
                except OSError as exc:
                    notes.append(f"{side_path}: audit file not written ({exc}); the database holds the record")
        finally:
            db.close()
        return self._result(model_path, key, record, source, found.where, why_new, notes)

    def _result(self, model_path: Path, key: RecordKey, record: AuditRecord, source: str, where: str, why_new: str,
                notes: list[str]) -> IntegrityResult:
        s = self.settings
        sha = key.model_sha256
        # What the scan itself warned about (e.g. a verdict resting on few clean images).
        details = (record.report or {}).get("details") or {}
        notes = notes + [f"scan warning: {w}" for w in details.get("warnings", [])]
        if source == "scan" and (details.get("clean_set") or {}).get("note"):  # what was read from the user's folder
            notes.append(details["clean_set"]["note"])
        if source == "scan":  # a third-party graph's form, adapted on reading (the engine line says it again)
            from securegaze.defense.securegaze.confirm import confirmation_line  # torch is loaded: it scanned
            notes += [f"scanned as adapted: {a}" for a in details.get("model_adaptations", [])]
            notes += [line for line in [confirmation_line(details, record.verdict)] if line]  # a flag rerun
        backdoored = record.verdict == "backdoored"
        blocked = backdoored and s.policy == "block"
        verdict = (f"scanned backdoored by {key.detector} {key.scanner_version} (score {record.score} < threshold "
                   f"{record.threshold})" if backdoored else f"scanned clean by {key.detector} {key.scanner_version}")
        if source == "scan":
            how = f"new scan, {why_new}; stored as {where}"
        else:
            how = f"{where} (scanned {record.scanned_at}, same model sha256, {key.describe()})"
        reason = f"model {model_path} (sha256 {sha[:12]}) {verdict}: {how}"
        misfed = _misfed(details.get("input_check") or {})
        if misfed and not backdoored:
            # Said in the line itself, not only in the notes. Not blocked: an untrained or dead model spreads
            # its gaze as little as one fed the wrong way, and the statistics cannot tell the two apart.
            reason += f"; but {misfed}, so the verdict may mean nothing"
        if backdoored:
            reason += ": blocked, the gaze model is not run" if blocked else ": policy warn, running anyway"
        return IntegrityResult(sha, record.verdict, s.policy, blocked, reason, source, record, tuple(notes), where)

    def _scan(self, model_file: ModelFile, q: _Question, progress) -> AuditRecord:
        from securegaze.defense.inputs import add_input_check, check_gaze_plausible

        model = model_file.gaze_model()
        size = int(model.input_size)
        images, described, clean_record = self._clean_images(q.detector, size)
        check_gaze_plausible(model, images, str(model_file.path))  # no verdict on a gaze that is none
        report = q.detector.scan(model, images, progress=progress, model_sha256=q.key.model_sha256)
        if clean_record is not None:
            report.details["clean_set"] = clean_record
        add_input_check(report, model, images)  # a third-party graph fed another pixel range: in the notes
        data = report.to_dict()
        return _new_record(q.key, model_file.path, q.settings, report.verdict, data["score"], data["threshold"],
                           described, data)

    def _clean_images(self, detector, size: int):
        """(images, how the record describes them, the report's ``clean_set`` entry or None) for ``clean``."""
        from securegaze.data import sources
        from securegaze.data.synthetic import render_dataset, synthetic_style

        s = self.settings
        if s.clean == "synthetic":  # the standard style (CLEAN_STYLE), as every earlier record was scanned
            clean = render_dataset(s.clean_samples, size, seed=s.clean_seed)
            return clean.images, f"synthetic faces, {s.clean_samples} at {size} px, seed {s.clean_seed}", None
        style = sources.synthetic_spec_style(s.clean)
        if style is not None:
            config = synthetic_style(style, size=size, conditions=sources.synthetic_spec_conditions(s.clean),
                                     condition_mix=sources.synthetic_spec_mix(s.clean))
            clean = render_dataset(s.clean_samples, seed=s.clean_seed, config=config)
            return clean.images, f"{s.clean} faces, {s.clean_samples} at {size} px, seed {s.clean_seed}", None
        from securegaze.scan_runs import clean_set_record, scan_minimum

        minimum, why = scan_minimum(detector)
        framing, look = self.clean_framing()
        framer = None
        if framing is not None:
            from edge_app.clean_faces import FaceStageFramer

            framer = FaceStageFramer(self.app_config, size)
        try:
            data = sources.load_gaze_data(s.clean, size, s.clean_samples, s.clean_seed, "test", need_labels=None,
                                          min_images=minimum, min_reason=why, framer=framer)
        finally:
            if framer is not None:
                framer.close()
        record = clean_set_record(s.clean, data)
        if framing is not None:
            record.update(framing=framing, note=f"{record['note']} ({look})")
        described = record.get("note") or f"{len(data)} images of {s.clean} at {size} px, seed {s.clean_seed}"
        return data.images, described, record


def _misfed(check: dict) -> str:
    """Why the scan's input check says the model was fed the wrong way ('' when it does not): its gaze
    past any plausible angle, or a named input convention that spreads it as faces do."""
    if check.get("plausible") is False:
        return (f"its gaze went past any plausible angle on the clean faces (spread {check.get('spread_deg')} deg read "
                "as radians): its output is in another unit (securegaze describe MODEL.onnx --units)")
    if check.get("likely"):
        return (f"its gaze spread only {check.get('spread_deg')} deg over the clean faces and "
                f"{(check.get('others_deg') or {}).get(check['likely'])} deg with {check['likely']}: it wants its "
                "input that way (declare it with securegaze describe, then start again)")
    return ""


def _same_record(a: AuditRecord | None, b: AuditRecord) -> bool:
    return a is not None and a.to_dict() == b.to_dict()
