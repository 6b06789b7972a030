"""The ``cabguard`` command line.

Each subcommand's handler is imported only when it runs, so ``--help`` and
quick commands do not pay for cryptography or serial imports.  Errors that
are meant for people (every package's error base) print one clear message
and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from controller import __version__

Handler = str  # "module:function"
JSON_HELP = "one JSON document instead of text"
DB_HELP = "SQLite file or postgresql:// URL"


def _command(sub: argparse._SubParsersAction, name: str, handler: Handler, help: str,
             description: str | None = None) -> argparse.ArgumentParser:
    """A (sub)command's parser, run by ``handler``."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(handler=handler)
    return p


def _actions(sub: argparse._SubParsersAction, name: str, help: str, description: str) -> argparse._SubParsersAction:
    """A command of actions (``cabguard keys gen``): one ACTION is required, ``args.NAME_command`` names it."""
    p = sub.add_parser(name, help=help, description=description)
    return p.add_subparsers(dest=name + "_command", metavar="ACTION", required=True)


def _json(p: argparse.ArgumentParser, help: str = JSON_HELP) -> None:
    p.add_argument("--json", action="store_true", help=help)


def _db(p: argparse.ArgumentParser, required: bool = True, help: str = DB_HELP) -> None:
    p.add_argument("--db", required=required, metavar="DB", help=help)


def _output(p: argparse.ArgumentParser, metavar: str, help: str) -> None:
    p.add_argument("-o", "--output", required=True, metavar=metavar, help=help)


def _journal_dir(p: argparse.ArgumentParser) -> None:
    """A journal folder and the record key that reads it."""
    p.add_argument("journal", metavar="JOURNAL_DIR", help="the journal folder (NNNNNNNN.seg files), or a copy")
    p.add_argument("--key", required=True, metavar="KEY", help="the record key file from `cabguard keys gen`")


def _replay(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "replay", "controller.cli.replay:main",
                 help="re-run a recorded input trace, print a digest",
                 description="Re-run a trace through step() and print the outputs, "
                             "events and a digest (docs/trace.md); or re-run an "
                             "incident's evidence window from a journal.")
    p.add_argument("trace", metavar="TRACE", help="trace file (JSON Lines), or a journal folder with --incident")
    p.add_argument("--incident", type=int, metavar="SEQ",
                   help="TRACE is a journal: replay the evidence of this incident (its seq or its alarm's)")
    p.add_argument("--key", metavar="KEY", help="with --incident: the record key file; "
                                                "with --table: the installer key that verifies it")
    p.add_argument("--trace-out", metavar="FILE", help="with --incident: also write the rebuilt trace")
    _json(p)
    p.add_argument("--table", metavar="TABLE", help="run this compiled rule table (default: the "
                                                    "table in the trace header, if any)")


def _demo(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "demo", "simulator.demo:main",
                 help="the built-in simulator and a gateway through a scripted night",
                 description="Simulated devices on ptys, a real gateway with the default rule "
                             "packs, console logins, an uplink to a private broker: a night "
                             "compressed into about a minute, then an incident summary and "
                             "cabguard verify over the journal.")
    p.add_argument("--out", metavar="DIR", help="keep the journal, keys and config in DIR")
    p.add_argument("--seconds", type=float, default=60.0, metavar="N",
                   help="how long the night takes (default 60, at least 30)")
    p.add_argument("--broker", metavar="HOST:PORT",
                   help="uplink to this broker (default: a private Mosquitto, if installed)")
    p.add_argument("--console-link", metavar="PATH",
                   help="link the console pty here (picocom PATH to watch or join in)")


def _run(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "run", "controller.gateway.run:main",
                 help="run the gateway for real",
                 description="Run the gateway with a site config (docs/config.md) until "
                             "SIGTERM: scan loop, buses, outputs, journal.")
    p.add_argument("--config", required=True, metavar="SITE.toml", help="the site config")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the last good config is kept if SITE.toml cannot be read "
                        "(default: the config's gateway.state_dir, else /var/lib/cabguard)")


