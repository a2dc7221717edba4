"""The trial log: every frame of a trial in a SQLite file (docs/architecture.md sections 9 and 10).

Tables (schema :data:`SCHEMA_VERSION`, recorded in ``schema_version``):

* ``trials``: one row per trial: participant id, protocol, phases, model path and sha256, the
  integrity verdict, source, trigger kind, start/end time (UTC ISO 8601), ``interrupted`` (a trial
  without an end time was killed and reads as interrupted too: :attr:`TrialInfo.status`);
* ``frames``: one row per processed frame: trial id, frame index, ``t_s`` (source time, s),
  phase name and index, ``trigger_on`` (0/1), target name, target gaze, prediction (camera frame,
  and the model's own normalised frame), ``face_found``, ``latency_ms`` (processing time of the
  frame), the model's sha256.

All angles are **degrees**, (pitch, yaw) as in :mod:`securegaze.geometry`; NULL where there is no
value (no face: no prediction). ``target_norm_*`` is the target rotated into the frame's
normalised camera (where an attacker's target gaze lives, since it is a model output).

Durability: frames are handed to :meth:`TrialLog.add` from the frame loop and written by a writer
thread that commits whatever is queued in one transaction, as soon as it is queued (so commits
follow the frame rate, batching only when the disk is slower). WAL mode with synchronous=NORMAL:
a committed frame survives the process being killed. :meth:`TrialLog.close` drains the queue, so a
trial stopped by Ctrl-C or SIGTERM loses no frame that reached :meth:`add`.

A database from a newer schema is refused (never "upgraded" by an old app), and so is a file that
is not a trial database.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securegaze.errors import InputFileError, SecureGazeError

SCHEMA_VERSION = 1


class TrialLogError(SecureGazeError):
    """The trial database cannot be used (newer schema, not a trial database, unwritable)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    participant TEXT NOT NULL,
    protocol TEXT NOT NULL,
    phases_json TEXT NOT NULL,
    model_path TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    integrity_verdict TEXT,
    source TEXT NOT NULL,
    trigger_kind TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    settings_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS frames (
    trial_id INTEGER NOT NULL REFERENCES trials (id),
    frame INTEGER NOT NULL,
    t_s REAL NOT NULL,
    phase TEXT NOT NULL,
    phase_index INTEGER NOT NULL,
    trigger_on INTEGER NOT NULL CHECK (trigger_on IN (0, 1)),
    target TEXT,
    target_pitch_deg REAL,
    target_yaw_deg REAL,
    target_norm_pitch_deg REAL,
    target_norm_yaw_deg REAL,
    face_found INTEGER NOT NULL,
    pred_pitch_deg REAL,
    pred_yaw_deg REAL,
    pred_norm_pitch_deg REAL,
    pred_norm_yaw_deg REAL,
    latency_ms REAL,
    model_sha256 TEXT NOT NULL,
    PRIMARY KEY (trial_id, frame)
);
"""

FRAME_COLUMNS = ("trial_id", "frame", "t_s", "phase", "phase_index", "trigger_on", "target", "target_pitch_deg",
                 "target_yaw_deg", "target_norm_pitch_deg", "target_norm_yaw_deg", "face_found", "pred_pitch_deg",
                 "pred_yaw_deg", "pred_norm_pitch_deg", "pred_norm_yaw_deg", "latency_ms", "model_sha256")


@dataclass(frozen=True)
class TrialInfo:
    """A row of ``trials`` (see the module docstring)."""

    id: int
    participant: str
    protocol: str
    phases: list
    model_path: str
    model_sha256: str
    integrity_verdict: str | None
    source: str
    trigger_kind: str | None
    started_at: str
    ended_at: str | None
    interrupted: bool
    settings: dict

    @property
    def status(self) -> str:
        """``finished``, or ``interrupted``: stopped by Ctrl-C / SIGTERM, or without an end time
        (its process was killed, or it is still recording)."""
        return "finished" if self.ended_at is not None and not self.interrupted else "interrupted"

    @property
    def status_detail(self) -> str:
        """Why the trial counts as interrupted ("" when it finished)."""
        if self.ended_at is None:
            return "no end time: the process was killed (or is still recording)"
        return "stopped by Ctrl-C or SIGTERM" if self.interrupted else ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status, "status_detail": self.status_detail}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_database(path: str | os.PathLike, create: bool) -> sqlite3.Connection:
    """A connection to a checked trial database; ``create``: make a new one if missing.

    Raises :class:`TrialLogError` for a newer schema or a file that is not a trial database, and
    InputFileError for a missing file when ``create`` is False.
    """
    path = Path(path)
    if not create and not path.is_file():
        raise InputFileError(f"{path}: trial database not found")
    if path.exists() and not path.is_file():
        raise TrialLogError(f"{path}: is not a file")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
    except sqlite3.Error as exc:
        raise TrialLogError(f"{path}: cannot open the trial database ({exc})") from None
    try:
        ok = conn.execute("PRAGMA quick_check").fetchone()
        if not ok or ok[0] != "ok":
            raise sqlite3.DatabaseError(ok[0] if ok else "quick_check returned nothing")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "schema_version" not in tables:
            raise TrialLogError(f"{path}: not a trial database (tables {', '.join(sorted(tables))}); "
                                "pass the file 'edge-app trial --db' wrote")
        if "schema_version" in tables:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0] if row else None
            if version is None:
                raise TrialLogError(f"{path}: trial database without a schema version")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise TrialLogError(f"{path}: not a trial database (its schema_version table holds {version!r}, "
                                    "not a schema number); pass the file 'edge-app trial --db' wrote")
            if version > SCHEMA_VERSION:
                raise TrialLogError(f"{path}: trial database schema {version} was written by a newer edge-app; "
                                    f"this one reads schema {SCHEMA_VERSION} and older (upgrade edge-app, or "
                                    "record into a new file)")
            missing = [t for t in ("trials", "frames") if t not in tables]
            if missing:
                raise TrialLogError(f"{path}: not a complete trial database (no {' or '.join(missing)} table); "
                                    "pass the file 'edge-app trial --db' wrote, or record into a new file")
        elif not create:
            raise TrialLogError(f"{path}: empty file, not a trial database")
        else:
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        if create:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
    except TrialLogError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise TrialLogError(f"{path}: not a readable trial database ({exc})") from None
    return conn


class TrialLog:
    """Writes one trial into a database (see the module docstring).

    ``start(...)`` creates the trial row; ``add(row)`` queues a frame row (a dict keyed by the
    ``frames`` columns, ``trial_id`` and ``model_sha256`` filled in here); ``close(interrupted)``
    drains the queue, commits and stamps the end time. ``logged``: frames committed so far.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._conn = open_database(self.path, create=True)
        self.trial_id: int | None = None
        self.model_sha256 = ""
        self.logged = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, participant: str, protocol: str, phases: list, model_path: str, model_sha256: str,
              integrity_verdict: str | None, source: str, trigger_kind: str | None,
              settings: dict | None = None) -> int:
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO trials (participant, protocol, phases_json, model_path, model_sha256, integrity_verdict, "
                "source, trigger_kind, started_at, settings_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (participant, protocol, json.dumps(phases), model_path, model_sha256, integrity_verdict, source,
                 trigger_kind, _now(), json.dumps(settings or {})))
        self.trial_id = int(cur.lastrowid)
        self.model_sha256 = model_sha256
        self._thread = threading.Thread(target=self._run, name="trial-log", daemon=True)
        self._thread.start()
        return self.trial_id

    def add(self, row: dict[str, Any]) -> None:
        if self.trial_id is None or self._closed:
            raise RuntimeError("TrialLog.add before start() or after close()")
        if self.error is not None:
            raise TrialLogError(f"{self.path}: writing the trial log failed ({self.error})")
        full = {**row, "trial_id": self.trial_id, "model_sha256": self.model_sha256}
        self._queue.put(tuple(full.get(c) for c in FRAME_COLUMNS))

    def _run(self) -> None:
        sql = f"INSERT INTO frames ({', '.join(FRAME_COLUMNS)}) VALUES ({', '.join('?' * len(FRAME_COLUMNS))})"
        done = False
        while not done:
            batch = [self._queue.get()]
            while True:  # everything already queued goes into this transaction
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is None:
                batch.pop()
                done = True
            rows = [r for r in batch if r is not None]
            if not rows:
                continue
            try:
                with self._conn:
                    self._conn.executemany(sql, rows)
                self.logged += len(rows)
            except sqlite3.Error as exc:
                self.error = exc
                return

    def close(self, interrupted: bool = False) -> None:
        """Write every queued frame, mark the trial ended; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        try:
            if self.trial_id is not None:
                with self._conn:
                    self._conn.execute("UPDATE trials SET ended_at = ?, interrupted = ? WHERE id = ?",
                                       (_now(), int(interrupted), self.trial_id))
        finally:
            self._conn.close()
        if self.error is not None:
            raise TrialLogError(f"{self.path}: writing the trial log failed ({self.error})")


def read_trials(path: str | os.PathLike) -> list[TrialInfo]:
    conn = open_database(path, create=False)
    try:
        rows = conn.execute("SELECT id, participant, protocol, phases_json, model_path, model_sha256, "
                            "integrity_verdict, source, trigger_kind, started_at, ended_at, interrupted, "
                            "settings_json FROM trials ORDER BY id").fetchall()
    finally:
        conn.close()
    return [TrialInfo(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]),
                      json.loads(r[12])) for r in rows]


def read_frames(path: str | os.PathLike, trial_id: int) -> list[dict[str, Any]]:
    """The frames of one trial in frame order, as dicts keyed by column."""
    conn = open_database(path, create=False)
    try:
        cur = conn.execute(f"SELECT {', '.join(FRAME_COLUMNS)} FROM frames WHERE trial_id = ? ORDER BY frame",
                           (trial_id,))
        return [dict(zip(FRAME_COLUMNS, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()


def committed_frame_count(path: str | os.PathLike) -> int:
    """How many frames a trial database holds now, read while a trial may still be writing it
    (0 while the file or its table does not exist yet). For watching a running trial."""
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet, or mid-creation
        return 0
