"""Every command that reads a file, fed the hostile corpus (tests/hostile.py)
as a real `cabguard` process: a clean refusal (exit 1 or 2, a message
naming the file), never a traceback, never a hang (issue 23).

A corpus item that is only odd in its values (numbers made huge or NaN,
dates in year 9999) may also be accepted (exit 0) by a command that has no
bound to break; structural damage (devices, FIFOs, folders, binary,
non-UTF-8, deep nesting, crafted CBOR and segments) must be refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from controller.cli.main import main as cabguard
from tests import hostile
from tests.journaling import flashed_keys, provision, write_records
from tests.test_runtime import SITE
from tests.traces import random_trace

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "controller.cli.main"]
LIMIT_S = 5.0       # CPU seconds a refusal may take (CPU, not wall: the test machine is shared)
HANG_S = 60.0       # wall seconds after which a command counts as hung (a FIFO's open blocks without CPU)
WORKERS = 2 * (os.cpu_count() or 1)
# Items whose values alone are odd: a command may accept them.
VALUE_ONLY = ("toml-numbers-", "toml-year-", "trace-numbers-", "json-nan", "json-huge-int", "segment-truncated",
              "empty")


@dataclass
class Workspace:
    root: Path
    keys: Path
    site_text: str
    site: Path
    table: Path
    trace: Path
    scenario: Path
    journal: Path
    journal_key: Path
    segment: bytes


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("hostile")
    keys = root / "keys"
    flashed_keys(root)
    site_text = SITE.format(d=root, port="/dev/null")
    site = root / "site.toml"
    site.write_text(site_text)
    table = root / "table.cbor"
    assert cabguard(["rules", "compile", "-o", str(table), "--key", str(keys / "installer.key"),
                     "--config", str(site)]) == 0
    trace = root / "good.trace"
    trace.write_text("\n".join(random_trace(5, 200)) + "\n")
    scenario = root / "door.toml"     # a shipped scenario, cut to 3 hours: accepted files run briefly
    scenario.write_text((REPO / "simulator/scenarios/door-opened-then-closed.toml").read_text().replace(
        'duration = "1d"', 'duration = "3h"'))
    jdir = root / "jsrc"
    jdir.mkdir()
    _key, journal_key = provision(jdir)
    write_records(jdir, _key, 30)
    segment = (jdir / "journal" / "00000000.seg").read_bytes()
    return Workspace(root, keys, site_text, site, table, trace, scenario, jdir / "journal", journal_key, segment)


CHECKPOINT_LINE = '{"gateway": "gw-7", "seq": 3, "tag": "000102030405060708090a0b0c0d0e0f"}'


@dataclass
class Slot:
    """One way a command reads a file: its argv for a hostile path, the suffix
    the file needs, and the families of the corpus that fit."""
    name: str
    argv: Callable[[Workspace, Path, Path], list[str]]      # (ws, hostile path, scratch dir)
    suffix: str
    families: Callable[[Workspace], dict[str, hostile.Item]]
    place: str = "file"      # "file", or "segment": the item is a journal's 00000000.seg
    sample: bool = False     # the generic corpus's SAMPLE: its reader gets it all in another slot


def _site_with(ws: Workspace, scratch: Path, old: str, new: str) -> str:
    site = scratch / "site.toml"
    site.write_text(ws.site_text.replace(old, new, 1))
    return str(site)


def _toml(ws: Workspace, path: Path) -> dict[str, hostile.Item]:
    return hostile.toml_family(path.read_text())


def _toml_file(path: Path) -> Callable[[Workspace], dict[str, hostile.Item]]:
    return lambda ws: hostile.toml_family(path.read_text())


def _deep(ws: Workspace) -> dict[str, hostile.Item]:
    return hostile.deep_toml()


def _site(ws: Workspace) -> dict[str, hostile.Item]:
    return hostile.toml_family(ws.site_text)


def _own_state(ws: Workspace) -> dict[str, hostile.Item]:
    """The site family without a state_dir: each `run` takes --state-dir (one lock each)."""
    return hostile.toml_family("\n".join(x for x in ws.site_text.splitlines() if not x.startswith("state_dir")))


def _trace(ws: Workspace) -> dict[str, hostile.Item]:
    return hostile.trace_family(ws.trace.read_text().splitlines())


def _scenario(ws: Workspace) -> dict[str, hostile.Item]:
    return hostile.scenario_family(ws.scenario.read_text())


def _segments(ws: Workspace) -> dict[str, hostile.Item]:
    return hostile.segment_family(ws.segment)


def _json(ws: Workspace) -> dict[str, hostile.Item]:
    return hostile.json_family()


def _installer(ws: Workspace) -> str:
    return str(ws.keys / "installer.key")


# The first slot of each reader gets that reader's whole family; the others
# the structural part (the generic corpus, deep nesting, crafted bytes), which
# is what trips a command's own reading path.
SLOTS = [
    Slot("config check", lambda ws, f, d: ["config", "check", str(f)], ".toml", _site),
    Slot("config check, profile", lambda ws, f, d: ["config", "check", _site_with(
        ws, d, 'profile = "io-dvt"', 'profile = "{}"'.format(f))], ".toml",
         _toml_file(REPO / "drivers/profiles/io-dvt.toml")),
    Slot("config check, model", lambda ws, f, d: ["config", "check", _site_with(
        ws, d, "[journal]", '[model]\npath = "{}"\n\n[journal]'.format(f))], ".json", lambda ws: hostile.json_deep(), sample=True),
    Slot("run --config", lambda ws, f, d: ["run", "--config", str(f), "--state-dir", str(d / "state")], ".toml",
         _own_state, sample=True),
    Slot("provision paths", lambda ws, f, d: ["provision", "paths", str(f)], ".toml", _deep, sample=True),
    Slot("sim --config", lambda ws, f, d: ["sim", "--config", str(f), "--link", str(d / "links")], ".toml",
         _toml_file(REPO / "simulator/configs/demo.toml")),
    Slot("rules check", lambda ws, f, d: ["rules", "check", str(f)], ".toml",
         lambda ws: {**hostile.toml_family((REPO / "rules/packs/safety.toml").read_text()), **hostile.when_family()}),
    Slot("rules check --catalog", lambda ws, f, d: ["rules", "check", "--catalog", str(f)], ".json", _json),
    Slot("rules compile", lambda ws, f, d: ["rules", "compile", "-o", str(d / "t.cbor"), "--key", _installer(ws),
                                            "--config", str(ws.site), str(f)],
         ".toml", lambda ws: hostile.when_family(), sample=True),
    Slot("rules compile --key", lambda ws, f, d: ["rules", "compile", "-o", str(d / "t.cbor"), "--key", str(f),
                                                  "--config", str(ws.site)],
         ".key", lambda ws: hostile.cbor_structure(), sample=True),
    Slot("rules explain, table", lambda ws, f, d: ["rules", "explain", str(f), str(ws.trace)], ".cbor",
         lambda ws: hostile.cbor_family(ws.table.read_bytes())),
    Slot("rules explain, trace", lambda ws, f, d: ["rules", "explain", str(ws.table), str(f)], ".trace",
         lambda ws: hostile.trace_deep(), sample=True),
    Slot("eval", lambda ws, f, d: ["eval", "--no-model", "--no-rules", str(f)], ".toml", _scenario),
    Slot("eval --model", lambda ws, f, d: ["eval", "--model", str(f), str(ws.scenario)], ".json", _json),
    Slot("eval --rules", lambda ws, f, d: ["eval", "--rules", str(f), "--", str(ws.scenario)], ".toml", _deep, sample=True),
    Slot("model train, scenario", lambda ws, f, d: ["model", "train", "-o", str(d / "m.json"), str(f)], ".toml",
         _deep, sample=True),
    Slot("model train, trace", lambda ws, f, d: ["model", "train", "-o", str(d / "m.json"), str(f)], ".trace",
         _trace),
    Slot("replay", lambda ws, f, d: ["replay", str(f)], ".trace", _trace),
    Slot("verify --key", lambda ws, f, d: ["verify", "--key", str(f), str(ws.journal)], ".key",
         lambda ws: hostile.cbor_family(ws.journal_key.read_bytes())),
    Slot("verify", lambda ws, f, d: ["verify", "--key", str(ws.journal_key), str(f.parent)], "", _segments,
         place="segment"),
    Slot("verify --checkpoints", lambda ws, f, d: ["verify", "--key", str(ws.journal_key), "--checkpoints", str(f),
                                                   str(ws.journal)], ".jsonl",
         lambda ws: {**hostile.json_family(), **hostile.trace_family([CHECKPOINT_LINE] * 3)}, sample=True),
    Slot("verify --json", lambda ws, f, d: ["verify", "--json", "--key", str(ws.journal_key), str(f.parent)], "",
         lambda ws: hostile.segment_crafted(), place="segment", sample=True),
    Slot("replay --incident", lambda ws, f, d: ["replay", "--incident", "3", "--key", str(ws.journal_key),
                                                str(f.parent)], "", lambda ws: hostile.segment_crafted(),
         place="segment", sample=True),
    Slot("cmd --key", lambda ws, f, d: ["cmd", "arm", "--gateway", "gw-test", "--site", "s", "--key", str(f)],
         ".key", lambda ws: hostile.cbor_structure(), sample=True),
    Slot("bus scan", lambda ws, f, d: ["bus", "scan", "--first", "1", "--last", "2", str(f)], "",
         lambda ws: {}, sample=True),
]


@dataclass
class Outcome:
    item: str
    path: Path
    code: int | None     # None: killed as hung
    out: str
    seconds: float       # CPU time, user and system
    segment: bool        # a journal's segment: verify may pass a torn tail, with a warning naming it

    @property
    def names(self) -> tuple[str, ...]:
        """What a message may name: the file, or for a segment its journal folder."""
        return (str(self.path), self.path.name) + ((str(self.path.parent),) if self.segment else ())


def _place(slot: Slot, name: str, item: hostile.Item, folder: Path) -> Path:
    if slot.place == "file":
        return hostile.materialize(name, item, folder / "in", slot.suffix)
    journal = folder / "journal"
    journal.mkdir(parents=True)
    target = journal / "00000000.seg"
    if isinstance(item, str) and hostile.SPECIAL[item]:
        target.symlink_to(hostile.SPECIAL[item])
        return target
    hostile.materialize(name, item, folder / "in").rename(target)
    return target


def _run(argv: list[str], item: str, path: Path, scratch: Path) -> Outcome:
    log = scratch / "output.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen(CLI + argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    hung = threading.Timer(HANG_S, proc.kill)
    hung.start()
    _pid, status, usage = os.wait4(proc.pid, 0)     # wait4: the child's own CPU time
    hung.cancel()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    return Outcome(item, path, None if code == -signal.SIGKILL else code, text, usage.ru_utime + usage.ru_stime,
                   path.name.endswith(".seg"))


def _problems(o: Outcome) -> list[str]:
    found = []
    if o.code is None:
        found.append("still running after {} s".format(HANG_S))
    if o.seconds > LIMIT_S:
        found.append("{:.1f} s of CPU".format(o.seconds))
    if "Traceback" in o.out:
        found.append("a traceback")
    lenient = o.item.startswith(VALUE_ONLY) or o.segment
    if o.code not in ((0, 1, 2) if lenient else (1, 2)):
        found.append("exit {}".format(o.code))
    if o.code and not any(str(name) in o.out for name in o.names):
        found.append("no message naming {}".format(o.path))
    return found


@pytest.mark.parametrize("slot", SLOTS, ids=[s.name for s in SLOTS])
def test_every_hostile_file_gets_a_clean_refusal(ws, slot, tmp_path):
    items = hostile.corpus(slot.families(ws), sample=slot.sample)
    jobs = []
    for n, (name, item) in enumerate(sorted(items.items())):
        scratch = tmp_path / "{:03d}".format(n)
        path = _place(slot, name, item, scratch)
        jobs.append((slot.argv(ws, path, scratch), name, path, scratch))
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda job: _run(*job), jobs))
    bad = ["{}: {} — {}".format(o.item, ", ".join(_problems(o)), o.out.strip()[-600:])
           for o in outcomes if _problems(o)]
    slowest = max(outcomes, key=lambda o: o.seconds)
    print("{}: {} files, slowest {:.2f} s ({})".format(slot.name, len(outcomes), slowest.seconds, slowest.item))
    assert not bad, "\n\n".join(bad)


OUTPUTS = [
    ("keys gen", True, lambda ws, p: ["keys", "gen", "--gateway", "gw-test", "--out", str(p)]),
    ("rules compile", False, lambda ws, p: ["rules", "compile", "-o", str(p), "--key", _installer(ws),
                                            "--config", str(ws.site)]),
    ("model train", False, lambda ws, p: ["model", "train", "-o", str(p), str(ws.scenario)]),
    ("provision relocate", False, lambda ws, p: ["provision", "relocate", str(ws.site), "--root", "/tmp/x",
                                                 "-o", str(p)]),
]


@pytest.mark.parametrize("command,folder,argv", OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_an_output_nobody_can_write_is_a_clean_refusal(ws, tmp_path, command, folder, argv):
    jobs = [(argv(ws, p), name, p, tmp_path / name)
            for name, p in hostile.output_places(tmp_path / "outs", folder).items()]
    for job in jobs:
        job[3].mkdir()
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda job: _run(*job), jobs))
    bad = ["{}: {} — {}".format(o.item, ", ".join(_problems(o)), o.out.strip()[-600:])
           for o in outcomes if _problems(o)]
    assert not bad, "\n\n".join(bad)