def _config(sub: argparse._SubParsersAction) -> None:
    cs = _actions(sub, "config", help="check a site config",
                  description="Site config tools (docs/config.md).")
    check = _command(cs, "check", "controller.cli.configcheck:main",
                     help="list every problem at once, with dotted paths")
    check.add_argument("config", metavar="SITE.toml")
    check.add_argument("--installing", action="store_true",
                       help="on the flashing machine (flash.sh): check the files below, not the config's "
                            "gateway paths (keys without --keys are yet to be generated)")
    check.add_argument("--keys", metavar="DIR", help="with --installing: record.key, command.key, installer.key")
    check.add_argument("--model", metavar="FILE", help="with --installing: the model file to install")
    check.add_argument("--rules", nargs="+", metavar="SRC",
                       help="with --installing: rule files to compile for this site (default: the shipped packs)")


def _collect(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "collect", "controller.headend.collect:main",
                 help="head-end receiver: verify records from the broker into SQLite or PostgreSQL",
                 description="Subscribe to every gateway's records and heartbeats, verify MACs, store "
                             "them; the database de-duplicates, checks chains and checkpoints, opens "
                             "incidents and notifies (docs/headend.md).")
    p.add_argument("--broker", required=True, metavar="HOST:PORT")
    p.add_argument("--key", required=True, action="append", metavar="KEY",
                   help="a gateway's record key file, or a folder of them (repeatable)")
    p.add_argument("--db", "--out", dest="db", required=True, metavar="DB",
                   help="SQLite database file, or postgresql://USER@HOST:PORT/NAME")
    p.add_argument("--config", metavar="HEADEND.toml", help="silent-gateway timing and notification sinks")
    p.add_argument("--share", metavar="GROUP",
                   help="join this MQTT 5 shared subscription group ($share/GROUP/...): collectors in one "
                        "group split the records and share one --db")
    p.add_argument("--prefix", default="cabguard", help="topic prefix (default cabguard)")
    p.add_argument("--seconds", type=float, metavar="N", help="stop after N seconds (default: until SIGTERM)")
    p.add_argument("--until-records", type=int, metavar="N", help="stop once N records are stored")
    p.add_argument("--client-id", default="cabguard-collect",
                   help="MQTT client id: keep it stable so the broker holds a persistent session")
    p.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1", help="MQTT version (default 3.1.1)")
    _json(p)


def _headend(sub: argparse._SubParsersAction) -> None:
    hs = _actions(sub, "headend", help="the fleet in the head-end database: status, acknowledge an incident, "
                                       "patrol hints",
                  description="Read the head-end database that `cabguard collect` writes (docs/headend.md).")
    st = _command(hs, "status", "controller.headend.status:main",
                  help="gateways online, mode, open incidents, last heartbeat, gaps, equivocations")
    _db(st)
    st.add_argument("--config", metavar="HEADEND.toml", help="for heartbeat_s and silent_after (default 30 s, 3)")
    _json(st, "one JSON document (for dashboards)")
    ack = _command(hs, "ack", "controller.headend.status:main",
                   help="record that a person acknowledged an open incident")
    ack.add_argument("incident", type=int, metavar="ID", help="the incident number (from status)")
    ack.add_argument("--by", required=True, metavar="NAME", help="who acknowledges it")
    _db(ack)
    pat = _command(hs, "patrol", "controller.headend.patrol:main",
                   help="rank cabinets and hours of the next shift by risk, with the reason for each",
                   description="From the records the head end holds: open incidents first, then each "
                               "cabinet's hours of the shift by its alarms and near misses, weighted up "
                               "when recent and in the cabinet's learned quiet hours (docs/headend.md).")
    _db(pat)
    pat.add_argument("--shift", metavar="HH-HH", help="the shift's hours, e.g. 22-06 (default: the 8 hours "
                                                     "from the next full hour)")
    pat.add_argument("--at", metavar="TIME", help="rank as of this ISO 8601 time (default: now)")
    pat.add_argument("--days", type=int, default=28, metavar="N", help="learn from the last N days (default 28)")
    pat.add_argument("--tz", default="UTC", metavar="ZONE", help="the hours' time zone (default UTC)")
    pat.add_argument("--top", type=int, default=10, metavar="N", help="at most N hints (default 10)")
    _json(pat, "one JSON document")


