"""Audit records of the startup integrity check, and the SQLite database that keeps them.

A record answers one question: "what did this scanner say about this model file, scanned this way?"
Its :class:`RecordKey` names everything that decides the verdict:

* ``model_sha256``: the file the gaze comes from (a bundle's ONNX);
* ``detector`` and ``scanner_version``;
* ``settings_hash``: sha256 of the canonical JSON (sorted keys, no spaces) of
  ``{"detector": name, "settings": the detector's full effective settings}``, so a changed
  threshold, step count or any other scan setting is a different question;
* ``clean_set``: the clean images' identity, a canonical string: ``synthetic:<style> n=<count>
  seed=<seed>`` for rendered faces (rendered at the model's own input size, which the sha256
  fixes); a folder of images would be named by a hash over its files' names and bytes;
* ``calibration``: the scanner version, plus the threshold's calibration id when the detector
  exposes one (``threshold_calibration``).

A record is used only when every field equals the question's. The database stores the key fields in
their own columns (schema 2; a schema-1 database is migrated by adding them, and its old rows, with
empty key fields, never match, so such a model is scanned again). A database that cannot be written
(the file or its folder read-only) is opened read-only (``mode=ro``): its records are read, and only
a needed new record is refused, naming why.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from securegaze.errors import InputFileError, SecureGazeError

#: Schema of the audit database (``meta.schema_version``). 2: the record key's columns.
AUDIT_SCHEMA_VERSION = 2
#: Name of the audit file inside a bundle directory.
SIDECAR_NAME = "securegaze_audit.json"
#: The columns schema 2 added to ``audit_records`` (the key fields besides sha256, detector, version).
KEY_COLUMNS = ("settings_hash", "clean_set", "calibration")


class IntegrityError(SecureGazeError):
    """The audit database or an audit record cannot be used (corrupt file, wrong schema, read-only)."""


@dataclass(frozen=True)
class RecordKey:
    """Everything that decides a verdict (see the module docstring)."""

    model_sha256: str
    detector: str
    scanner_version: str
    settings_hash: str
    clean_set: str
    calibration: str

    def describe(self) -> str:
        return (f"scanner {self.detector} {self.scanner_version}, settings {self.settings_hash[:12]}, "
                f"clean set {self.clean_set}, calibration {self.calibration}")


@dataclass(frozen=True)
class AuditRecord:
    """One scan of one model file. ``report``: the full :class:`~securegaze.defense.ScanReport` dict;
    ``settings_hash``, ``clean_set``, ``calibration``: the rest of its :class:`RecordKey` (empty in
    records written before schema 2: such a record never matches)."""

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
    settings_hash: str = ""
    clean_set: str = ""
    calibration: str = ""

    @property
    def key(self) -> RecordKey:
        return RecordKey(self.model_sha256, self.detector, self.scanner_version, self.settings_hash,
                         self.clean_set, self.calibration)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> AuditRecord:
        if not isinstance(data, dict):
            raise IntegrityError(f"{where}: not a valid audit record (a JSON object expected)")
        try:
            record = cls(**data)
        except TypeError as exc:
            raise IntegrityError(f"{where}: not a valid audit record ({exc})") from None
        if record.verdict not in ("clean", "backdoored") or len(str(record.model_sha256)) != 64:
            raise IntegrityError(f"{where}: not a valid audit record (verdict {record.verdict!r})")
        return record


def key_differences(record: AuditRecord, key: RecordKey, settings: dict[str, Any]) -> list[str]:
    """What keeps ``record`` from answering ``key`` (empty: it applies). ``settings``: the detector's
    settings now, to name the settings that changed."""
    if record.model_sha256 != key.model_sha256:
        return [f"model sha256 {record.model_sha256[:12]}, now {key.model_sha256[:12]}"]
    if not (record.settings_hash or record.clean_set or record.calibration):
        return ["the record predates keyed records (no settings hash, clean set or calibration)"]
    found = []
    if record.detector != key.detector or record.scanner_version != key.scanner_version:
        found.append(f"scanner {record.detector} {record.scanner_version}, now {key.detector} {key.scanner_version}")
    if record.settings_hash != key.settings_hash:
        old = record.settings if isinstance(record.settings, dict) else {}
        changed = [f"{k} {old.get(k, '(unset)')} -> {settings.get(k, '(unset)')}"
                   for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        detail = ", ".join(changed[:4]) + (f", {len(changed) - 4} more" if len(changed) > 4 else "")
        found.append(f"scan settings {record.settings_hash[:12] or '(none)'}, now {key.settings_hash[:12]}"
                     + (f" ({detail})" if detail else ""))
    if record.clean_set != key.clean_set:
        found.append(f"clean set {record.clean_set or '(none)'}, now {key.clean_set}")
    if record.calibration != key.calibration:
        found.append(f"calibration {record.calibration or '(none)'}, now {key.calibration}")
    return found


@dataclass(frozen=True)
class StoredRecord:
    """A record as found: ``where`` names it (``audit record #12 in <db>`` or the audit file)."""

    record: AuditRecord
    where: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_sha256 TEXT NOT NULL,
    scanner_version TEXT NOT NULL,
    detector TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('clean', 'backdoored')),
    scanned_at TEXT NOT NULL,
    record_json TEXT NOT NULL,
    settings_hash TEXT NOT NULL DEFAULT '',
    clean_set TEXT NOT NULL DEFAULT '',
    calibration TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_sha ON audit_records (model_sha256, scanner_version);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_KEY_INDEX = ("CREATE INDEX IF NOT EXISTS audit_by_key ON audit_records (model_sha256, detector, scanner_version, "
              "settings_hash, clean_set, calibration)")


