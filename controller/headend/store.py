"""The head end's store: one schema, two backends (docs/headend.md).

``open_store(target)`` gives SQLite for a file path (the zero-setup default)
and PostgreSQL (psycopg 3) for a ``postgresql://`` URL.  Both run the same
SQL: ``?`` placeholders (rewritten to ``%s`` for psycopg), ``INSERT ... ON
CONFLICT``, ``RETURNING``, window functions.  The schema is a list of
numbered migrations; ``migrate()`` applies the missing ones at open, under
a lock, so collectors started together do not race.

A ``transaction(gateways)`` serialises everything done for those gateways:
PostgreSQL takes a transaction-scoped advisory lock per gateway (in sorted
order, so two collectors never deadlock); SQLite's ``BEGIN IMMEDIATE``
holds the one write lock.  Verdicts computed inside one are therefore the
same whichever collector, in whichever order, stores a gateway's records.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from controller.errors import CabguardError


class StoreError(CabguardError):
    """The head-end database cannot be opened, migrated or written."""


# Each migration: (number, what it does, statements).  {blob}, {id}, {float}
# are the backend's spellings; every integer is BIGINT (sequence numbers and
# wall times need 64 bits; SQLite stores any integer in one).
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "records, heartbeats, kids, problems, equivocations", [
        """CREATE TABLE records (
            gateway TEXT NOT NULL, seq BIGINT NOT NULL, boot BIGINT, wall_ms BIGINT, time_quality BIGINT,
            type BIGINT, severity BIGINT, kid TEXT, tag {blob} NOT NULL, prev {blob} NOT NULL,
            record {blob} NOT NULL, received_at {float} NOT NULL, PRIMARY KEY (gateway, seq))""",
        """CREATE TABLE heartbeats (gateway TEXT NOT NULL, received_at {float} NOT NULL, doc TEXT NOT NULL)""",
        # every kid a verified record was under: a restarted collector knows the epochs without a table scan
        "CREATE TABLE kids (kid TEXT PRIMARY KEY, first_seen {float} NOT NULL)",
        "CREATE INDEX heartbeats_gateway ON heartbeats (gateway, received_at)",
        """CREATE TABLE problems (id {id}, gateway TEXT, seq BIGINT, kind TEXT NOT NULL, detail TEXT NOT NULL,
            received_at {float} NOT NULL)""",
        """CREATE TABLE equivocations (id {id}, gateway TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
            tag {blob} NOT NULL, record {blob}, detail TEXT NOT NULL, received_at {float} NOT NULL,
            UNIQUE (gateway, seq, kind, tag))""",
    ]),
    (2, "gateways and anchored checkpoints", [
        """CREATE TABLE gateways (gateway TEXT PRIMARY KEY, site TEXT, mode TEXT, last_hb_at {float},
            last_hb_wall_ms BIGINT, last_seq BIGINT, silent BIGINT NOT NULL DEFAULT 0)""",
        """CREATE TABLE checkpoints (gateway TEXT NOT NULL, seq BIGINT NOT NULL, tag {blob} NOT NULL,
            hb_wall_ms BIGINT, state TEXT NOT NULL, received_at {float} NOT NULL, PRIMARY KEY (gateway, seq))""",
    ]),
    (3, "incidents, notifications and their deliveries", [
        """CREATE TABLE incidents (id {id}, gateway TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
            opened_at {float} NOT NULL, first_seq BIGINT, last_seq BIGINT, records BIGINT NOT NULL,
            detail TEXT NOT NULL, closed_at {float}, acked_at {float}, acked_by TEXT)""",
        "CREATE INDEX incidents_open ON incidents (gateway, kind, state)",
        """CREATE TABLE notifications (id {id}, incident BIGINT NOT NULL, gateway TEXT NOT NULL,
            kind TEXT NOT NULL, created_at {float} NOT NULL, payload TEXT NOT NULL)""",
        """CREATE TABLE deliveries (id {id}, notification BIGINT NOT NULL, sink TEXT NOT NULL, state TEXT NOT NULL,
            attempts BIGINT NOT NULL, next_at {float} NOT NULL, last_error TEXT NOT NULL,
            delivered_at {float})""",
        "CREATE INDEX deliveries_due ON deliveries (state, next_at)",
    ]),
    (4, "command log", [
        """CREATE TABLE commands (id {id}, gateway TEXT NOT NULL, site TEXT NOT NULL, seq BIGINT NOT NULL,
            name TEXT NOT NULL, args TEXT NOT NULL, expiry BIGINT NOT NULL, sent_at {float} NOT NULL,
            state TEXT NOT NULL)""",
    ]),
]

SPELLINGS = {
    "sqlite": {"blob": "BLOB", "id": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "DOUBLE PRECISION"},
    "postgresql": {"blob": "BYTEA", "id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                   "float": "DOUBLE PRECISION"},
}
MIGRATION_LOCK = 0x6361_6267      # advisory lock key while migrating ("cabg")


def is_postgres(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


class Store:
    """One connection to the head-end database (one per thread)."""

    kind = ""

    def __init__(self, target: str | Path):
        self.target = str(target)

    # Each backend has: execute(sql, params) -> cursor (fetchone/fetchall), close(),
    # _begin(sorted gateways) and _migrating() (context managers), _has_table(name).
    @contextmanager
    def transaction(self, gateways: Iterable[str] = ()) -> Iterator["Store"]:
        """Everything inside commits together; the gateways are locked until then."""
        with self._begin(sorted(set(gateways))):
            yield self

    def clone(self) -> "Store":
        """Another connection to the same database (for another thread)."""
        return open_store(self.target, migrate_now=False)

    def many(self, sql: str, rows: list[tuple]) -> list[list[tuple]]:
        """One statement for each parameter row; each row's result rows (PostgreSQL: one round trip)."""
        return [self.execute(sql, r).fetchall() for r in rows]

    def insert_records(self, rows: list[tuple]) -> set[tuple[str, int]]:
        """Insert rows of the records table unless (gateway, seq) is held; the keys inserted."""
        inserted = self.many("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (gateway, seq) "
                             "DO NOTHING RETURNING gateway, seq", rows)
        return {tuple(r[0]) for r in inserted if r}

    def lookup(self, table: str, columns: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
        """``columns`` of the rows of ``table`` (keyed by gateway, seq) that exist among ``keys``."""
        found = self.many("SELECT gateway, seq, {} FROM {} WHERE gateway=? AND seq=?".format(columns, table), keys)
        return {(r[0][0], r[0][1]): tuple(r[0][2:]) for r in found if r}

    def anchors(self, gateway: str) -> list[tuple[int, bytes]]:
        """The (seq, tag) checkpoints the gateway's heartbeats anchored, oldest first; a contradicted
        one is left out (it is an equivocation, and the record the head end holds says otherwise)."""
        rows = self.execute("SELECT seq, tag FROM checkpoints WHERE gateway=? AND state != 'contradicted' "
                            "ORDER BY seq", (gateway,)).fetchall()
        return [(seq, bytes(tag)) for seq, tag in rows]

    def version(self) -> int:
        row = self.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; the numbers applied."""
        spell = SPELLINGS[self.kind]
        applied = []
        with self._migrating():
            self.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, "
                         "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            have = {r[0] for r in self.execute("SELECT version FROM schema_migrations").fetchall()}
            if not have and self._has_table("records"):
                raise StoreError("{} holds a head-end database from before numbered migrations (cabguard "
                                 "collect of 2026-11 or older): give a new database; the old file stays "
                                 "readable with sqlite3".format(self.target))
            for number, name, statements in MIGRATIONS:
                if number in have:
                    continue
                for sql in statements:
                    self.execute(sql.format(**spell))
                self.execute("INSERT INTO schema_migrations VALUES (?,?,?)", (number, name, time.time()))
                applied.append(number)
        return applied


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, target: str | Path):
        super().__init__(target)
        try:
            self.db = sqlite3.connect(self.target, isolation_level=None, check_same_thread=False, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise StoreError("cannot open SQLite database {}: {}".format(self.target, e)) from None

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, tuple(params))

    @contextmanager
    def _begin(self, gateways: list[str]) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")      # the one writer: every gateway is locked
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def _migrating(self) -> Iterator[None]:
        with self._begin([]):
            yield

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                               (name,)).fetchone() is not None

    def close(self) -> None:
        self.db.close()


class PostgresStore(Store):
    kind = "postgresql"

    def __init__(self, target: str):
        super().__init__(target)
        try:
            import psycopg      # the `headend` extra: only a PostgreSQL head end needs it
        except ImportError:
            raise StoreError("--db {} needs psycopg 3: pip install 'cabguard[headend]'".format(
                _redacted(target))) from None
        self.errors = psycopg.errors
        try:
            self.db = psycopg.connect(target, autocommit=True)
        except psycopg.Error as e:
            raise StoreError("cannot connect to PostgreSQL {}: {}".format(_redacted(target), e)) from None
        self._sql: dict[str, str] = {}

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        pg = self._sql.get(sql)
        if pg is None:
            pg = self._sql[sql] = sql.replace("?", "%s")
        with self._lost():
            return self.db.execute(pg, tuple(params))

    @contextmanager
    def _lost(self) -> Iterator[None]:
        """A server gone away is a message, not a traceback: the collector ends (its supervisor
        starts it again) and the broker delivers what it had not acknowledged once more."""
        try:
            yield
        except self.errors.OperationalError as e:
            raise StoreError("PostgreSQL {}: {} (what was not stored is delivered again when a collector "
                             "reconnects)".format(_redacted(self.target), str(e).strip())) from None

    def many(self, sql: str, rows: list[tuple]) -> list[list[tuple]]:
        if not rows:
            return []
        cur = self.db.cursor()
        with self._lost():
            cur.executemany(sql.replace("?", "%s"), rows, returning=True)    # pipelined
        out = []
        while True:
            out.append(cur.fetchall() if cur.pgresult is not None and cur.description else [])
            if not cur.nextset():
                return out

    # Set-based forms of the two per-batch statements: one statement for a whole batch.
    def insert_records(self, rows: list[tuple]) -> set[tuple[str, int]]:
        if not rows:
            return set()
        cols = list(zip(*rows))
        types = ("text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text", "bytea", "bytea",
                 "bytea", "float8")
        sql = "INSERT INTO records SELECT * FROM unnest({}) ON CONFLICT (gateway, seq) DO NOTHING " \
              "RETURNING gateway, seq".format(", ".join("%s::{}[]".format(t) for t in types))
        with self._lost():
            return {(gw, seq) for gw, seq in self.db.execute(sql, [list(c) for c in cols]).fetchall()}

    def lookup(self, table: str, columns: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
        if not keys:
            return {}
        sql = "SELECT t.gateway, t.seq, {} FROM {} t JOIN unnest(%s::text[], %s::bigint[]) AS k(gateway, seq) " \
              "ON t.gateway = k.gateway AND t.seq = k.seq".format(
                  ", ".join("t." + c.strip() for c in columns.split(",")), table)
        with self._lost():
            rows = self.db.execute(sql, [[k[0] for k in keys], [k[1] for k in keys]]).fetchall()
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}

    @contextmanager
    def _begin(self, gateways: list[str]) -> Iterator[None]:
        with self._lost(), self.db.transaction():
            for gw in gateways:
                self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (gw,))
            yield

    @contextmanager
    def _migrating(self) -> Iterator[None]:
        with self.db.transaction():
            self.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            yield

    def _has_table(self, name: str) -> bool:
        return self.execute("SELECT to_regclass(?)", (name,)).fetchone()[0] is not None

    def close(self) -> None:
        self.db.close()


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, cred = head.partition("://")
    return "{}://{}:***@{}".format(scheme, cred.partition(":")[0], tail) if ":" in cred else url


def open_store(target: str | Path, migrate_now: bool = True) -> Store:
    """SQLite for a path, PostgreSQL for a ``postgresql://`` URL; migrated unless told not to."""
    store: Store = PostgresStore(str(target)) if is_postgres(target) else SqliteStore(Path(target))
    if migrate_now:
        store.migrate()
    return store