def _cmd(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "cmd", "controller.headend.cmdsend:main",
                 help="send a signed downlink command to a gateway",
                 description="Make a COSE_Mac0 command under the head-end key, bound to one "
                             "gateway, with a sequence number and an expiry, and publish it.")
    p.add_argument("name", help="command, e.g. arm, lock, 'maint start'")
    p.add_argument("args", nargs="*", help="its arguments, e.g. 30m for maint start")
    p.add_argument("--gateway", required=True, metavar="ID")
    p.add_argument("--key", required=True, metavar="KEY", help="the head-end command key file")
    p.add_argument("--site", required=True, help="the gateway's site (part of the topic)")
    p.add_argument("--broker", metavar="HOST:PORT", help="publish here (else print the command as hex)")
    p.add_argument("--prefix", default="cabguard")
    p.add_argument("--seq", type=int, metavar="N", help="command sequence (default: milliseconds since 1970)")
    p.add_argument("--expires", type=int, default=300, metavar="S", help="seconds until it expires (default 300)")
    _db(p, required=False, help="write it to this head-end database's command log ({})".format(DB_HELP))


def _bench(sub: argparse._SubParsersAction) -> None:
    from controller.devtools.bench import AREAS     # a tuple of names: importing it is cheap
    p = _command(sub, "bench", "controller.devtools.bench:main",
                 help="performance figures (what `make bench` runs)")
    _json(p)
    p.add_argument("--only", metavar="AREA", action="append",
                   help="run only this area (repeatable; {}); default: all".format(", ".join(AREAS)))


def _sim(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "sim", "simulator.cli:main",
                 help="serve simulated Modbus devices on pseudo-terminals",
                 description="Serve the simulated buses and devices of SIM.toml "
                             "(docs/simulator.md) until SIGINT/SIGTERM; DIR/<bus> links to "
                             "each bus's pty.")
    p.add_argument("--config", required=True, metavar="SIM.toml", help="simulator config")
    p.add_argument("--link", required=True, metavar="DIR", help="make DIR/<bus> symlinks to the ptys")
    p.add_argument("--commands", action="store_true",
                   help="read commands from stdin: set DEV SIG=V..., fault DEV KIND|none, swap DEV SERIAL, "
                        "get DEV [SIG...]")
    p.add_argument("--wire", choices=("on", "off"), default=None,
                   help="on: a real wire's timing (byte pacing at the baud, turnarounds); off: fast mode, "
                        "answers at once; default: each bus's 'wire' in SIM.toml (on)")


def _soak(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "soak", "simulator.soak:main",
                 help="the real gateway against the real simulator, with restarts and field faults",
                 description="Run `cabguard run` against `cabguard sim` in real time: a quiet, living "
                             "cabinet, the shipped packs and model, a private Mosquitto, gateway "
                             "restarts and harmless field faults (docs/runtime.md). Prints every "
                             "record of severity warning or above; exits 1 on any alarm a quiet "
                             "cabinet must not raise.")
    p.add_argument("--minutes", type=float, default=10.0, metavar="N", help="how long (default 10)")
    p.add_argument("--armed", action="store_true",
                   help="arm the cabinet: only a tamper rule's documented trigger may alarm")
    p.add_argument("--out", metavar="DIR", help="keep the journal, keys, configs and logs in DIR")
    p.add_argument("--seed", type=int, default=1, help="random source of the cabinet's life and faults")


def _bus(sub: argparse._SubParsersAction) -> None:
    bus = _actions(sub, "bus", help="Modbus bus tools (scan)",
                   description="Tools for an installer on a Modbus RTU bus.")
    scan = _command(bus, "scan", "drivers.modbus.scan:main",
                    help="find answering slaves, identify SunSpec devices",
                    description="Probe each slave address on PORT and list those that "
                                "answer; SunSpec devices show their models and identity.")
    scan.add_argument("port", metavar="PORT", help="serial port, e.g. /dev/ttyUSB0")
    scan.add_argument("--baud", type=int, default=115200, metavar="B", help="baud rate (default 115200)")
    scan.add_argument("--parity", default="N", choices=("N", "E", "O"),
                      help="parity: N none (default), E even (the Modbus RTU default), O odd")
    scan.add_argument("--stopbits", type=int, default=1, choices=(1, 2), help="stop bits (default 1)")
    scan.add_argument("--rs485", default="auto", choices=("auto", "rts", "kernel"),
                      help="who switches the RS-485 transceiver: auto (the adapter, default), rts (this "
                           "program raises RTS to send), kernel (the serial driver, TIOCSRS485)")
    scan.add_argument("--timeout-ms", type=float, default=None, metavar="MS",
                      help="wait per read (default: 50 ms of turnaround + a 16-register read's wire time "
                           "at the baud: 78 ms at 19200, 106 ms at 9600)")
    scan.add_argument("--first", type=int, default=1, choices=range(1, 248), metavar="A",
                      help="first address (default 1)")
    scan.add_argument("--last", type=int, default=247, choices=range(1, 248), metavar="A",
                      help="last address (default 247)")