def _writable(path: Path) -> bool:
    """Whether the database at ``path`` may be written: the file (when it exists) and its folder are
    writable by this process and not marked read-only (no write bit; root ignores the bits, the
    owner's intent still holds)."""
    def open_for_writing(p: Path) -> bool:
        return os.access(p, os.W_OK) and bool(p.stat().st_mode & 0o222)

    return (not path.exists() or open_for_writing(path)) and open_for_writing(path.parent)


class AuditDatabase:
    """The SQLite audit database; every write is one transaction. ``read_only``: opened with
    ``mode=ro`` because the file or its folder cannot be written (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.schema = AUDIT_SCHEMA_VERSION
        advice = "move it aside (a new one is created) or pass another --audit-db"
        if self.path.exists() and not self.path.is_file():
            raise IntegrityError(f"{self.path}: audit database path is not a file; {advice}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputFileError(f"{self.path}: cannot create the audit database's folder ({exc})") from None
        self.read_only = not _writable(self.path)
        if self.read_only and not self.path.exists():
            raise IntegrityError(f"{self.path}: cannot create the audit database, its folder {self.path.parent} is "
                                 "read-only; make it writable or pass another --audit-db")
        try:
            if self.read_only:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
            else:
                self._conn = sqlite3.connect(str(self.path), timeout=10.0)
            # quick_check reads every page: a truncated or overwritten file fails here, not mid-run.
            ok = self._conn.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                raise sqlite3.DatabaseError(ok[0] if ok else "quick_check returned nothing")
            version = self._open_schema()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise IntegrityError(f"{self.path}: not a readable audit database ({exc}); {advice}") from None
        except sqlite3.Error as exc:
            self._close_quietly()
            raise IntegrityError(f"{self.path}: cannot open the audit database ({exc})") from None
        if version not in ("1", str(AUDIT_SCHEMA_VERSION)):
            self.close()
            raise IntegrityError(f"{self.path}: audit database schema {version}, this app reads "
                                 f"{AUDIT_SCHEMA_VERSION} (and migrates 1); {advice}")
        self.schema = int(version)

    def _open_schema(self) -> str:
        """Create or migrate the tables (writable), or only read their version (read-only)."""
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if self.read_only:
            if not tables:  # an empty file: no records in it
                return str(AUDIT_SCHEMA_VERSION)
            if not {"audit_records", "meta"} <= tables:
                raise sqlite3.DatabaseError(f"no audit tables (tables {', '.join(sorted(tables))})")
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            return row[0] if row else "(none)"
        with self._conn:
            self._conn.executescript(_SCHEMA)
            self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                               (str(AUDIT_SCHEMA_VERSION),))
            version = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            if version == "1":  # schema 1 -> 2: the key columns; old rows keep '' and never match
                columns = {r[1] for r in self._conn.execute("PRAGMA table_info(audit_records)")}
                for column in KEY_COLUMNS:
                    if column not in columns:
                        self._conn.execute(f"ALTER TABLE audit_records ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                   (str(AUDIT_SCHEMA_VERSION),))
                version = str(AUDIT_SCHEMA_VERSION)
            if version == str(AUDIT_SCHEMA_VERSION):
                self._conn.execute(_KEY_INDEX)
        return version

    def _close_quietly(self) -> None:
        try:
            self._conn.close()
        except Exception:
            pass

    def _rows(self, sql: str, args: tuple) -> list[tuple[int, AuditRecord]]:
        try:
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "audit_records" not in tables:
                return []
            rows = self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise IntegrityError(f"{self.path}: audit database read failed ({exc})") from None
        found = []
        for row_id, text in rows:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise IntegrityError(f"{self.path}: audit record #{row_id} is not JSON ({exc})") from None
            found.append((row_id, AuditRecord.from_dict(data, f"{self.path} audit record #{row_id}")))
        return found

    def find(self, key: RecordKey) -> StoredRecord | None:
        """The newest record whose every key field equals ``key``'s, or None."""
        if self.schema < 2:
            return None  # a read-only schema-1 database: its records carry no key
        rows = self._rows("SELECT id, record_json FROM audit_records WHERE model_sha256 = ? AND detector = ? AND "
                          "scanner_version = ? AND settings_hash = ? AND clean_set = ? AND calibration = ? "
                          "ORDER BY id DESC LIMIT 1",
                          (key.model_sha256, key.detector, key.scanner_version, key.settings_hash, key.clean_set,
                           key.calibration))
        return StoredRecord(rows[0][1], f"audit record #{rows[0][0]} from {self.path}") if rows else None

    def latest(self, model_sha256: str, detector: str) -> StoredRecord | None:
        """The newest record of this model by ``detector``, whatever its key (to say what differs)."""
        rows = self._rows("SELECT id, record_json FROM audit_records WHERE model_sha256 = ? AND detector = ? "
                          "ORDER BY id DESC LIMIT 1", (model_sha256, detector))
        return StoredRecord(rows[0][1], f"audit record #{rows[0][0]} from {self.path}") if rows else None

    def records_for(self, model_sha256: str) -> list[AuditRecord]:
        return [r for _, r in self._rows("SELECT id, record_json FROM audit_records WHERE model_sha256 = ? "
                                         "ORDER BY id", (model_sha256,))]

    def refuse_writes(self, why: str) -> None:
        """Raise when this database is read-only: ``why`` says which record had to be written."""
        if self.read_only:
            raise IntegrityError(f"{self.path}: the audit database is readonly (the file or its folder cannot be "
                                 f"written), and {why}; make it writable or pass another --audit-db")

    def add(self, record: AuditRecord) -> int:
        """Store ``record`` in one transaction; returns its row id."""
        self.refuse_writes(f"a record for model {record.model_sha256[:12]} must be stored")
        values = {"model_sha256": record.model_sha256, "scanner_version": record.scanner_version,
                  "detector": record.detector, "verdict": record.verdict, "scanned_at": record.scanned_at,
                  "record_json": json.dumps(record.to_dict()),
                  **{c: getattr(record, c) for c in KEY_COLUMNS}}
        try:
            with self._conn:  # one transaction: the row is there completely or not at all
                cursor = self._conn.execute(
                    f"INSERT INTO audit_records ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    tuple(values.values()))
        except sqlite3.Error as exc:
            raise IntegrityError(f"{self.path}: cannot write the audit record ({exc})") from None
        return int(cursor.lastrowid)

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

