import pytest

from controller.gateway.config import ConfigError, parse

GOOD = """
[gateway]
id = "gw-porta-017"
site = "port-a"
timezone = "Europe/Amsterdam"
state_dir = "{state}"

[[bus]]
name = "rs485a"
port = "/dev/ttyUSB0"

[[device]]
name = "io"
bus = "rs485a"
profile = "io-module"
address = 1
poll_ms = 100

[[device]]
name = "relay"
bus = "rs485a"
profile = "relay-4ch"
address = 4

[outputs.siren]
gpio = 17

[outputs.lock]
device = "relay"
coil = "k1"

[schedules.night]
windows = [{{ days = "mon-sun", from = "20:00", to = "06:00" }}]
when_clock_untrusted = "active"

[keys]
record = "/etc/cabguard/keys/record.key"

[journal]
dir = "/var/lib/cabguard/journal"
"""


def test_good_config_parses_with_defaults(tmp_path):
    cfg = parse(GOOD.format(state=tmp_path), "site.toml")
    assert cfg.gateway_id == "gw-porta-017"
    assert cfg.doc["gateway"]["scan_period_ms"] == 100
    assert cfg.doc["bus"][0]["baud"] == 115200
    assert cfg.doc["outputs"]["lock"]["coil"] == "k1"


def test_every_problem_is_listed_at_once_with_dotted_paths(tmp_path):
    bad = GOOD.format(state=tmp_path).replace('timezone = "Europe/Amsterdam"', 'timezone = "Mars/Olympus"') \
        .replace("address = 4", "address = 300").replace('bus = "rs485a"\nprofile = "relay-4ch"',
                                                           'bus = "rs485b"\nprofile = "relay-4ch"') \
        .replace("[keys]", "[keys]\nrecrod = 1") + "\n[uplink_typo]\nx = 1\n"
    with pytest.raises(ConfigError) as err:
        parse(bad, "site.toml")
    text = str(err.value)
    assert text.startswith("site.toml: 5 problems:")
    assert "gateway.timezone: unknown timezone 'Mars/Olympus'" in text
    assert "device[1].address: want a whole number from 1 to 247, got 300" in text
    assert "device[1].bus: no [[bus]] named 'rs485b' (buses: rs485a)" in text
    assert "keys.recrod: unknown key" in text
    assert "uplink_typo: unknown key" in text


def test_toml_syntax_error_names_line():
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2"):
        parse("[gateway]\nid = \n", "site.toml")


def test_outputs_need_exactly_one_target(tmp_path):
    bad = GOOD.format(state=tmp_path).replace("gpio = 17", 'gpio = 17\ndevice = "relay"\ncoil = "k2"')
    with pytest.raises(ConfigError, match="outputs.siren: give exactly one of gpio"):
        parse(bad, "site.toml")


def test_entry_zones_default_to_the_bolt_and_the_door_and_a_wrong_one_is_named():
    from controller.core.catalog import Catalog, device_signals
    from controller.gateway.site import core_config
    catalog = Catalog(device_signals("io", [("door_open", "bool", 0), ("door_bolt", "bool", 0)]))
    problems = []
    config, names = core_config({}, catalog, problems)
    assert problems == [] and names == ["io.door_open", "!io.door_bolt"]
    assert config.entry_zones == (catalog.index["io.door_open"], ~catalog.index["io.door_bolt"])
    core_config({"core": {"entry_zones": ["!io.door_blot"]}}, catalog, problems)
    assert [(p.path, p.message) for p in problems] == [
        ("core.entry_zones[0]", "no signal 'io.door_blot' on this site (did you mean io.door_bolt, io.door_open?)")]