def _keys(sub: argparse._SubParsersAction) -> None:
    keys_sub = _actions(sub, "keys", help="make a gateway's COSE_Key files",
                        description="Key files (COSE_Key, mode 0600); see docs/keys.md.")
    gen = _command(keys_sub, "gen", "controller.cli.keygen:main",
                   help="write record, command and installer keys for a gateway",
                   description="Write record.key (provisioning record key), command.key "
                               "and installer.key for one gateway, mode 0600.")
    gen.add_argument("--gateway", required=True, metavar="ID", help="the gateway's id (names the kids)")
    gen.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    gen.add_argument("--alg", choices=["aes-mac", "sm4-mac", "a128gcm", "sm4-gcm"], default="aes-mac",
                     help="record algorithm: MAC only (default aes-mac) or encrypted (a128gcm, sm4-gcm)")
    gen.add_argument("--force", action="store_true", help="replace existing key files")


def _journal(sub: argparse._SubParsersAction) -> None:
    jsub = _actions(sub, "journal", help="read a journal: list, filter, show, export records; its incidents",
                    description="Read a journal folder (the gateway's or a copy) with the record key: "
                                "records as lines, filtered, or exported; incidents with their evidence "
                                "windows (docs/journal.md).")

    lst = _command(jsub, "list", "controller.cli.journalcmd:list_cmd",
                   help="records, oldest first; filters combine (and)")
    _journal_dir(lst)
    lst.add_argument("--since", metavar="TIME", help="from this ISO 8601 time on (no offset: UTC)")
    lst.add_argument("--until", metavar="TIME", help="before this ISO 8601 time")
    lst.add_argument("--severity", choices=("info", "warning", "alarm", "critical"),
                     help="this severity or worse")
    lst.add_argument("--type", action="append", metavar="TYPE",
                     help="record type, e.g. rule, mode, health, command, incident (repeatable)")
    lst.add_argument("--rule", action="append", metavar="ID", help="rule id, e.g. door_forced or door_forced.io (repeatable)")
    lst.add_argument("--device", action="append", metavar="NAME", help="records about this device (repeatable)")
    lst.add_argument("--format", choices=("text", "jsonl", "csv"), default="text",
                     help="text lines (default), JSON Lines or CSV")
    show = _command(jsub, "show", "controller.cli.journalcmd:show", help="one record in full")
    _journal_dir(show)
    show.add_argument("seq", type=int, metavar="SEQ")
    _json(show)
    inc = _command(jsub, "incidents", "controller.cli.journalcmd:incidents_cmd",
                   help="incidents, their alarms and evidence windows (the SEQ for replay --incident)")
    _journal_dir(inc)
    _json(inc)


def _verify(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "verify", "controller.journal.verify:main",
                 help="check a journal: MACs, chain, sequence, time, truncation",
                 description="Check every record of a journal folder with the provisioning "
                             "record key; exit 1 on any sign of tampering (docs/journal.md).")
    _journal_dir(p)
    p.add_argument("--checkpoint", metavar="SEQ[:TAG]", action="append",
                   help="a checkpoint the head-end saw in a heartbeat (detects truncation; repeatable)")
    p.add_argument("--checkpoints", metavar="FILE",
                   help="the head end's checkpoints: JSON lines {gateway, seq, tag} (docs/journal.md)")
    p.add_argument("--headend", metavar="DB", help="take the checkpoints the head end anchored for this gateway "
                                                   "from its database ({})".format(DB_HELP))
    p.add_argument("--gateway", metavar="ID", help="with --checkpoints/--headend: the gateway id (default: from the key's kid)")
    _json(p)


