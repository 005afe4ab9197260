"""Persistent result cache keyed by (fingerprint digest, content hash), in SQLite.

WAL mode and a busy timeout make it safe for several processes (CLI runs, service workers, Ray
actors) at once; within a process one connection is shared under a lock. Floats are stored as REAL
(float64), so a cached score is bit-identical to the one that was computed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from scoring.types import DocScore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    fingerprint TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    teacher_logprob REAL,
    reference_logprob REAL,
    status TEXT NOT NULL,
    PRIMARY KEY (fingerprint, content_hash)
) WITHOUT ROWID
"""
_MAX_VARS = 900  # stay under SQLite's bound on host parameters per statement


class ScoreCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    def get_many(self, fingerprint: str, hashes: Sequence[str]) -> dict[str, DocScore]:
        found: dict[str, DocScore] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for start in range(0, len(unique), _MAX_VARS):
                part = unique[start : start + _MAX_VARS]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    "SELECT content_hash, n_tokens, teacher_logprob, reference_logprob, status FROM scores "
                    f"WHERE fingerprint = ? AND content_hash IN ({marks})",
                    (fingerprint, *part),
                ).fetchall()
                for h, n, t, r, status in rows:
                    found[h] = (
                        DocScore.from_logprobs(n, t, r) if status == "ok" else DocScore.not_scored(status, n)
                    )
        return found

    def put_many(self, fingerprint: str, items: Iterable[tuple[str, DocScore]]) -> None:
        rows = [
            (fingerprint, h, s.n_tokens, s.teacher_logprob, s.reference_logprob, s.status) for h, s in items
        ]
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