@pytest.mark.parametrize("broker", ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:65536", "broker:"])
def test_a_broker_port_outside_1_to_65535_is_refused(tmp_path, broker):
    with pytest.raises(ConfigError, match="uplink.broker"):
        parse(GOOD.format(state=tmp_path) + '\n[uplink]\nbroker = "{}"\n'.format(broker), "site.toml")
    assert parse(GOOD.format(state=tmp_path) + '\n[uplink]\nbroker = "127.0.0.1:65535"\n', "site.toml")


@pytest.mark.parametrize("gateway", ["g" * 100_000, "gw porta", "gw/x", "-gw", "ｇｗ"])
def test_keys_gen_refuses_a_gateway_id_the_config_would_refuse(tmp_path, gateway):
    from controller.errors import UsageError
    from controller.cli.keygen import generate_keys
    from drivers.cose import ALG_AES_MAC_128_128
    with pytest.raises(UsageError, match="a gateway id is letters, digits"):
        generate_keys(gateway, tmp_path / "keys", ALG_AES_MAC_128_128)
    assert not (tmp_path / "keys").exists()


def _example_with(*changes: tuple[str, str]) -> str:
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "examples" / "site.toml").read_text()
    text = text.replace("[model]", "[unused]").replace('path = "/etc/cabguard/port.json"', "")
    text = text.replace("[unused]\n", "")
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    return text


def _assembly_problems(text: str) -> list[tuple[str, str]]:
    from controller.gateway.site import assemble
    with pytest.raises(ConfigError) as err:
        assemble(parse(text, "site.toml"))
    return [(p.path, p.message) for p in err.value.problems]


def test_every_unknown_profile_is_named_at_its_own_device_without_knock_on_zone_errors():
    problems = _assembly_problems(_example_with(('profile = "bms16-vendor"', 'profile = "vendor-bms16"'),
                                                ('profile = "relay4"', 'profile = "relay-4ch"'),
                                                ('profile = "io-dvt"', 'profile = "io-module"')))
    assert [path for path, _ in problems] == ["device[0].profile", "device[1].profile", "device[3].profile"]
    assert "unknown device profile 'vendor-bms16'" in problems[1][1] and "bms16-vendor" in problems[1][1]


def test_a_lock_on_a_coil_its_device_does_not_have_is_a_config_problem():
    problems = _assembly_problems(_example_with(('coil = "k1"', 'coil = "k9"')))
    assert problems == [("outputs.lock.coil", "'k9' is not a coil of relay (profile relay4; coils: k1, k2, k3, k4)")]


def test_rs485_direction_control_is_checked_and_reaches_the_bus_options(tmp_path):
    from controller.gateway.settings import bus_options
    from drivers.modbus.options import Rs485

    assert bus_options(parse(GOOD.format(state=tmp_path), "site.toml").doc["bus"][0]).rs485 == Rs485()   # auto
    rts = GOOD.format(state=tmp_path).replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyAMA0"\nrs485 = "rts"\n'
                                              'rts_tx_high = false\nrts_delay_before_ms = 1\nrts_delay_after_ms = 2')
    options = bus_options(parse(rts, "site.toml").doc["bus"][0])
    assert options.rs485 == Rs485("rts", False, 1, 2)
    bad = rts.replace('rs485 = "rts"', 'rs485 = "gpio"').replace("rts_delay_after_ms = 2", "rts_delay_after_ms = 500")
    with pytest.raises(ConfigError) as err:
        parse(bad, "site.toml")
    assert "bus[0].rs485: want one of 'auto', 'rts', 'kernel', got 'gpio'" in str(err.value)
    assert "bus[0].rts_delay_after_ms: want a whole number from 0 to 100, got 500" in str(err.value)


@pytest.mark.parametrize("gnss, where, message", [
    ('port = "/dev/ttyAMA1"\ndevice = "relay"', "gnss", "give exactly one of port = PATH"),
    ("fresh_s = 5", "gnss", "give exactly one of port = PATH"),
    ('device = "gps"', "gnss.device", "no [[device]] named 'gps'"),
])
def test_a_gnss_receiver_is_on_a_serial_port_or_a_named_device(tmp_path, gnss, where, message):
    with pytest.raises(ConfigError) as err:
        parse(GOOD.format(state=tmp_path) + "\n[gnss]\n" + gnss + "\n", "site.toml")
    assert [(p.path, p.message[:len(message)]) for p in err.value.problems] == [(where, message)]


