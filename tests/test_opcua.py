"""OPC UA, read-only, in its own process (controller/link/opcuaproc.py): a real
gateway on the simulator, asyncua's own client, anonymous access refused."""

from __future__ import annotations

import asyncio

import pytest

asyncua = pytest.importorskip("asyncua")

from asyncua import Client, ua  # noqa: E402

from controller.core import modes  # noqa: E402
from controller.core.events import CMD_ARM  # noqa: E402
from simulator.broker import free_port  # noqa: E402
from tests.test_runtime import cabinet, start, stop  # noqa: E402,F401 (cabinet: the fixture)
from tests.waiting import wait_until  # noqa: E402

PASSWORD = "scada-reads-only-1"


async def read_as(url: str, user: str | None, password: str | None, names: list[str]) -> list:
    client = Client(url, timeout=5)
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    async with client:
        ns = await client.get_namespace_index("urn:cabguard:gateway")
        root = await client.nodes.objects.get_child(["{}:Cabguard".format(ns)])
        out = []
        for path in names:
            node = await root.get_child(["{}:{}".format(ns, p) for p in path.split("/")])
            out.append(await node.read_value())
        try:
            await (await root.get_child(["{}:Mode".format(ns)])).write_value("disarmed")
            out.append("written")
        except ua.UaStatusCodeError:
            out.append("refused")
        return out


def test_scada_reads_the_image_and_mode_with_its_user_and_nobody_anonymous(cabinet):
    sim, site, _d = cabinet
    port = free_port()
    site.write_text(site.read_text() + '\n[opcua]\nlisten = "127.0.0.1:{}"\nusername = "scada"\npassword = "{}"\npublish_ms = 200\n'
                    .format(port, PASSWORD))
    gw, thread = start(site)
    url = "opc.tcp://127.0.0.1:{}/cabguard/".format(port)
    try:
        assert wait_until(lambda: gw.image[gw.catalog.index["io.online"]], 5)

        def mode_seen(want: str) -> bool:
            try:
                got = asyncio.run(read_as(url, "scada", PASSWORD, ["Mode"]))
            except (OSError, asyncio.TimeoutError, ua.UaError):
                return False          # the server process is still starting
            return got[0] == want
        assert wait_until(lambda: mode_seen("disarmed"), 30, 0.3)
        got = asyncio.run(read_as(url, "scada", PASSWORD, ["Gateway", "Signals/io.door_bolt", "Devices/io"]))
        assert got == ["gw-test", 1, True, "refused"]          # read-only
        assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(2) == "ok"
        assert wait_until(lambda: gw.state.mode in (modes.ARMING, modes.ARMED), 3)
        assert wait_until(lambda: mode_seen("arming") or mode_seen("armed"), 10, 0.3)
        with pytest.raises(ua.UaStatusCodeError, match="BadIdentityTokenRejected"):    # no anonymous session
            asyncio.run(read_as(url, None, None, ["Mode"]))
        with pytest.raises(ua.UaStatusCodeError, match="BadUserAccessDenied"):
            asyncio.run(read_as(url, "scada", "wrong-password-x", ["Mode"]))
    finally:
        stop(gw, thread)
