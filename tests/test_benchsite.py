"""One site config: the demo's and the soak's are examples/site.toml with documented keys changed."""

import tomllib
from pathlib import Path

import pytest

from controller.gateway.config import parse
from controller.gateway.site import assemble
from simulator.benchsite import EXAMPLE, bench_site
from simulator.demo import site_config as demo_site
from simulator.errors import SimConfigError
from simulator.soak import site_config as soak_site

REPO = Path(__file__).resolve().parent.parent


def test_keys_are_set_removed_and_added_in_place_keeping_the_comments():
    text = bench_site({"bus.port": "/tmp/cab/rs485-1", "device[bms1].poll_ms": 500, "uplink.password": None,
                       "schedules.shift_change.windows": [{"days": "mon-sun", "from": "21:45", "to": "22:15"}],
                       "core.exit_delay_s": 3, "clock.assume_trusted": True, "console": None,
                       "device[bms2]": None, "journal.fsync": None, "newtable.x": 1})
    doc = tomllib.loads(text)
    assert doc["bus"][0]["port"] == "/tmp/cab/rs485-1"
    assert [(d["name"], d["poll_ms"]) for d in doc["device"]] == [("io", 100), ("bms1", 500), ("relay", 1000)]
    assert "password" not in doc["uplink"] and "console" not in doc and doc["newtable"] == {"x": 1}
    assert doc["schedules"]["shift_change"] == {"windows": [{"days": "mon-sun", "from": "21:45", "to": "22:15"}],
                                                "when_clock_untrusted": "inactive"}   # the 2-line value replaced whole
    assert 'port = "/tmp/cab/rs485-1"' in text and "# 1 or 2" in text               # the example's comments stay
    assert text.count("\n") < EXAMPLE.read_text().count("\n")


@pytest.mark.parametrize("path", ["device[bms9].poll_ms", "nosuch", "bus port"])
def test_a_change_the_example_cannot_take_is_refused(path):
    with pytest.raises(SimConfigError):
        bench_site({path: None} if path == "nosuch" else {path: 1})


def test_the_demo_and_the_soak_run_the_example_and_check_clean(tmp_path):
    demo = demo_site(tmp_path, "/tmp/cab/rs485-1", "127.0.0.1:1883", tmp_path / "console")
    soak = soak_site(tmp_path, "127.0.0.1:1883").replace(str(tmp_path / "port.json"),
                                                          str(REPO / "rules/models/port.json"))
    for text in (demo, soak):
        site = assemble(parse(text, "bench.toml"))
        assert set(site.device_classes) == {"io", "bms1", "bms2", "relay"}
    assert tomllib.loads(demo)["console"]["port"] == "pty:{}".format(tmp_path / "console")
    assert "model" not in tomllib.loads(demo) and tomllib.loads(soak)["clock"]["assume_trusted"] is True
