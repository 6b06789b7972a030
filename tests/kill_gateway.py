"""Kill a real gateway between an alarm and its persisted state; restart it; say what came back.

Usage: python -m tests.kill_gateway DIR points [SLOW_MS]
       python -m tests.kill_gateway DIR random N SEED [SLOW_MS]

Each trial gets a fresh copy of a gateway (keys, a signed one-rule table
that raises an alarm at the first scan of a DISARMED cabinet, a site
config whose bus port is missing).  A forked victim builds it with
``controller.gateway.run.build``, lets start-up reach the disk, then runs one scan:
the alarm.  Every disk operation of every thread from then on (``write``,
``fsync``, ``fdatasync``, ``replace``) can be a kill point, and each fsync
first sleeps SLOW_MS (default 10) to stand in for slow flash.

- ``points``: a dry run counts the operations up to a clean stop; then one
  trial per operation, SIGKILL just before it (so after the one before).
- ``random``: N trials, SIGKILL from a timer at a random moment between the
  alarm's scan and the moment the dry run's last write was done.

After each kill a second fork restarts the gateway from the same folder.
One line per trial: ``trial K kill WHERE journal_alarm 0|1 restart MODE``.
The process forks so that each trial pays no interpreter start-up; the
parent never starts a thread, so forking stays safe.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import cbor2

from controller.cli.rulescmd import config_catalog
from controller.core import modes
from controller.core.catalog import Catalog
from controller.core.events import EV_MODE
from controller.gateway.run import build
from controller.gateway.tables import sign, write_table
from controller.journal import records as R
from controller.journal.segments import iter_frames, list_segments
from drivers import cose
from drivers.keys import load_key
from rules.compiler import SiteCatalog, compile_files
from tests.journaling import flashed_keys
from tests.test_runtime import SITE

RULE = '[[rule]]\nid = "always"\nwhen = "sys.disk_free_pct <= 100"\nseverity = "alarm"\n'
RULES_SECTION = '\n[rules]\ntable = "{d}/rules.table"\nkey = "{d}/keys/installer.key"\n'
WATCHED = ("write", "fsync", "fdatasync", "replace")
SLOW = ("fsync", "fdatasync")


def prepare_template(template: Path, rule: str = RULE) -> None:
    """Keys and a signed table of ``rule``, made once; every trial copies them."""
    flashed_keys(template)
    write_site(template)
    specs, classes = config_catalog(str(template / "site.toml"))
    catalog = Catalog(specs)
    rules = template / "always.toml"
    rules.write_text(rule)
    compiled = compile_files([str(rules)], SiteCatalog(catalog.specs(), classes, catalog.digest()))
    write_table(template / "rules.table", sign(compiled.encode(), load_key(template / "keys" / "installer.key")))


def write_site(d: Path) -> Path:
    site = d / "site.toml"
    site.write_text(SITE.format(d=d, port=d / "no-such-port") + RULES_SECTION.format(d=d))
    return site


def fresh_trial(template: Path, d: Path) -> Path:
    shutil.copytree(template / "keys", d / "keys")
    shutil.copytree(template / "state", d / "state")      # epoch 0 of the record key, as flashed
    shutil.copy(template / "rules.table", d / "rules.table")
    return write_site(d)


class DiskOps:
    """Wraps the ``os`` calls that reach the disk: counts them, slows fsyncs, kills at one."""

    def __init__(self, slow_s: float, kill_before: int):
        self.count = 0
        self.last_done = 0.0
        self._lock = threading.Lock()
        for name in WATCHED:
            setattr(os, name, self._wrap(name, getattr(os, name), slow_s if name in SLOW else 0.0, kill_before))

    def _wrap(self, name: str, real, slow_s: float, kill_before: int):
        def op(*args):
            with self._lock:
                self.count += 1
                if self.count == kill_before:
                    os.kill(os.getpid(), signal.SIGKILL)
            if slow_s:
                time.sleep(slow_s)
            result = real(*args)
            self.last_done = time.monotonic()
            return result
        op.__name__ = name
        return op


def victim(site: Path, slow_s: float, kill_before: int, kill_after_s: float | None) -> None:
    """Build the gateway, start it, run the alarm's scan, stop cleanly (if nobody kills us)."""
    services = build(str(site))
    gw = services.gateway
    assert gw.journal.flush(10)
    ops = DiskOps(slow_s, kill_before)
    start = time.monotonic()
    if kill_after_s is not None:
        threading.Timer(kill_after_s, os.kill, (os.getpid(), signal.SIGKILL)).start()
    gw.scan()
    assert gw.state.mode == modes.ALARM, "the rule did not raise the alarm"
    assert gw.journal.flush(10)
    time.sleep(5 * slow_s)                # whatever another thread still had to write
    if kill_after_s is not None:
        time.sleep(60)                    # the timer's kill comes first
    print("ops {} window {:.6f}".format(ops.count, ops.last_done - start), flush=True)
    services.stop("trial over")