def _rules(sub: argparse._SubParsersAction) -> None:
    rsub = _actions(sub, "rules", help="check, compile and explain rule files (docs/rules.md)",
                    description="The rule language: check rule files, compile them into a "
                                "signed table, explain a table against a trace.")
    catalog_help = ("signal catalog JSON (docs/rules.md); default: the built-in demo cabinet "
                    "(io, bms1, bms2, relay, sys.*, sched.night/shift_change/maintenance)")
    c = _command(rsub, "check", "controller.cli.rulescmd:check",
                 help="validate rule files, report every problem",
                 description="Validate rule files against the signal catalog; every "
                             "problem is reported with file, line, column and rule id.")
    c.add_argument("sources", nargs="*", metavar="SRC", help="rule files (default: rules/packs/*.toml)")
    c.add_argument("--catalog", metavar="FILE", help=catalog_help)
    c.add_argument("--config", metavar="SITE.toml", help="use the catalog of this site config instead")
    k = _command(rsub, "compile", "controller.cli.rulescmd:compile_cmd",
                 help="compile rule files into a signed table",
                 description="Compile rule files into a CBOR table MAC'd with the installer key.")
    k.add_argument("sources", nargs="*", metavar="SRC", help="rule files (default: rules/packs/*.toml)")
    _output(k, "TABLE", "table file to write")
    k.add_argument("--key", metavar="KEY", required=True,
                   help="the gateway's installer key (kid <gateway>/installer, from `cabguard keys gen`)")
    # A table is for one site's signal catalog: which one is never a silent default.
    target = k.add_mutually_exclusive_group(required=True)
    target.add_argument("--config", metavar="SITE.toml", help="compile for this site config's catalog (and gateway)")
    target.add_argument("--catalog", metavar="FILE", help=catalog_help)
    k.add_argument("--emit-python", metavar="FILE",
                   help="also write the Python the evaluator runs for the table, one function per rule (for audit)")
    e = _command(rsub, "explain", "controller.cli.rulescmd:explain",
                 help="which rule fired when, and why",
                 description="Replay TRACE with TABLE and show, for every rule raised or "
                             "cleared, the scan and which of its terms were true.")
    e.add_argument("table", metavar="TABLE", help="compiled table file")
    e.add_argument("trace", metavar="TRACE", help="trace file (docs/trace.md)")
    e.add_argument("--key", metavar="KEY", help="verify the table's MAC with this key")


def _console(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "console", "controller.console.local:main",
                 help="the technician shell on this terminal (a running gateway's console)",
                 description="Attach this terminal to the console of a gateway running on this "
                             "machine (its [console] port = \"pty:PATH\"), as picocom would over "
                             "the cable (docs/console.md).  On a terminal: raw mode, Ctrl-] quits.  "
                             "With stdin not a terminal: send each line at the prompt, print the "
                             "transcript.")
    p.add_argument("--local", action="store_true", required=True,
                   help="attach this terminal (stdin/stdout) to the gateway's console")
    p.add_argument("--link", metavar="PATH", help="the console's pty link (default: from --config)")
    p.add_argument("--config", metavar="SITE.toml", help="take the link from this site config's [console] port")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="scripted use: the longest wait for the prompt after a line (default 30)")


def _eval(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "eval", "simulator.evaluate:main",
                 help="closed-loop evaluation of scenarios in virtual time",
                 description="Run scenarios (docs/scenarios.md) through step() in virtual time; "
                             "report detection (PD), time-to-detect and nuisance alarms (NAR), "
                             "rules alone against rules plus the anomaly model.")
    p.add_argument("scenario", nargs="+", help="scenario file(s) (TOML)")
    p.add_argument("--report", metavar="DIR", help="write a report with plots (PNG) into DIR")
    _json(p)
    p.add_argument("--model", metavar="MODEL", help="anomaly model (default: rules/models/port.json)")
    p.add_argument("--no-model", action="store_true", help="evaluate without the anomaly model")
    p.add_argument("--rules", nargs="+", metavar="SRC", default=[],
                   help="rule files to compile for each cabinet (default: the packs in rules/packs/)")
    p.add_argument("--no-rules", action="store_true", help="no rule table: the core's entry delay alone")
    p.add_argument("--check", action="store_true",
                   help="only load and validate the files (errors name FILE:LINE; exit 2 on any), listing "
                        "the visits their processes draw")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="run the scenarios on N processes (default 0: one per core; 1: serial); "
                        "the results are the same")
    p.add_argument("--idle-ms", type=int, default=1000, metavar="MS",
                   help="longest virtual-time step between scans when nothing changes (default 1000)")