def test_a_gnss_device_needs_a_receiver_profile_and_no_nmea_extra():
    from controller.gateway.config import extras_needed
    problems = _assembly_problems(_example_with() + '\n[gnss]\ndevice = "relay"\n')
    assert problems == [("gnss.device", "device 'relay' has profile 'relay4' of class relay: a GNSS receiver needs "
                                        "a gnss_receiver profile (drivers/profiles/gnss-modbus.toml)")]
    receiver = '\n[[device]]\nname = "gps"\nbus = "rs485a"\nprofile = "gnss-modbus"\naddress = 9\npoll_ms = 250\n'
    config = parse(_example_with() + receiver + '\n[gnss]\ndevice = "gps"\n', "site.toml")
    assert "gnss" not in extras_needed(config.doc)
    assert "gnss" in extras_needed(parse(_example_with() + '\n[gnss]\nport = "/dev/ttyAMA1"\n', "site.toml").doc)


def test_the_mains_sense_is_a_gpio_input_of_its_own(tmp_path):
    from controller.gateway.settings import ContactSettings, gateway_settings
    good = parse(GOOD.format(state=tmp_path) + "\n[mains]\ngpio = 23\nactive_high = false\n", "site.toml")
    assert gateway_settings(good).mains == ContactSettings(23, False)
    assert gateway_settings(parse(GOOD.format(state=tmp_path), "site.toml")).mains is None
    for mains, where, message in (("gpio = 17", "mains.gpio", "GPIO17 is already the pin of outputs.siren"),
                                  ("gpio = 40", "mains.gpio", "want a whole number from 0 to 27"),
                                  ("active_high = true", "mains.gpio", "missing")):
        with pytest.raises(ConfigError) as err:
            parse(GOOD.format(state=tmp_path) + "\n[mains]\n" + mains + "\n", "site.toml")
        assert [(p.path, p.message[:len(message)]) for p in err.value.problems] == [(where, message)], mains


def test_the_enclosure_tamper_switch_is_a_normally_closed_contact_to_ground_by_default(tmp_path):
    from controller.gateway.settings import ContactSettings, gateway_settings
    good = parse(GOOD.format(state=tmp_path) + "\n[tamper]\ngpio = 24\n", "site.toml")
    assert gateway_settings(good).tamper == ContactSettings(24, active_high=False, normally_closed=True)
    wired = parse(GOOD.format(state=tmp_path) + "\n[tamper]\ngpio = 24\nactive_high = true\n"
                  "normally_closed = false\n", "site.toml")
    assert gateway_settings(wired).tamper == ContactSettings(24, active_high=True, normally_closed=False)
    assert gateway_settings(parse(GOOD.format(state=tmp_path), "site.toml")).tamper is None


@pytest.mark.parametrize("extra, problems", [
    ("[tamper]\ngpio = 17", [("tamper.gpio", "GPIO17 is already the pin of outputs.siren: give tamper a pin "
                                            "of its own")]),
    ("[mains]\ngpio = 23\n[tamper]\ngpio = 23", [("tamper.gpio", "GPIO23 is already the pin of mains: give "
                                                                  "tamper a pin of its own")]),
    ("[outputs.strobe]\ngpio = 17", [("outputs.strobe.gpio", "GPIO17 is already the pin of outputs.siren: give "
                                                              "outputs.strobe a pin of its own")]),
    ("[tamper]\ngpio = 28", [("tamper.gpio", "want a whole number from 0 to 27, got 28")]),
    ("[tamper]\ngpio = 24\nnormally_closed = \"yes\"", [("tamper.normally_closed", "want true or false")]),
    ("[tamper]\nactive_high = false", [("tamper.gpio", "missing")]),
])
def test_a_gpio_pin_is_one_output_or_one_input(tmp_path, extra, problems):
    with pytest.raises(ConfigError) as err:
        parse(GOOD.format(state=tmp_path) + "\n" + extra + "\n", "site.toml")
    assert [(p.path, p.message[:len(want)]) for p, (_, want) in zip(err.value.problems, problems)] == problems
    assert len(err.value.problems) == len(problems), err.value
