"""``cabguard cmd NAME --gateway ID --key KEY [ARGS]``: the head end's side of the downlink."""

from __future__ import annotations

import argparse
import time

from controller.console import commands as cm
from controller.errors import CabguardError
from controller.link.wire import Topics, make_command
from drivers.keys import load_key
from drivers.mqtt import ACKED, CONNECTED, REFUSED, BrokerSettings, MqttLink


def build(args: argparse.Namespace) -> tuple[cm.CommandSpec, bytes]:
    spec, rest = cm.find([args.name.lower()] + list(args.args), "downlink")
    values = cm.bind(spec, rest)        # checks the arguments here, before anything is sent
    words = dict(zip([a.name for a in spec.args], rest))
    seq = args.seq if args.seq is not None else int(time.time() * 1000)
    key = load_key(args.key)
    data = make_command(key, args.gateway, seq, int(time.time()) + args.expires, spec.name,
                        {k: words[k] for k in values})
    return spec, data


def publish(broker: str, topic: str, data: bytes, timeout_s: float = 10.0) -> None:
    host, _, port = broker.rpartition(":")
    link = MqttLink(BrokerSettings(host, int(port), client_id="cabguard-cmd-{}".format(int(time.time() * 1000))))
    why = link.connect()
    if why:
        raise CabguardError(why)
    deadline = time.monotonic() + timeout_s
    mid = None
    try:
        while time.monotonic() < deadline:
            link.poll(0.05)
            while link.events:
                ev = link.events.popleft()
                if ev[0] == CONNECTED:
                    mid = link.publish(topic, data)
                elif ev[0] == REFUSED:
                    raise CabguardError("broker {} refused the connection: {}".format(broker, ev[1]))
                elif ev[0] == ACKED and ev[1] == mid:
                    return
        raise CabguardError("broker {} did not acknowledge the command within {:.0f} s".format(broker, timeout_s))
    finally:
        link.close()


def main(args: argparse.Namespace) -> int:
    spec, data = build(args)
    if not args.broker:
        print(data.hex())
        return 0
    topic = Topics(args.prefix, args.site, args.gateway).commands
    publish(args.broker, topic, data)
    print("sent '{}' to {} on {}".format(spec.name, args.gateway, topic))
    return 0
