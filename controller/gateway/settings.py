"""What the running gateway reads from its site config, typed (docs/config.md).

``gateway_settings`` turns a checked config (controller/gateway/config.py
filled in every default) into frozen values once, at start; nothing after
it reads the config's tables.  Times are in milliseconds here, as the
parts that use them count them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.gateway.cameras import CameraSpec
from controller.gateway.config import SiteConfig
from drivers.gnss import TrackSettings
from drivers.modbus.options import BusOptions, Rs485
from drivers.mqtt import BrokerSettings


@dataclass(frozen=True)
class BusSettings:
    """A ``[[bus]]``: the port and how to talk on it."""
    name: str
    port: str
    baud: int
    options: BusOptions


@dataclass(frozen=True)
class DeviceSettings:
    """A ``[[device]]``: where it is and how often it is polled."""
    name: str
    bus: str
    address: int
    profile: str
    poll_ms: int


@dataclass(frozen=True)
class OutputSettings:
    """An ``[outputs.NAME]``: a GPIO pin (``gpio >= 0``), an MQTT topic, or a device's coil."""
    gpio: int
    active_high: bool
    device: str
    coil: str
    mqtt_topic: str
    on: str
    off: str


@dataclass(frozen=True)
class CameraSettings:
    """A ``[[camera]]``: its events (``spec``) and the clip an incident keeps."""
    spec: CameraSpec
    clip_before_ms: int
    clip_after_ms: int
    protect_topic: str       # where the NVR takes protect requests ("" = none)


@dataclass(frozen=True)
class GnssSettings:
    """``[gnss]``: the receiver (a serial port, or a device on the bus) and what counts as a good fix."""
    port: str                # NMEA 0183 on this serial port ("" with device)
    baud: int
    device: str              # a [[device]] of class gnss_receiver ("" with port)
    track: TrackSettings


@dataclass(frozen=True)
class ContactSettings:
    """``[mains]``, ``[tamper]``: a contact on a gateway GPIO input."""
    gpio: int
    active_high: bool                # the pin reads high while the contact is closed (else low, pulled up)
    normally_closed: bool = False    # [tamper]: closed at rest, so the signal is 1 while it is open


@dataclass(frozen=True)
class WebhookSettings:
    """``[webhook]``: where camera webhooks are heard."""
    listen: str              # as written, for messages
    host: str
    port: int
    secret: str


@dataclass(frozen=True)
class GatewaySettings:
    """What the running gateway reads from its config, typed (docs/config.md)."""
    gateway_id: str
    site_name: str
    state_dir: Path
    scan_period_ms: int
    clock_assume_trusted: bool
    pin_factory: str
    outputs: dict[str, OutputSettings]
    journal_dir: str
    journal_budget_bytes: int
    record_key: Path
    headend_key: str                           # "" = no downlink commands
    model_path: str
    config_path: str
    buses: tuple[BusSettings, ...] = ()
    devices: tuple[DeviceSettings, ...] = ()
    lan: BrokerSettings | None = None          # [lan]: the cabinet LAN's MQTT broker
    cameras: tuple[CameraSettings, ...] = ()   # [[camera]] tables
    webhook: WebhookSettings | None = None     # [webhook]
    gnss: GnssSettings | None = None           # [gnss]: the GNSS receiver
    mains: ContactSettings | None = None       # [mains]: the mains sense
    tamper: ContactSettings | None = None      # [tamper]: the gateway's enclosure switch


def bus_options(bus: dict) -> BusOptions:
    """A checked ``[[bus]]`` table's settings."""
    return BusOptions(baud=bus["baud"], parity=bus["parity"], stopbits=bus["stopbits"],
                      timeout_floor_ms=bus["timeout_floor_ms"], timeout_ceiling_ms=bus["timeout_ceiling_ms"],
                      retries=bus["retries"], rs485=Rs485(bus["rs485"], bus["rts_tx_high"],
                                                          bus["rts_delay_before_ms"], bus["rts_delay_after_ms"]))


def _lan(doc: dict | None, gateway_id: str) -> BrokerSettings | None:
    if not doc:
        return None
    host, _, port = doc["broker"].rpartition(":")
    return BrokerSettings(host, int(port), client_id=doc["client_id"] or gateway_id + "-lan",
                          username=doc["username"], password=doc["password"])


def _camera(c: dict) -> CameraSettings:
    return CameraSettings(CameraSpec(c["name"], c["topic"], c["fresh_s"] * 1000, c["hold_s"] * 1000),
                          c["clip_before_s"] * 1000, c["clip_after_s"] * 1000, c["protect_topic"])


def _gnss(g: dict | None) -> GnssSettings | None:
    if not g:
        return None
    return GnssSettings(g["port"], g["baud"], g["device"], TrackSettings(
        g["fresh_s"] * 1000, g["max_hdop"] * 100, float(g["max_speed_mps"]), g["reacquire_s"] * 1000))


def _webhook(hook: dict | None) -> WebhookSettings | None:
    if not hook:
        return None
    host, _, port = hook["listen"].rpartition(":")
    return WebhookSettings(hook["listen"], host.strip("[]"), int(port), hook["secret"])


def gateway_settings(config: SiteConfig) -> GatewaySettings:
    doc = config.doc
    gateway = doc["gateway"]
    return GatewaySettings(
        gateway_id=gateway["id"], site_name=gateway["site"], state_dir=Path(gateway["state_dir"]),
        scan_period_ms=gateway["scan_period_ms"],
        clock_assume_trusted=(doc.get("clock") or {}).get("assume_trusted", False),
        pin_factory=(doc.get("gpio") or {}).get("pin_factory", "default"),
        outputs={name: OutputSettings(o["gpio"], o["active_high"], o["device"], o["coil"], o["mqtt_topic"],
                                      o["on"], o["off"])
                 for name, o in (doc.get("outputs") or {}).items()},
        journal_dir=doc["journal"]["dir"], journal_budget_bytes=doc["journal"]["budget_mb"] << 20,
        record_key=Path(doc["keys"]["record"]), headend_key=doc["keys"]["headend"], model_path=(doc.get("model") or {}).get("path", ""),
        config_path=str(config.path),
        buses=tuple(BusSettings(b["name"], b["port"], b["baud"], bus_options(b)) for b in doc["bus"]),
        devices=tuple(DeviceSettings(d["name"], d["bus"], d["address"], d["profile"], d["poll_ms"])
                      for d in doc["device"]),
        lan=_lan(doc.get("lan"), gateway["id"]), cameras=tuple(_camera(c) for c in doc.get("camera") or ()),
        webhook=_webhook(doc.get("webhook")), gnss=_gnss(doc.get("gnss")),
        mains=ContactSettings(doc["mains"]["gpio"], doc["mains"]["active_high"]) if doc.get("mains") else None,
        tamper=ContactSettings(doc["tamper"]["gpio"], doc["tamper"]["active_high"], doc["tamper"]["normally_closed"])
        if doc.get("tamper") else None)
