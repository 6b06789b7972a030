"""Video-analytics events in (controller/gateway/cameras.py, lanlink.py, webhook.py)
and the MQTT outputs (actuators.py): real Mosquitto on loopback, real HTTP."""

from __future__ import annotations

import http.client
import json
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt import subscribe
from paho.mqtt.enums import CallbackAPIVersion

from controller.core.catalog import ZONE_SIGNALS, Catalog, camera_signals
from controller.gateway.actuators import MqttOutput
from controller.gateway.cameras import CameraFeed, CameraSpec, ReportError, parse_active
from controller.gateway.config import ConfigError, parse
from controller.gateway.lanlink import LanLink
from controller.gateway.webhook import SECRET_HEADER, Webhook, listen_problem
from drivers.mqtt import BrokerSettings
from tests.sitetext import MINIMAL_SITE
from tests.test_cli import cabguard
from tests.test_runtime import cabinet  # noqa: F401 (the fixture)
from tests.waiting import wait_until

SECRET = "s3cret-s3cret-s3cret"


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def feed(clock=None) -> tuple[CameraFeed, Catalog, list[int]]:
    catalog = Catalog(list(ZONE_SIGNALS) + camera_signals(["gate", "yard"]))
    cams = [CameraSpec("gate", "nvr/gate", 60_000, 10_000), CameraSpec("yard", "", 30_000, 5_000)]
    f = CameraFeed(catalog, cams, clock or FakeClock())
    return f, catalog, catalog.new_image()


def values(catalog: Catalog, image: list[int], *names: str) -> tuple[int, ...]:
    return tuple(image[catalog.index[n]] for n in names)


@pytest.mark.parametrize("payload, active", [
    (b"1", True), (b"0", False), (b" true\n", True), (b"OFF", False), (b"", False),
    (b'{"active": true, "zone": 2}', True), (b'{"active": false}', False)])
def test_payloads_read(payload, active):
    assert parse_active(payload) is active


@pytest.mark.parametrize("payload", [b"2", b'{"active": 1}', b"[true]", b"x" * 2000])
def test_unreadable_payloads_are_refused(payload):
    with pytest.raises(ReportError):
        parse_active(payload)


def test_never_heard_is_offline_fresh_is_online_and_a_dead_camera_is_known_dead():
    clock = FakeClock()
    f, cat, image = feed(clock)
    f.fill(image, clock.ms)
    assert values(cat, image, "cam.gate.online", "cam.gate.person", "zone.person") == (0, 0, 0)
    f.report("gate", "person", True)
    f.fill(image, clock.ms)
    assert values(cat, image, "cam.gate.online", "cam.gate.person", "zone.person", "cam.yard.online") == (1, 1, 1, 0)
    clock.ms += 9_999
    f.fill(image, clock.ms)
    assert values(cat, image, "cam.gate.person") == (1,)
    clock.ms += 1                       # hold_s ran out with no end report
    f.fill(image, clock.ms)
    assert values(cat, image, "cam.gate.person", "cam.gate.online") == (0, 1)
    f.report("gate", "tamper", True)
    f.report("gate", "tamper", False)   # an end report ends it at once
    f.report("gate", "heartbeat", True)
    f.fill(image, clock.ms)
    assert values(cat, image, "cam.gate.tamper", "cam.gate.online") == (0, 1)
    f.report("gate", "vehicle", True)
    f.fill(image, clock.ms)
    clock.ms += 60_001                  # nothing for longer than fresh_s: dead, and all it said unknown
    f.fill(image, clock.ms)
    assert values(cat, image, "cam.gate.online", "cam.gate.vehicle", "zone.vehicle") == (0, 0, 0)


def test_topics_map_to_cameras_and_strays_are_counted():
    f, cat, image = feed()
    assert f.by_topic("nvr/gate/loiter") == ("gate", "loiter")
    f.on_mqtt("nvr/gate/bogus", b"1")
    f.on_mqtt("nvr/other/person", b"1")
    f.on_mqtt("nvr/gate/person", b"maybe")
    f.fill(image, f.clock_ms())
    assert f.refused == 3 and image[cat.index["cam.gate.online"]] == 0