def journal_alarm(journal: Path) -> bool:
    """Does the journal on disk hold the record of the switch to ALARM?"""
    for _number, path in list_segments(journal):
        for item in iter_frames(path.read_bytes()):
            if not isinstance(item, tuple):
                continue
            rec = cbor2.loads(cose.decode(item[1]).body)
            if rec.get(R.TYPE) == EV_MODE and rec.get(R.DATA, {}).get(R.EVENT_B) == modes.ALARM:
                return True
    return False


def restart(site: Path) -> None:
    services = build(str(site))
    print(modes.MODE_NAMES[services.gateway.state.mode], flush=True)
    services.stop("checked")


def in_child(work, *args) -> tuple[int, str]:
    """Run ``work(*args)`` in a forked child; its exit status and what it printed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.dup2(write_end, 1)
        sys.stdout = os.fdopen(1, "w")
        code = 0
        try:
            work(*args)
        except BaseException as e:  # reported to the parent as the child's status
            print("error {}: {}".format(type(e).__name__, e), file=sys.stderr, flush=True)
            code = 3
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        out = pipe.read()
    _pid, status = os.waitpid(pid, 0)
    return status, out


def trial(template: Path, d: Path, slow_s: float, kill_before: int, kill_after_s: float | None) -> tuple[bool, str]:
    site = fresh_trial(template, d)
    status, _out = in_child(victim, site, slow_s, kill_before, kill_after_s)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        raise SystemExit("{}: the victim was not killed (status {})".format(d, status))
    alarm = journal_alarm(d / "journal")
    status, out = in_child(restart, site)
    if status != 0:
        raise SystemExit("{}: the restart failed (status {})".format(d, status))
    return alarm, out.strip()


def dry_run(template: Path, d: Path, slow_s: float) -> tuple[int, float]:
    status, out = in_child(victim, fresh_trial(template, d), slow_s, 0, None)
    if status != 0 or not out.startswith("ops "):
        raise SystemExit("dry run failed (status {}): {}".format(status, out))
    _ops, count, _window, seconds = out.split()
    return int(count), float(seconds)


def main(argv: list[str]) -> None:
    root, how = Path(argv[0]), argv[1]
    optional = argv[4:] if how == "random" else argv[2:]
    slow_ms = float(optional[0]) if optional else 10.0
    slow_s = slow_ms / 1000
    template = root / "template"
    template.mkdir(parents=True)
    prepare_template(template)
    count, window = dry_run(template, root / "dry", slow_s)
    print("dry ops {} window {:.6f}".format(count, window), flush=True)
    if how == "points":
        plan = [(k, None, "before-op-{}".format(k)) for k in range(1, count + 1)]
    else:
        rng = random.Random(int(argv[3]))
        plan = []
        for _ in range(int(argv[2])):
            at = rng.uniform(0, window)
            plan.append((0, at, "at-{:.6f}s".format(at)))
    for k, (kill_before, after_s, where) in enumerate(plan):
        d = root / "t{}".format(k)
        alarm, mode = trial(template, d, slow_s, kill_before, after_s)
        print("trial {} kill {} journal_alarm {} restart {}".format(k, where, int(alarm), mode), flush=True)
        shutil.rmtree(d)


if __name__ == "__main__":
    main(sys.argv[1:])