def _model(sub: argparse._SubParsersAction) -> None:
    msub = _actions(sub, "model", help="the anomaly model: train it",
                    description="Anomaly model tools (docs/anomaly.md).")
    t = _command(msub, "train", "simulator.train:main",
                 help="learn a baseline from scenarios or traces",
                 description="Learn the per-time-of-week baseline from the normal parts of "
                             "scenario files (.toml) or recorded traces; labelled incidents "
                             "are excluded. Writes integer tables as JSON.")
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="scenario (.toml) or trace files")
    _output(t, "MODEL", "model file to write (JSON)")
    t.add_argument("--cabinet", metavar="ID", help="learn only this cabinet of the scenarios (default: all, pooled)")


def _provision(sub: argparse._SubParsersAction) -> None:
    ps = _actions(sub, "provision", help="flash.sh's helpers: config paths, relocation, TOTP enrolment, .mpy",
                  description="Host-side steps of flash.sh (docs/flashing.md).")
    paths = _command(ps, "paths", "controller.cli.provision:paths_cmd",
                     help="print the files a site config names (KEY<TAB>VALUE lines)")
    paths.add_argument("config", metavar="SITE.toml")
    rel = _command(ps, "relocate", "controller.cli.provision:relocate_cmd",
                   help="write a copy of SITE.toml with its gateway paths under ROOT")
    rel.add_argument("config", metavar="SITE.toml")
    rel.add_argument("--root", required=True, metavar="ROOT")
    _output(rel, "FILE", "written atomically")
    epoch = _command(ps, "epoch-key", "controller.cli.provision:epoch_key_cmd",
                     help="write epoch 0 of a root record key (what the gateway gets)")
    epoch.add_argument("record_key", metavar="RECORD.key", help="the root record key from `cabguard keys gen`")
    _output(epoch, "FILE", "written atomically, mode 0600")
    enrol = _command(ps, "enrol", "controller.cli.provision:enrol_cmd",
                     help="enrol people; print each new one's otpauth:// URI once")
    enrol.add_argument("people", metavar="PEOPLE.toml", help="the console's people file ([console] people)")
    enrol.add_argument("--gateway", required=True, metavar="ID")
    enrol.add_argument("--person", required=True, action="append", metavar="ID[:ROLE]",
                       help="technician (default) or installer; repeatable")
    mpy = _command(ps, "mpy", "controller.cli.provision:mpy_cmd",
                   help="compile the portable core to .mpy files (mpy-cross)")
    mpy.add_argument("--out", required=True, metavar="DIR", help="package folders of .mpy files go here")


def _selftest(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "selftest", "controller.cli.selftest:main",
                 help="check a flashed gateway: config, keys, rule table, bus scan",
                 description="What flash.sh --verify runs on the gateway (service stopped): "
                             "config check, key modes, rule-table MAC and catalog, every "
                             "configured device answers; optionally a siren test.")
    p.add_argument("--config", required=True, metavar="SITE.toml")
    p.add_argument("--siren-test", action="store_true", help="sound the siren for one second")


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _run, _config, _demo, _replay, _rules, _eval, _model, _bench, _sim, _soak, _bus, _keys, _verify, _journal, _collect, _headend, _cmd,
    _console, _provision, _selftest,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cabguard",
        description="Battery-cabinet guard: reads the cabinet's devices, decides, "
                    "raises the alarm, and keeps evidence.",
    )
    parser.add_argument("--version", action="version", version="cabguard " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Every package's error base: these print a message, never a traceback."""
    from controller.core.errors import CoreError
    from controller.errors import CabguardError

    bases: list[type[BaseException]] = [CabguardError, CoreError]
    for mod, name in (("drivers.errors", "DriverError"), ("rules.errors", "RuleError"),
                      ("simulator.errors", "SimError")):
        try:
            bases.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(bases)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = args.handler.split(":")
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except _user_errors() as e:
        print("cabguard: error: {}".format(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
