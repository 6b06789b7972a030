"""Helpers shared by the journal tests: a provisioned journal and its frames."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cbor2

from controller.journal import records as R
from controller.journal.journal import Journal, default_clock
from controller.journal.segments import HEAD, Bad, iter_frames, list_segments
from drivers.cose import ALG_AES_MAC_128_128, decode
from drivers.keys import CoseKey, EpochKeys, generate, role_kid, write_key


def provision(tmp: Path, alg: int = ALG_AES_MAC_128_128, gateway: str = "gw-7") -> tuple[CoseKey, Path]:
    """A provisioning record key (also written to tmp/record.key, 0600)."""
    key = generate(role_kid(gateway, "record"), alg)
    path = tmp / "record.key"
    write_key(path, key)
    return key, path


def flashed_keys(d: Path, gateway: str = "gw-test") -> Path:
    """Keys as flash.sh leaves them: all three generated into ``d/keys`` (the installer's
    and head end's copy) and epoch 0 of the record key in the gateway's state folder
    ``d/state``; the root record key is not on the gateway.  Returns the keys folder."""
    from controller.cli.provision import flashed_keys as flash
    flash(gateway, d / "keys", d / "state")
    return d / "keys"


def open_journal(tmp: Path, prov: CoseKey | None = None, **kw) -> Journal:
    return Journal.open(tmp / "journal", "gw-7", tmp / "epoch.key", prov, **kw)


def event_record(i: int, severity: int = 0) -> dict:
    """A rule event record whose data carries ``i`` (to find it again)."""
    c = default_clock()
    rec = R.from_event((3, i, severity, 1), R.Context(c.wall_ms, True, c.mono_ms, [i, 1, 2, 3]))
    return rec


def write_records(tmp: Path, prov: CoseKey | None, n: int, **kw) -> list[int]:
    with open_journal(tmp, prov, **kw) as j:
        seqs = [j.append(event_record(i)) for i in range(n)]
    return seqs


def frames(tmp: Path) -> list[tuple[Path, int, bytes]]:
    """Every good frame as (segment path, offset, record bytes)."""
    out = []
    for _n, path in list_segments(tmp / "journal"):
        for item in iter_frames(path.read_bytes()):
            if not isinstance(item, Bad):
                out.append((path, item[0], item[1]))
    return out


def frame_span(record: bytes) -> int:
    return HEAD.size + len(record)


def kill_rounds(tmp_path: Path, kills: int, per_journal: int) -> Iterator[tuple[int, Path, CoseKey, bool]]:
    """(kill, journal folder, provisioning key, fresh) for each kill of a kill test: a fresh
    journal every ``per_journal`` kills keeps each verification quick."""
    for kill in range(kills):
        fresh = kill % per_journal == 0
        if fresh:
            tmp = tmp_path / "run{}".format(kill)
            tmp.mkdir()
            prov, _ = provision(tmp)
        yield kill, tmp, prov, fresh


def payload(tmp: Path, prov: CoseKey, record: bytes) -> dict:
    """A sealed record's content, opened with the epoch key it names (from the provisioning key)."""
    msg = decode(record)
    return cbor2.loads(msg.verify(EpochKeys(prov).key_for(msg.kid).k))


def payloads(tmp: Path, prov: CoseKey) -> list[dict]:
    """Every good record's content, oldest first."""
    return [payload(tmp, prov, record) for _path, _off, record in frames(tmp)]


def append_sent(j: Journal, n: int) -> None:
    """Rule records 0 .. n - 1, durable, then acknowledged as the uplink does: all sent, so retention may drop them."""
    for i in range(n):
        j.append(event_record(i))
    j.flush()
    j.set_cursor(j.durable_seq)
