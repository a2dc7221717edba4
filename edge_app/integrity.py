"""Startup integrity check (docs/architecture.md section 7): no gaze alarm from a model nobody has scanned.

At start the app hashes the model file (for a bundle: its ONNX, the file the gaze actually comes
from, ``securegaze.bundle.open_model(path).sha256()``) and looks up the audit record for that hash:

1. in the local SQLite audit database (authoritative: it lives on the device, not with the model);
2. in the audit file next to the model (``securegaze_audit.json`` in a bundle directory,
   ``<file>.audit.json`` beside a single file). Whoever can swap the model can also rewrite that
   file, so it is trusted only with ``trust_model_sidecar`` (for read-only model stores that ship
   their audit); otherwise it is informational and rewritten after a scan.

A record is current when its sha256 and scanner version equal the model's and this scanner's. No
current record: the SecureGaze scan runs (progress goes to a callback) on clean synthetic faces
rendered at the model's input size, and the result is written to both places: the database in a
transaction, the JSON file atomically (temp file + rename). A ``backdoored`` verdict blocks the
model under policy ``block`` (the default; the pipeline then yields neither gaze nor alarms and
says why, and ``edge-app run`` exits with :data:`EXIT_BLOCKED`) or only warns under ``warn``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from securegaze.errors import ConfigError, InputFileError, SecureGazeError
from securegaze.io import atomic_write_json

if TYPE_CHECKING:
    from securegaze.bundle import ModelFile

#: Exit code of ``edge-app run`` when the integrity check blocks the model (the same code
#: ``securegaze scan`` gives a backdoored model).
EXIT_BLOCKED = 10
#: Name of the audit file inside a bundle directory.
SIDECAR_NAME = "securegaze_audit.json"
AUDIT_SCHEMA_VERSION = 1


class IntegrityError(SecureGazeError):
    """The audit database or an audit record cannot be used (corrupt file, wrong schema)."""


def default_audit_db() -> Path:
    """``$SECUREGAZE_AUDIT_DB``, else ``$XDG_DATA_HOME/securegaze-edge/audit.sqlite3``."""
    if os.environ.get("SECUREGAZE_AUDIT_DB"):
        return Path(os.environ["SECUREGAZE_AUDIT_DB"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "securegaze-edge" / "audit.sqlite3"


class IntegritySettings(BaseModel):
    """Settings of the startup check.

    ``policy``: what a backdoored verdict does (``block`` | ``warn``); ``audit_db``: SQLite file
    (None: :func:`default_audit_db`); ``clean_samples`` / ``clean_seed``: synthetic clean faces the
    scan uses (docs/architecture.md section 6 asks for hundreds); ``detector`` and ``scan_settings``: passed to
    ``securegaze.defense.create_detector`` (empty: the scanner's defaults, the calibrated ones);
    ``trust_model_sidecar``: accept a current record found only in the file next to the model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["block", "warn"] = "block"
    audit_db: Path | None = None
    clean_samples: int = Field(256, ge=8, le=10_000)
    clean_seed: int = Field(20_250_505, ge=0)
    detector: str = "securegaze"
    scan_settings: dict[str, Any] = Field(default_factory=dict)
    trust_model_sidecar: bool = False


@dataclass(frozen=True)
class AuditRecord:
    """One scan of one model file. ``report``: the full :class:`~securegaze.defense.ScanReport` dict."""

    model_sha256: str
    model_path: str
    detector: str
    scanner_version: str
    settings: dict[str, Any]
    verdict: str
    score: float | str
    threshold: float | str
    clean_images: str
    scanned_at: str
    report: dict[str, Any]
    schema_version: int = AUDIT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> AuditRecord:
        try:
            record = cls(**data)
        except TypeError as exc:
            raise IntegrityError(f"{where}: not a valid audit record ({exc})") from None
        if record.verdict not in ("clean", "backdoored") or len(record.model_sha256) != 64:
            raise IntegrityError(f"{where}: not a valid audit record (verdict {record.verdict!r})")
        return record


@dataclass(frozen=True)
class IntegrityResult:
    """Outcome of the startup check.

    ``source``: where the verdict came from (``"database"``, ``"sidecar"`` or ``"scan"``);
    ``blocked``: True when the policy blocks the model; ``reason``: one line for the user (and the
    BLOCKED state); ``notes``: things worth telling (stale records, an unwritable audit file).
    """

    model_sha256: str
    verdict: str
    policy: str
    blocked: bool
    reason: str
    source: str
    record: AuditRecord
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        return {"model_sha256": self.model_sha256, "verdict": self.verdict, "policy": self.policy,
                "blocked": self.blocked, "reason": self.reason, "source": self.source,
                "scanner_version": self.record.scanner_version, "score": self.record.score,
                "threshold": self.record.threshold, "notes": list(self.notes)}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_sha256 TEXT NOT NULL,
    scanner_version TEXT NOT NULL,
    detector TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('clean', 'backdoored')),
    scanned_at TEXT NOT NULL,
    record_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_sha ON audit_records (model_sha256, scanner_version);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class AuditDatabase:
    """The SQLite audit database; every write is one transaction."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        advice = "move it aside (a new one is created) or pass another --audit-db"
        if self.path.exists() and not self.path.is_file():
            raise IntegrityError(f"{self.path}: audit database path is not a file; {advice}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputFileError(f"{self.path}: cannot create the audit database's folder ({exc})") from None
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=10.0)
            # quick_check reads every page: a truncated or overwritten file fails here, not mid-run.
            ok = self._conn.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                raise sqlite3.DatabaseError(ok[0] if ok else "quick_check returned nothing")
            with self._conn:
                self._conn.executescript(_SCHEMA)
                self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                                   (str(AUDIT_SCHEMA_VERSION),))
            version = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise IntegrityError(f"{self.path}: not a readable audit database ({exc}); {advice}") from None
        except sqlite3.Error as exc:
            self._close_quietly()
            raise IntegrityError(f"{self.path}: cannot open the audit database ({exc})") from None
        if version != str(AUDIT_SCHEMA_VERSION):
            self.close()
            raise IntegrityError(f"{self.path}: audit database schema {version}, this app reads "
                                 f"{AUDIT_SCHEMA_VERSION}; {advice}")

    def _close_quietly(self) -> None:
        try:
            self._conn.close()
        except Exception:
            pass

    def lookup(self, model_sha256: str, scanner_version: str, detector: str) -> AuditRecord | None:
        """The newest record of this model by this scanner version, or None."""
        try:
            row = self._conn.execute(
                "SELECT record_json FROM audit_records WHERE model_sha256 = ? AND scanner_version = ? "
                "AND detector = ? ORDER BY id DESC LIMIT 1", (model_sha256, scanner_version, detector)).fetchone()
        except sqlite3.Error as exc:
            raise IntegrityError(f"{self.path}: audit database read failed ({exc})") from None
        if row is None:
            return None
        try:
            data = json.loads(row[0])
        except json.JSONDecodeError as exc:
            raise IntegrityError(f"{self.path}: a stored audit record is not JSON ({exc})") from None
        return AuditRecord.from_dict(data, f"{self.path} record for {model_sha256[:12]}")

    def records_for(self, model_sha256: str) -> list[AuditRecord]:
        rows = self._conn.execute("SELECT record_json FROM audit_records WHERE model_sha256 = ? ORDER BY id",
                                  (model_sha256,)).fetchall()
        return [AuditRecord.from_dict(json.loads(r[0]), str(self.path)) for r in rows]

    def add(self, record: AuditRecord) -> None:
        try:
            with self._conn:  # one transaction: the row is there completely or not at all
                self._conn.execute(
                    "INSERT INTO audit_records (model_sha256, scanner_version, detector, verdict, scanned_at, "
                    "record_json) VALUES (?, ?, ?, ?, ?, ?)",
                    (record.model_sha256, record.scanner_version, record.detector, record.verdict,
                     record.scanned_at, json.dumps(record.to_dict())))
        except sqlite3.Error as exc:
            raise IntegrityError(f"{self.path}: cannot write the audit record ({exc})") from None

    def close(self) -> None:
        self._conn.close()


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """The audit file next to a model: inside a bundle directory, or ``<file>.audit.json``."""
    path = Path(model_path)
    if path.is_dir():
        return path / SIDECAR_NAME
    if path.suffix.lower() == ".json":  # a bundle's manifest: the bundle's directory
        return path.parent / SIDECAR_NAME
    return path.with_name(path.name + ".audit.json")


def read_sidecar(path: Path) -> tuple[AuditRecord | None, str | None]:
    """(record or None, a note when the file exists but cannot be used)."""
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return AuditRecord.from_dict(data, str(path)), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, IntegrityError) as exc:
        return None, f"{path}: unreadable audit file ignored ({str(exc).splitlines()[0]})"


def _is_current(record: AuditRecord | None, sha: str, version: str, detector: str) -> bool:
    return (record is not None and record.model_sha256 == sha and record.scanner_version == version
            and record.detector == detector)


ScanProgressCallback = Callable[[Any], None]


class IntegrityChecker:
    """Runs the startup check for a model file: ``check(path, progress)`` -> :class:`IntegrityResult`."""

    def __init__(self, settings: IntegritySettings | None = None) -> None:
        self.settings = settings or IntegritySettings()

    def _detector(self):
        from securegaze.defense import create_detector

        try:
            return create_detector(self.settings.detector, **self.settings.scan_settings)
        except (TypeError, ConfigError) as exc:
            raise ConfigError(f"integrity.detector / integrity.scan_settings: {exc}") from None

    def check(self, model_path: str | os.PathLike, progress: ScanProgressCallback | None = None) -> IntegrityResult:
        from securegaze.bundle import open_model
        from securegaze.defense import SCANNER_VERSION

        s = self.settings
        model_path = Path(model_path)
        model_file = open_model(model_path)
        sha = model_file.sha256()
        detector = self._detector()
        version = getattr(detector, "version", SCANNER_VERSION)
        db = AuditDatabase(s.audit_db or default_audit_db())
        notes: list[str] = []
        try:
            record = db.lookup(sha, version, s.detector)
            source = "database"
            side_path = sidecar_path(model_path)
            side, note = read_sidecar(side_path)
            if note:
                notes.append(note)
            if record is None and side is not None:
                if not _is_current(side, sha, version, s.detector):
                    notes.append(f"{side_path}: audit record is stale (sha256 {side.model_sha256[:12]}, scanner "
                                 f"{side.scanner_version}; model is {sha[:12]}, scanner {version}); rescanning")
                elif s.trust_model_sidecar:
                    record, source = side, "sidecar"
                    db.add(side)
                else:
                    notes.append(f"{side_path}: a record for this model exists only beside the model, which is not "
                                 "trusted (integrity.trust_model_sidecar is false); rescanning")
            if record is None:
                record = self._scan(model_file, sha, detector, progress)
                source = "scan"
                db.add(record)
            if source != "sidecar" and not _same_record(side, record):
                try:
                    atomic_write_json(side_path, record.to_dict())
                except OSError as exc:
                    notes.append(f"{side_path}: audit file not written ({exc}); the database holds the record")
        finally:
            db.close()
        backdoored = record.verdict == "backdoored"
        blocked = backdoored and s.policy == "block"
        if backdoored:
            reason = (f"model {model_path} (sha256 {sha[:12]}) scanned backdoored by {s.detector} {version} "
                      f"(score {record.score} < threshold {record.threshold})")
            reason += ": blocked, no gaze or alarms" if blocked else ": policy warn, running anyway"
        else:
            reason = f"model {model_path} (sha256 {sha[:12]}) scanned clean by {s.detector} {version}"
        return IntegrityResult(sha, record.verdict, s.policy, blocked, reason, source, record, tuple(notes))

    def _scan(self, model_file: ModelFile, sha: str, detector, progress) -> AuditRecord:
        from securegaze.data.synthetic import render_dataset

        s = self.settings
        model_path = model_file.path
        model = model_file.gaze_model()
        size = int(model.input_size)
        clean = render_dataset(s.clean_samples, size, seed=s.clean_seed)
        report = detector.scan(model, clean.images, progress=progress, model_sha256=sha)
        data = report.to_dict()
        return AuditRecord(
            model_sha256=sha, model_path=str(model_path), detector=report.detector,
            scanner_version=report.scanner_version, settings=data["settings"], verdict=report.verdict,
            score=data["score"], threshold=data["threshold"],
            clean_images=f"synthetic faces, {s.clean_samples} at {size} px, seed {s.clean_seed}",
            scanned_at=datetime.now(UTC).isoformat(timespec="seconds"), report=data)


def _same_record(a: AuditRecord | None, b: AuditRecord) -> bool:
    return a is not None and a.to_dict() == b.to_dict()
