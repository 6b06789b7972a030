"""The anomaly model on the real gateway: [model] path, sys.week_hour, anom.* and the model's rule."""

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

from controller.core import modes
from controller.core.anomaly import FEATURES, HOURS
from controller.core.events import CMD_ARM
from controller.core.modelrules import RULE_NAME, ModelRules
from controller.gateway.run import build
from simulator.bus import SimBus, Simulator
from simulator.slave import SimDevice
from tests.journaling import flashed_keys
from tests.test_runtime import SITE, stop, wait_until

# Every hour's envelope: level 100 (about 76 raw units) for every feature,
# vibration 40 (about 5 mg), power never unusual (a device is offline until
# its first poll).  A pack losing 51 V (a module) scores (249 - 100 - 8) * 4 = 564.
LEVELS = [40 if f == "vib" else 255 if f == "power" else 100 for f in FEATURES]
MODEL = {"cabguard_model": 1, "features": list(FEATURES), "window_ms": 500,
         "pre": [0] * 9, "weight": [4] * 9, "margin": 8, "threshold": 48, "base": LEVELS,
         "hi": bytes(LEVELS * HOURS).hex(), "adapt": {"cap": 12, "step_windows": 720, "holdoff_windows": 720}}
EXTRA = """
[clock]
assume_trusted = true

[model]
path = "{d}/model.json"

[rules]
table = "{d}/rules.table"
key = "{d}/keys/installer.key"
"""


def _site(tmp_path, port):
    flashed_keys(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(MODEL))
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(d=tmp_path, port=port) + EXTRA.format(d=tmp_path))
    return site


def test_the_model_runs_in_the_gateway_and_the_compiled_table_agrees(tmp_path):
    sim = Simulator([SimBus("rs485", [SimDevice("io", "io-dvt", 1), SimDevice("bms1", "bms16-vendor", 2),
                                      SimDevice("relay", "relay4", 4)])]).start()
    try:
        sim.device("io").set(door_bolt=1)
        site = _site(tmp_path, sim.bus("rs485").port)
        r = subprocess.run([sys.executable, "-m", "controller.cli.main", "rules", "compile", "--config", str(site),
                            "-o", str(tmp_path / "rules.table"), "--key", str(tmp_path / "keys" / "installer.key")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        gw = build(str(site)).gateway
        thread = threading.Thread(target=gw.run, daemon=True)
        thread.start()
        try:
            rules = gw.state.rules
            assert isinstance(rules, ModelRules) and rules.rules is gw.table.evaluator   # the table loaded
            names = gw.rule_names()
            assert names[-1] == RULE_NAME and names[:-1] == tuple(gw.table.evaluator.table.ids)
            assert gw.status.rules_info().endswith("; anomaly model {} (score threshold {})".format(
                tmp_path / "model.json", rules.threshold))
            now = datetime.now(timezone.utc)
            hour = gw.catalog.index["sys.week_hour"]
            assert wait_until(lambda: gw.image[hour] in (now.weekday() * 24 + now.hour,
                                                         (now.weekday() * 24 + now.hour + 1) % 168))
            online = [gw.catalog.index[n + ".online"] for n in ("io", "bms1", "relay")]
            sim.device("bms1").set(pack_mv=409600)
            assert wait_until(lambda: all(gw.image[i] for i in online)
                              and gw.image[gw.catalog.index["bms1.pack_mv"]] == 409600)
            assert gw.submit(CMD_ARM, 0, "console", "ana").outcome.result(2) == "ok"
            assert wait_until(lambda: gw.state.mode == modes.ARMED, 5)
            time.sleep(1.2)
            assert gw.state.mode == modes.ARMED and gw.image[gw.catalog.index["anom.score"]] == 0
            sim.device("bms1").set(pack_mv=358400)         # evidence of loss: modules gone
            assert wait_until(lambda: gw.state.mode == modes.ALARM, 5)
            assert gw.image[gw.catalog.index["anom.score"]] >= 400
            assert gw.image[gw.catalog.index["anom.top"]] == FEATURES.index("volt")
            # step() sets the mode, the same scan then journals the rule's event: wait for it
            assert wait_until(lambda: RULE_NAME in gw.active_rules, 5)
            assert wait_until(lambda: any("rule anomaly raised (alarm)" in line for line in gw.recent), 5)
        finally:
            stop(gw, thread)
    finally:
        sim.stop()


def test_an_untrusted_clock_gives_the_documented_fallback_hour(tmp_path):
    site = _site(tmp_path, "/dev/ttyUSB9")
    site.write_text(site.read_text().replace("assume_trusted = true", "assume_trusted = false"))
    from controller.gateway.config import load
    from controller.gateway.site import assemble
    s = assemble(load(site))
    assert s.schedules.week_hour(time.time(), False) == -1
    # 2026-03-16 is a Monday: 10:30 UTC is hour 10 of the week.
    assert s.schedules.week_hour(datetime(2026, 3, 16, 10, 30, tzinfo=timezone.utc).timestamp(), True) == 10
    assert s.model is not None and {"sys.week_hour", "anom.score", "anom.top"} <= set(s.catalog.index)


def test_a_bad_model_file_is_a_config_problem_naming_model_path(tmp_path):
    site = _site(tmp_path, "/dev/ttyUSB9")
    (tmp_path / "model.json").write_text('{"cabguard_model": 1}')
    r = subprocess.run([sys.executable, "-m", "controller.cli.main", "config", "check", str(site)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "model.path" in r.stderr + r.stdout and "window_ms" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
