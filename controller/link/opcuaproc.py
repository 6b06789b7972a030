"""OPC UA, read-only, in a process of its own (the ``opcua`` extra: asyncua).

SCADA and EMS systems read the gateway over OPC UA: the signal image, the
mode, the active alarms and each device's health, as an address space
under ``Objects/Cabguard``:

    Cabguard/Gateway      the gateway id (String)
    Cabguard/Mode         the mode's name (String)
    Cabguard/Alarms       the rules raised and not cleared (String array)
    Cabguard/Signals/<signal>     one Int64 per signal of the catalog, its
                                  unit and decimal scale in the Description
    Cabguard/Devices/<device>     Boolean: online

Nothing is writable.  Anonymous access is off: the server accepts the one
configured user name and password, and nothing else (``[opcua]`` in the
site config).

Like the uplink (controller/link/uplinkproc.py) it runs in a fresh
interpreter at a lower priority, so its asyncio loop and the clients'
browsing never hold the scan loop's interpreter lock.  The gateway side,
``OpcuaProcess``, takes a snapshot at most every ``publish_ms`` from the
scan loop (``offer``: a clock check, and a copy of the image when due) and
a feeder thread sends it down one pipe:

    gateway -> server   (spec)                             first message
                        ("image", values, mode, alarms)     a snapshot
                        ("stop",)

The server process ends when told to or when the pipe closes.
"""

from __future__ import annotations

import hmac
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from controller.link.child import reap, spawn

if TYPE_CHECKING:     # asyncio is the server process's alone: the gateway never loads it
    import asyncio

OPCUA_NICE = 10
STOP_TIMEOUT_S = 5.0
NAMESPACE = "urn:cabguard:gateway"


@dataclass
class OpcuaSpec:
    """What the server process needs to start (pickled to it)."""
    host: str
    port: int
    username: str
    password: str
    gateway_id: str
    signals: list[tuple[str, str, int]]
    devices: list[str]


class OpcuaProcess:
    """The gateway's side: spawn the server, hand it snapshots."""

    def __init__(self, spec: OpcuaSpec, publish_ms: int):
        self.spec = spec
        self.period_s = publish_ms / 1000
        self.next_s = 0.0
        self.slot: tuple | None = None
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.feeder = threading.Thread(target=self._feed, name="opcua-feed", daemon=True)

    def start(self) -> "OpcuaProcess":
        self.process, self.conn = spawn("controller.link.opcuaproc")
        self.conn.send(self.spec)
        self.feeder.start()
        return self

    def offer(self, image: list[int], mode: str, alarms: list[str]) -> None:
        """From the scan loop, every scan: a snapshot when one is due (never blocks)."""
        now = time.monotonic()
        if now >= self.next_s:
            self.next_s = now + self.period_s
            self.slot = (list(image), mode, sorted(alarms))
            self.ready.set()

    def _feed(self) -> None:
        while not self.stopping.is_set():
            self.ready.wait()     # set by offer() when a snapshot is due, and by stop()
            self.ready.clear()
            snap, self.slot = self.slot, None
            if snap is None:
                continue
            try:
                self.conn.send(("image",) + snap)
            except OSError:          # the server is gone; the gateway goes on without it
                return

    def stop(self) -> None:
        self.stopping.set()
        self.ready.set()
        self.feeder.join(2)
        if self.conn is not None:
            try:
                self.conn.send(("stop",))
            except OSError:
                pass
        reap(self.process, STOP_TIMEOUT_S)
        if self.conn is not None:
            self.conn.close()


# ---- the server process ------------------------------------------------------

async def serve(conn: Connection, spec: OpcuaSpec) -> None:
    import asyncio
    from asyncua import Server, ua
    from asyncua.crypto.permission_rules import User, UserRole
    from asyncua.server.user_managers import UserManager

    class OneUser(UserManager):
        """The configured user name and password; no anonymous session, nothing else."""

        def get_user(self, iserver, username=None, password=None, certificate=None):
            if username is None or password is None:
                return None
            same = hmac.compare_digest(username.encode(), spec.username.encode())
            same &= hmac.compare_digest(password.encode(), spec.password.encode())
            return User(role=UserRole.User) if same else None

    server = Server(user_manager=OneUser())
    await server.init()
    server.set_endpoint("opc.tcp://{}:{}/cabguard/".format(spec.host, spec.port))
    server.set_server_name("cabguard {}".format(spec.gateway_id))
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    server.set_identity_tokens([ua.UserNameIdentityToken])      # no anonymous sessions
    ns = await server.register_namespace(NAMESPACE)
    root = await server.nodes.objects.add_object(ns, "Cabguard")
    await root.add_variable(ns, "Gateway", spec.gateway_id)
    mode = await root.add_variable(ns, "Mode", "")
    alarms = await root.add_variable(ns, "Alarms", [], varianttype=ua.VariantType.String)
    folder = await root.add_folder(ns, "Signals")
    signals = []
    for name, unit, scale in spec.signals:
        node = await folder.add_variable(ns, name, 0, varianttype=ua.VariantType.Int64)
        await node.write_attribute(ua.AttributeIds.Description, ua.DataValue(ua.Variant(
            ua.LocalizedText("{} x 10^{}".format(unit, scale)), ua.VariantType.LocalizedText)))
        signals.append(node)
    devices_folder = await root.add_folder(ns, "Devices")
    online = {}
    index = {name: i for i, (name, _u, _s) in enumerate(spec.signals)}
    for dev in spec.devices:
        online[index[dev + ".online"]] = await devices_folder.add_variable(ns, dev, False)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=_listen, args=(conn, loop, inbox), name="gateway-pipe", daemon=True).start()
    last: list[int] | None = None            # after the first snapshot only changes are written
    async with server:
        while True:
            message = await inbox.get()
            if message[0] != "image":
                break
            values, mode_name, raised = message[1], message[2], message[3]
            await mode.write_value(mode_name)
            await alarms.write_value(raised, ua.VariantType.String)
            for i, v in enumerate(values[:len(signals)]):
                if last is None or v != last[i]:
                    await signals[i].write_value(v, ua.VariantType.Int64)
                    if i in online:
                        await online[i].write_value(bool(v))
            last = list(values[:len(signals)])


def _listen(conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):           # the gateway is gone
            message = ("stop",)
        loop.call_soon_threadsafe(inbox.put_nowait, message)
        if message[0] == "stop":
            return


def child_main(conn: Connection) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    os.nice(OPCUA_NICE)
    spec = conn.recv()
    import asyncio
    asyncio.run(serve(conn, spec))
    conn.close()


if __name__ == "__main__":
    child_main(Connection(int(sys.argv[1])))
