"""``cabguard cmd NAME --gateway ID --key KEY [ARGS]``: the head end's side of the downlink.
With ``--db`` each command sent is written to the head end's command log."""

from __future__ import annotations

import argparse
import json
import time

from controller.console import commands as cm
from controller.errors import CabguardError
from controller.headend.store import open_store
from controller.link.wire import Topics, make_command
from drivers.keys import load_key
from drivers.mqtt import ACKED, CONNECTED, REFUSED, BrokerSettings, MqttLink


def build(args: argparse.Namespace) -> tuple[cm.CommandSpec, bytes, dict]:
    spec, rest = cm.find([args.name.lower()] + list(args.args), "downlink")
    values = cm.bind(spec, rest)        # checks the arguments here, before anything is sent
    words = dict(zip([a.name for a in spec.args], rest))
    seq = args.seq if args.seq is not None else int(time.time() * 1000)
    key = load_key(args.key)
    expiry = int(time.time()) + args.expires
    chosen = {k: words[k] for k in values}
    data = make_command(key, args.gateway, seq, expiry, spec.name, chosen)
    return spec, data, {"seq": seq, "expiry": expiry, "args": chosen}


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
    spec, data, facts = build(args)
    if not args.broker:
        print(data.hex())
        return 0
    topic = Topics(args.prefix, args.site, args.gateway).commands
    log = open_store(args.db) if args.db else None
    row = None
    if log:
        row = log.execute("INSERT INTO commands (gateway, site, seq, name, args, expiry, sent_at, state) "
                          "VALUES (?,?,?,?,?,?,?,'sending') RETURNING id",
                          (args.gateway, args.site, facts["seq"], spec.name, json.dumps(facts["args"], sort_keys=True),
                           facts["expiry"], time.time())).fetchone()[0]
    try:
        publish(args.broker, topic, data)
    except CabguardError as e:
        if log:
            log.execute("UPDATE commands SET state=? WHERE id=?", ("not sent: {}".format(e), row))
        raise
    if log:
        log.execute("UPDATE commands SET state='published' WHERE id=?", (row,))
    print("sent '{}' to {} on {}".format(spec.name, args.gateway, topic))
    return 0
