"""A simulated fleet for the head end's kill test and bench: sealed record chains
published by a few MQTT clients as the gateways' uplinks would, and
``cabguard collect`` processes in one shared subscription group, killed and
restarted at will (tests/test_headend_kill.py, ``cabguard bench --only headend``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from controller.devtools.sealed import SealedChain
from controller.errors import CabguardError
from controller.link.wire import Topics
from drivers.keys import write_key
from drivers.mqtt import ACKED, BrokerSettings, MqttLink

CABGUARD = str(Path(sys.executable).parent / "cabguard")
SITE = "sim"


def write_keys(folder: Path, chains: list[SealedChain]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for c in chains:
        write_key(folder / "{}.record.key".format(c.gateway), c.key)
    return folder


class Publisher:
    """One MQTT client publishing for many gateways at QoS 1, waiting for the broker's acks."""

    def __init__(self, broker: str, client_id: str, prefix: str = "cabguard"):
        host, _, port = broker.rpartition(":")
        self.link = MqttLink(BrokerSettings(host, int(port), client_id=client_id))
        self.prefix = prefix
        self.inflight: set[int] = set()
        why = self.link.connect()
        if why:
            raise CabguardError(why)
        deadline = time.monotonic() + 10
        while not self.link.connected:
            self.pump(0.05)
            if time.monotonic() > deadline:
                raise CabguardError("publisher {} did not connect to {}".format(client_id, broker))

    def pump(self, timeout_s: float = 0.0) -> None:
        self.link.poll(timeout_s)
        while self.link.events:
            ev = self.link.events.popleft()
            if ev[0] == ACKED:
                self.inflight.discard(ev[1])

    def publish(self, gateway: str, kind: str, payload: bytes, qos: int = 1) -> None:
        t = Topics(self.prefix, SITE, gateway)
        mid = self.link.publish(t.records if kind == Topics.RECORDS else t.heartbeat, payload, qos=qos)
        if mid is None:
            raise CabguardError("publisher lost its broker connection")
        if qos:
            self.inflight.add(mid)

    def settle(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.inflight:
            self.pump(0.05)
            if time.monotonic() > deadline:
                raise CabguardError("{} publications not acknowledged".format(len(self.inflight)))

    def close(self) -> None:
        self.link.close()


class Collectors:
    """``cabguard collect`` processes in one shared group, one database; ``kill(i)`` is SIGKILL."""

    def __init__(self, broker: str, keys: Path, db: str, n: int, group: str = "head-end",
                 config: Path | None = None, log: Path | None = None):
        self.argv = [CABGUARD, "collect", "--broker", broker, "--key", str(keys), "--db", db, "--share", group]
        self.group = group
        if config:
            self.argv += ["--config", str(config)]
        self.log = log
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.kills = 0
        for i in range(n):
            self.start(i)

    def start(self, i: int) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.procs[i] = subprocess.Popen(self.argv + ["--client-id", "{}-{}".format(self.group, i)],
                                         stdout=out, stderr=out)

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
            self.kills += 1
        self.start(i)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc."""
    fields = Path("/proc/{}/stat".format(pid)).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