@pytest.mark.parametrize("host, ok", [("127.0.0.1", True), ("10.1.2.3", True), ("192.168.7.2", True),
                                      ("::1", True), ("0.0.0.0", False), ("8.8.8.8", False),
                                      ("169.254.1.1", False), ("cam.local", False)])
def test_the_webhook_listens_on_loopback_or_the_lan_only(host, ok):
    assert (listen_problem(host) is None) is ok


def test_the_webhook_takes_good_reports_and_refuses_the_rest():
    f, cat, image = feed(lambda: time.monotonic_ns() // 1_000_000)
    hook = Webhook("127.0.0.1", 0, SECRET, f).start()
    try:
        def call(method, path, body=b"", secret=SECRET):
            conn = http.client.HTTPConnection("127.0.0.1", hook.port, timeout=5)
            conn.request(method, path, body, {SECRET_HEADER: secret} if secret else {})
            status = conn.getresponse().status
            conn.close()
            return status
        assert call("POST", "/cam/yard/person", b"1", secret="wrong-wrong-wrong-wrong") == 401
        assert call("POST", "/cam/yard/person", b"1", secret="") == 401
        assert call("POST", "/cam/shed/person", b"1") == 404
        assert call("POST", "/cam/yard/dance", b"1") == 404
        assert call("POST", "/cam/yard/person", b"maybe") == 400
        assert call("POST", "/cam/yard/person", b"1" * 2000) == 413
        assert not f.pending
        assert call("POST", "/cam/yard/person", b'{"active": true}') == 204
        assert call("GET", "/cam/yard/tamper?active=1&secret=" + SECRET, secret="") == 204
        f.fill(image, f.clock_ms())
        assert values(cat, image, "cam.yard.online", "cam.yard.person", "cam.yard.tamper") == (1, 1, 1)
        assert hook.refused == 6 and hook.taken == 2
    finally:
        hook.stop()


def test_camera_events_and_output_commands_cross_a_real_broker(broker):
    f, cat, image = feed(lambda: time.monotonic_ns() // 1_000_000)
    settings = BrokerSettings("127.0.0.1", broker.port, client_id="gw-lan")
    health: list[str] = []
    link = LanLink(settings, ["nvr/gate/+"], f.on_mqtt, health.append)
    out = MqttOutput(link, "vms/ptz/gate/preset", "3", "1")
    out.set(1)                          # before the broker answered: sent once connected
    link.start()
    seen: list[tuple[str, bytes, bool]] = []
    nvr = paho.Client(CallbackAPIVersion.VERSION2, client_id="nvr")
    nvr.on_message = lambda _c, _u, m: seen.append((m.topic, m.payload, m.retain))
    nvr.on_connect = lambda c, _u, _f, _r, _p: c.subscribe("vms/#", qos=1)    # again after the outage
    try:
        assert link.connected.wait(10)
        nvr.connect("127.0.0.1", broker.port)
        nvr.loop_start()
        assert wait_until(lambda: seen, 10)
        assert seen[0][:2] == ("vms/ptz/gate/preset", b"3")
        late = subscribe.simple("vms/ptz/gate/preset", hostname="127.0.0.1", port=broker.port, keepalive=5)
        assert (late.payload, late.retain) == (b"3", True)   # retained: a late NVR gets the newest command
        out.set(0)
        assert wait_until(lambda: len(seen) >= 2, 10)
        assert seen[1][:2] == ("vms/ptz/gate/preset", b"1")
        nvr.publish("nvr/gate/person", b"1", qos=1).wait_for_publish(5)
        assert wait_until(lambda: f.pending, 10)
        f.fill(image, f.clock_ms())
        assert values(cat, image, "cam.gate.online", "cam.gate.person", "zone.person") == (1, 1, 1)
        broker.stop()
        assert wait_until(lambda: not link.connected.is_set(), 10)
        out.set(1)                      # while the broker is away
        broker.start()
        assert link.connected.wait(30)
        assert wait_until(lambda: any(p == b"3" for _, p, _ in seen[2:]), 15)
        assert health and "LAN broker" in health[0]
    finally:
        nvr.loop_stop()
        link.stop()


BASE = MINIMAL_SITE


def test_config_names_what_a_camera_or_an_output_lacks():
    with pytest.raises(ConfigError) as e:
        parse(BASE + """
[[camera]]
name = "gate"
topic = "nvr/gate"
[[camera]]
name = "yard"
[webhook]
listen = "0.0.0.0:8088"
secret = "short"
[outputs.lights]
mqtt_topic = "lights/berth4"
[outputs.camera]
gpio = 5
mqtt_topic = "vms/ptz"
""", "site.toml")
    text = str(e.value)
    for problem in ("camera[0].topic: a camera topic needs the [lan] broker",
                    "webhook.secret: want a shared secret of at least 16 characters",
                    "webhook.listen: listen address 0.0.0.0: the webhook listens on loopback",
                    "outputs.lights.mqtt_topic: an MQTT output needs the [lan] broker",
                    "outputs.camera: give exactly one of gpio = PIN"):
        assert problem in text, text
    with pytest.raises(ConfigError, match=r"camera\[0\]: no source"):
        parse(BASE + '[[camera]]\nname = "yard"\n', "site.toml")


CAMERA_SITE = BASE + """
[schedules.night]
windows = [{ days = "mon-sun", from = "20:00", to = "06:00" }]
[schedules.maintenance]
windows = [{ days = "tue", from = "09:00", to = "12:00" }]
[schedules.shift_change]
windows = [{ days = "mon-fri", from = "05:45", to = "06:15" }]
[lan]
broker = "127.0.0.1:1883"
[[camera]]
name = "gate"
topic = "nvr/gate"
"""
QUIET = {"io.online": 1, "cam.gate.online": 1, "sys.clock_trusted": 1, "io.door_bolt": 1,
         "io.vib_rms_mg": 2, "io.vib_peak_mg": 5, "sys.disk_free_pct": 80}


def camera_pack_raises(tmp_path, changes: dict, mode: int, night: int) -> set[str]:
    from controller.cli.rulescmd import site_catalog
    from controller.core import ticks
    from controller.core.evaluator import Evaluator
    from controller.core.table import Table
    from rules.compiler import compile_files
    from rules.language import default_sources
    path = tmp_path / "site.toml"
    path.write_text(CAMERA_SITE)
    catalog, site = site_catalog(None, str(path))
    compiled = compile_files(default_sources([]), site)
    ev = Evaluator(Table(compiled.data, catalog.size))
    image = catalog.new_image()
    for name, v in dict(QUIET, **{"sched.night": night}).items():
        image[catalog.index[name]] = v
    raised = set()
    for k in range(350):                 # 35 s of 100 ms scans; the change at 20 s
        if k == 200:
            for name, v in changes.items():
                image[catalog.index[name]] = v
        for index, _sev, _act, up in ev.scan(image, ticks.wrap(k * 100), mode):
            if up and k >= 200:
                raised.add(ev.table.ids[index])
    return raised


@pytest.mark.parametrize("changes, mode, night, want", [
    ({"cam.gate.person": 1, "zone.person": 1, "io.vib_peak_mg": 600}, "armed", 1, {"person_with_vibration.cam.gate"}),
    ({"cam.gate.person": 1, "zone.person": 1, "io.vib_peak_mg": 600}, "armed", 0, set()),     # by day
    ({"io.vib_peak_mg": 600}, "armed", 1, set()),                                             # nobody seen
    ({"cam.gate.person": 1, "zone.person": 1, "io.vib_peak_mg": 300}, "armed", 1, set()),     # a truck's rumble
    ({"cam.gate.person": 1, "zone.person": 1, "io.vib_peak_mg": 600}, "disarmed", 1, set()),
    ({"cam.gate.tamper": 1, "zone.tamper": 1}, "armed", 0, {"camera_tamper.cam.gate"}),
    ({"cam.gate.tamper": 1, "zone.tamper": 1}, "disarmed", 0, set()),
    ({"cam.gate.online": 0}, "armed", 0, {"camera_offline.cam.gate"}),
])
def test_the_camera_pack_combines_what_cameras_see_with_the_cabinet(tmp_path, changes, mode, night, want):
    from controller.core import modes
    got = camera_pack_raises(tmp_path, changes, modes.MODE_NAMES.index(mode), night)
    assert got == want


def test_a_site_with_cameras_gets_the_camera_rules_from_the_default_packs_and_one_without_none(tmp_path):
    """docs/rules.md "Default packs": no SRC named (as `rules compile --config`,
    `config check --installing` and flash.sh choose), a site with [[camera]]
    and no night schedule compiles camera_tamper for each of its cameras, and
    no night rule (needs_schedule: no error either); with a night schedule
    it compiles those too."""
    from controller.cli.rulescmd import site_catalog
    from rules.compiler import compile_files
    from rules.language import default_sources
    no_night = CAMERA_SITE.replace('[schedules.night]\nwindows = [{ days = "mon-sun", from = "20:00", to = "06:00" }]\n', "")
    assert "night" not in no_night
    for text, want in ((no_night, {"camera_tamper.cam.gate", "camera_offline.cam.gate"}),
                       (BASE + CAMERA_SITE[len(BASE):].split("[lan]")[0], set())):
        path = tmp_path / "site.toml"
        path.write_text(text)
        _catalog, site = site_catalog(None, str(path))
        compiled = compile_files(default_sources([]), site)
        ids = {r.id for r in compiled.rules}
        assert {i for i in ids if i.startswith("camera_")} == want
        assert not {i for i in ids if "night" in i or i.startswith("person_")}
        # Left out for the missing schedule only where there is a camera to watch.
        want_left_out = {("person_with_vibration", "night"), ("loitering_at_night", "night")} if want else set()
        assert {(spec.id, schedule) for spec, schedule in compiled.left_out} == want_left_out
    path.write_text(CAMERA_SITE)
    _catalog, site = site_catalog(None, str(path))
    compiled = compile_files(default_sources([]), site)
    assert {"person_with_vibration.cam.gate", "loitering_at_night.cam.gate"} <= {r.id for r in compiled.rules}
    assert compiled.left_out == []


def test_rules_check_notes_the_night_rules_a_camera_site_without_night_leaves_out(tmp_path):
    """An installer whose site has cameras and no night schedule is told, with the
    line of the rule and the section that would bring it in."""
    path = tmp_path / "site.toml"
    path.write_text(CAMERA_SITE.replace('[schedules.night]\nwindows = [{ days = "mon-sun", from = "20:00", to = "06:00" }]\n', ""))
    r = cabguard("rules", "check", "--config", str(path))
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2, r.stderr
    assert all("cameras.toml:" in n and "add [schedules.night]" in n for n in notes), r.stderr
    assert "'person_with_vibration'" in notes[0] and "'loitering_at_night'" in notes[1]
    path.write_text(CAMERA_SITE)
    r = cabguard("rules", "check", "--config", str(path))
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr


def test_a_gateway_hears_its_camera_and_escalates_to_lights_and_the_camera_preset(cabinet, broker):
    """End to end: a real gateway on the simulator, a camera heard through the
    webhook, an alarm whose plan takes the floodlights (GPIO) and the camera
    preset (an MQTT command on the LAN broker), and an ack that ends both."""
    from controller.core import modes
    from controller.core.events import CMD_ACK, CMD_ARM
    from controller.core.events import EV_MODE
    from controller.core.outputs import OUT_LIGHTS
    from controller.journal import records as R
    from controller.journal.browse import entries, incidents
    from controller.journal.evidence import verified_records
    from drivers.keys import EpochKeys, load_key

    def records() -> list[dict]:
        return list(verified_records(tmp_path / "journal", EpochKeys(load_key(tmp_path / "keys" / "record.key"))))
    from simulator.broker import free_port
    from tests.test_runtime import start, stop
    sim, site, tmp_path = cabinet
    hook_port = free_port()
    site.write_text(site.read_text() + """
[lan]
broker = "127.0.0.1:{broker}"
[[camera]]
name = "gate"
protect_topic = "nvr/protect"
clip_before_s = 20
[webhook]
listen = "127.0.0.1:{hook}"
secret = "{secret}"
[outputs.lights]
gpio = 23
[outputs.camera]
mqtt_topic = "vms/ptz/gate/preset"
on = "3"
off = "1"
[escalation.alarm]
armed = [{{ do = "siren" }}, {{ do = "lights" }}, {{ do = "camera", after_s = 1 }}]
""".format(broker=broker.port, hook=hook_port, secret=SECRET))
    seen: list[bytes] = []
    protect: list[dict] = []
    vms = paho.Client(CallbackAPIVersion.VERSION2, client_id="vms")
    vms.on_message = lambda _c, _u, m: (protect if m.topic == "nvr/protect" else seen).append(
        json.loads(m.payload) if m.topic == "nvr/protect" else m.payload)
    vms.on_connect = lambda c, _u, _f, _r, _p: (c.subscribe("vms/#", qos=1), c.subscribe("nvr/protect", qos=1))
    vms.connect("127.0.0.1", broker.port)
    vms.loop_start()
    gw, thread = start(site)
    gw.evidence.after_ms = 1000          # the incident record a second after the alarm, not ten

    def heartbeat() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", hook_port, timeout=5)
        conn.request("POST", "/cam/gate/heartbeat", b"1", {SECRET_HEADER: SECRET})
        status = conn.getresponse().status
        conn.close()
        return status

    try:
        online = gw.catalog.index["cam.gate.online"]
        assert wait_until(lambda: gw.image[gw.catalog.index["io.online"]], 5)
        assert gw.image[online] == 0                     # never heard: not online
        assert heartbeat() == 204
        assert wait_until(lambda: gw.image[online] == 1, 3)
        assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(2) == "ok"
        assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
        sim.device("io").set(door_open=1)
        assert wait_until(lambda: gw.state.mode == modes.ALARM, 5)
        lights = gw.bank.outputs[OUT_LIGHTS].device.pin
        assert wait_until(lambda: lights.state, 2)      # driven in the scan that raised the alarm, after its mode
        assert wait_until(lambda: b"3" in seen, 5)      # the preset, a second after the alarm
        assert gw.submit(CMD_ACK, 0, "console", "ana").outcome.result(2) == "ok"
        assert wait_until(lambda: seen[-1:] == [b"1"], 5)
        assert wait_until(lambda: not lights.state, 2)
        assert wait_until(lambda: protect, 5)
        assert wait_until(lambda: any(r[R.TYPE] == R.INCIDENT for r in records()), 5)
    finally:
        stop(gw, thread)
        vms.loop_stop()
    marks = [r for r in records() if r[R.TYPE] == R.VIDEO_BOOKMARK]
    alarm = next(r for r in records() if r[R.TYPE] == EV_MODE and r[R.DATA][2] == modes.ALARM)
    assert len(marks) == 1
    mark = marks[0][R.DATA]
    assert mark[R.BOOKMARK_CAMERA] == "gate" and mark[R.BOOKMARK_INCIDENT] == alarm[R.SEQ]
    assert mark[R.BOOKMARK_END_MS] - mark[R.BOOKMARK_START_MS] == 80_000 and mark[R.BOOKMARK_PROTECT]
    assert protect == [{"gateway": "gw-test", "camera": "gate", "start_ms": mark[R.BOOKMARK_START_MS],
                        "end_ms": mark[R.BOOKMARK_END_MS], "incident_seq": alarm[R.SEQ]}]
    [incident] = incidents(entries(tmp_path / "journal", load_key(tmp_path / "keys" / "record.key")))
    assert incident.trigger.seq == alarm[R.SEQ]
    assert incident.bookmarks == [{"seq": marks[0][R.SEQ], "camera": "gate", "start_ms": mark[R.BOOKMARK_START_MS],
                                   "end_ms": mark[R.BOOKMARK_END_MS], "protect": True}]
