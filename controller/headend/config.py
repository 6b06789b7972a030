"""The head-end config file (``cabguard collect --config HEADEND.toml``, docs/headend.md):
when a gateway counts as silent, and the notification sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from controller.errors import CabguardError
from controller.headend.ledger import TRIGGERS, Sink
from drivers.safefile import InputFileError, parse_toml, read_text

SINK_KEYS = {
    "webhook": {"url": str, "secret": str, "secret_file": str, "timeout_s": (int, float)},
    "mqtt": {"topic": str, "broker": str},
    "command": {"argv": list, "timeout_s": (int, float)},
}
COMMON_KEYS = {"name": str, "kind": str, "on": list, "attempts": int, "retry_s": (int, float)}


class HeadendConfigError(CabguardError):
    """A head-end config that cannot be used; the message names the file and key."""


@dataclass
class HeadendConfig:
    heartbeat_s: float = 30.0        # the gateways' [uplink] heartbeat_s
    silent_after: int = 3            # heartbeats missed before a gateway is silent
    sinks: list[Sink] = field(default_factory=list)

    @property
    def silent_after_s(self) -> float:
        return self.heartbeat_s * self.silent_after


def load(path: str | Path) -> HeadendConfig:
    try:
        doc = parse_toml(read_text(path, "head-end config"), path, "head-end config")
    except InputFileError as e:
        raise HeadendConfigError(str(e)) from None
    return parse(doc, str(path))


def parse(doc: dict, where: str) -> HeadendConfig:
    problems: list[str] = []
    cfg = HeadendConfig()
    head = doc.get("headend", {})
    for key in sorted(set(doc) - {"headend", "sink"}):
        problems.append("{}: unknown table [{}] (the tables are [headend] and [[sink]])".format(where, key))
    if not isinstance(head, dict):
        problems.append("{}: headend must be a table".format(where))
        head = {}
    for key, value in head.items():
        if key not in ("heartbeat_s", "silent_after"):
            problems.append("{}: headend.{} is not a setting (heartbeat_s, silent_after)".format(where, key))
        elif isinstance(value, bool) or not isinstance(value, int if key == "silent_after" else (int, float)) \
                or value <= 0:
            problems.append("{}: headend.{} must be a positive number".format(where, key))
        else:
            setattr(cfg, key, value)
    sinks = doc.get("sink", [])
    if not isinstance(sinks, list):
        problems.append("{}: sinks are [[sink]] tables".format(where))
        sinks = []
    for i, raw in enumerate(sinks):
        sink = _sink(raw, "{}: sink[{}]".format(where, i), problems)
        if sink and any(s.name == sink.name for s in cfg.sinks):
            problems.append("{}: sink[{}] name {!r} is used twice".format(where, i, sink.name))
        elif sink:
            cfg.sinks.append(sink)
    if problems:
        raise HeadendConfigError("\n".join(problems))
    return cfg


def _sink(raw: object, where: str, problems: list[str]) -> Sink | None:
    if not isinstance(raw, dict):
        problems.append("{} must be a table".format(where))
        return None
    kind = raw.get("kind")
    if kind not in SINK_KEYS:
        problems.append("{}: kind must be one of {}".format(where, ", ".join(SINK_KEYS)))
        return None
    allowed = {**COMMON_KEYS, **SINK_KEYS[kind]}
    before = len(problems)
    for key, value in raw.items():
        if key not in allowed:
            problems.append("{}: {} is not a {} sink setting ({})".format(where, key, kind, ", ".join(sorted(allowed))))
        elif isinstance(value, bool) or not isinstance(value, allowed[key]):
            problems.append("{}: {} has the wrong type".format(where, key))
    name = raw.get("name", kind)
    on = tuple(raw.get("on", TRIGGERS)) if isinstance(raw.get("on", TRIGGERS), (list, tuple)) else ()
    for trigger in on:
        if trigger not in TRIGGERS:
            problems.append("{}: on: {!r} is not a trigger ({})".format(where, trigger, ", ".join(TRIGGERS)))
    required = {"webhook": ("url",), "mqtt": ("topic",), "command": ("argv",)}[kind]
    for key in required:
        if key not in raw:
            problems.append("{}: a {} sink needs {}".format(where, kind, key))
    if kind == "webhook" and ("secret" in raw) == ("secret_file" in raw):
        problems.append("{}: a webhook sink needs one of secret or secret_file (the HMAC key)".format(where))
    if kind == "command" and not all(isinstance(a, str) for a in raw.get("argv", [""])) or raw.get("argv") == []:
        problems.append("{}: argv is a non-empty list of strings".format(where))
    if isinstance(raw.get("attempts"), int) and not 1 <= raw["attempts"] <= 100:
        problems.append("{}: attempts must be 1..100".format(where))
    if isinstance(raw.get("retry_s"), (int, float)) and not 0 < raw["retry_s"] <= 300:
        problems.append("{}: retry_s must be more than 0 and at most 300".format(where))
    if len(problems) > before:
        return None
    options = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    if "secret_file" in options:
        try:
            options["secret"] = read_text(options.pop("secret_file"), "webhook secret").strip()
        except InputFileError as e:
            problems.append("{}: {}".format(where, e))
            return None
    options["attempts"] = raw.get("attempts", 8)
    options["retry_s"] = raw.get("retry_s", 1.0)
    return Sink(str(name), kind, on, options)
