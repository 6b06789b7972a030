"""The docs are executable: every fenced example in README.md and docs/*.md is checked or run.

Every fenced block carries a language tag; the tag says what the test does with it:

- ``toml``: a config, checked by the validator of its kind (site config,
  rule file, scenario, simulator config, profile, head-end config).  A site config fragment
  (``[model]``, ``[console]`` ...) is checked inside examples/site.toml.  A
  block whose first line is ``# NAME.toml`` is also written as NAME.toml
  for the shell examples after it in the same doc.
- ``sh``: commands, run in a scratch folder (the repo's folders linked in).
  With ``$ `` prompts the prompted lines are the commands and the rest is
  their output; a command ending in `` &`` runs in the background until the
  block ends.  Every command must exit 0.
- ``usage``: synopsis lines; every ``--option`` of a ``cabguard SUB``
  line must be in that subcommand's ``--help``.
- anything else (``text``, ``json``, ``python``, ``cddl``): shown, not run.

A block after an ``<!-- not run: REASON -->`` line is skipped, visibly in
the doc, for what cannot run here (real serial ports, ssh targets).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.cli.rulescmd import site_catalog
from controller.gateway.config import parse as parse_site
from controller.headend.config import parse as parse_headend
from controller.gateway.site import assemble
from drivers.modbus.profiles import load_profile
from rules.compiler import compile_files
from simulator.benchsite import toml_value
from simulator.config import load_config
from simulator.scenariofile import load as load_scenario
from tests.scheduling import FLASH_GROUP

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
EXAMPLE_SITE = REPO / "examples" / "site.toml"
BIN = Path(sys.executable).parent
PROFILES = REPO / "drivers" / "profiles"
SHIPPED_MODEL = REPO / "rules" / "models" / "port.json"
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")
SHOWN_ONLY = {"text", "json", "python", "cddl"}


@dataclass
class Block:
    doc: Path
    line: int
    tag: str
    body: str
    not_run: str

    @property
    def where(self) -> str:
        return "{}:{}".format(self.doc.relative_to(REPO), self.line)


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").split("\n")
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            start, tag, body = i, lines[i][3:].strip(), []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            before = lines[start - 1] if start else ""
            marker = NOT_RUN.search(before) or (NOT_RUN.search(lines[start - 2]) if start > 1 and not before else None)
            found.append(Block(doc, start + 1, tag, "\n".join(body) + "\n", marker.group(1) if marker else ""))
        i += 1
    return found


ALL = [b for doc in DOCS for b in blocks(doc)]


def test_every_block_says_what_it_is():
    untagged = [b.where for b in ALL if not b.tag]
    assert not untagged, "tag these blocks (toml, sh, usage, text ...): " + ", ".join(untagged)
    unknown = [b.where for b in ALL if b.tag not in SHOWN_ONLY | {"toml", "sh", "usage"}]
    assert not unknown, "unknown block tags: " + ", ".join(unknown)


def test_config_md_complete_example_is_examples_site_toml():
    complete = [b for b in blocks(REPO / "docs" / "config.md") if b.tag == "toml"][0]
    assert complete.body == EXAMPLE_SITE.read_text(encoding="utf-8")


def local_site(text: str) -> str:
    """A site config with its documented file keys pointed at what this checkout ships."""
    return text.replace('"/etc/cabguard/port.json"', '"{}"'.format(SHIPPED_MODEL))


def test_examples_site_toml_checks_clean_with_its_profiles_and_schedules():
    config = parse_site(local_site(EXAMPLE_SITE.read_text(encoding="utf-8")), str(EXAMPLE_SITE))
    site = assemble(config)     # raises ConfigError listing every problem
    assert set(site.device_classes) == {"io", "bms1", "bms2", "relay"}
    assert {"maintenance", "shift_change"} <= set(site.schedules.names())   # the theft pack needs both


# -- toml ---------------------------------------------------------------------------------------

def _check_site_fragment(block: Block, doc: dict) -> None:
    """A fragment's tables replace the example's; its arrays of tables (a ``[[device]]``) add to them."""
    full = tomllib.loads(local_site(EXAMPLE_SITE.read_text(encoding="utf-8")))
    for name, value in tomllib.loads(local_site(block.body)).items():
        adds = isinstance(value, list) and value and isinstance(value[0], dict) and name in full
        full[name] = full[name] + value if adds else value
    assemble(parse_site(_toml(full), block.where))


def _toml(doc: dict) -> str:
    return "\n".join(_toml_table(name, value) for name, value in doc.items())


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _toml_table(name: str, value) -> str:
    """A TOML rendering good enough for site configs (tables, arrays of tables, scalars, lists)."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "\n".join("[[{}]]\n{}".format(name, _toml_keys(item)) for item in value)
    subs = {k: v for k, v in value.items() if isinstance(v, dict)}
    plain = {k: v for k, v in value.items() if not isinstance(v, dict)}
    out = "[{}]\n{}".format(name, _toml_keys(plain))
    return out + "\n".join(_toml_table("{}.{}".format(name, k), v) for k, v in subs.items())


def _toml_keys(table: dict) -> str:
    return "".join("{} = {}\n".format(k, toml_value(v)) for k, v in table.items())


def _check_toml(block: Block, tmp_path: Path) -> None:
    doc = tomllib.loads(block.body)
    path = tmp_path / "example.toml"
    path.write_text(block.body, encoding="utf-8")
    if "gateway" in doc:
        assemble(parse_site(local_site(block.body), block.where))
    elif "rule" in doc:
        _catalog, site = site_catalog(None, str(EXAMPLE_SITE))
        compile_files([str(path)], site)
    elif "scenario" in doc:
        load_scenario(path)
    elif "profile" in doc or "signals" in doc:
        # an excerpt of a shipped profile: it must load in place of the shipped file's tables
        name = doc.get("profile", {}).get("name") or _profile_with(doc["signals"])
        shipped = tomllib.loads((PROFILES / (name + ".toml")).read_text(encoding="utf-8"))
        path.write_text(_toml(_merged(shipped, doc)), encoding="utf-8")
        load_profile(str(path))
    elif "bus" in doc:
        load_config(path)
    elif "sink" in doc or "headend" in doc:
        parse_headend(doc, block.where)
    else:
        _check_site_fragment(block, doc)


def _profile_with(signals: dict) -> str:
    """The shipped profile that has all these signals."""
    for path in sorted(PROFILES.glob("*.toml")):
        if set(signals) <= set(tomllib.loads(path.read_text(encoding="utf-8")).get("signals", {})):
            return path.stem
    raise AssertionError("no shipped profile has signals {}".format(", ".join(signals)))


TOML = [b for b in ALL if b.tag == "toml" and not b.not_run]


@pytest.mark.parametrize("block", TOML, ids=[b.where for b in TOML])
def test_toml_example_is_valid(block, tmp_path):
    _check_toml(block, tmp_path)


# -- usage --------------------------------------------------------------------------------------

def _help(words: tuple[str, ...]) -> str:
    done = subprocess.run([str(BIN / "cabguard"), *words, "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _usage_lines(block: Block):
    for line in block.body.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "cabguard":
            sub = tuple(w for w in words[1:3] if re.fullmatch(r"[a-z]+", w))
            yield line, sub, re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line.split("  ")[0] if "   " in line else line)


USAGE = [b for b in ALL if b.tag == "usage" and not b.not_run]


@pytest.mark.parametrize("block", USAGE, ids=[b.where for b in USAGE])
def test_usage_example_matches_help(block):
    for line, sub, options in _usage_lines(block):
        # the longest prefix of words that is a subcommand with its own --help
        words = sub if len(sub) < 2 or subprocess.run(
            [str(BIN / "cabguard"), *sub, "--help"], capture_output=True).returncode == 0 else sub[:1]
        text = _help(words)
        missing = [o for o in options if o not in text]
        assert not missing, "{}: {!r}: not in `cabguard {} --help`: {}".format(
            block.where, line.strip(), " ".join(words), " ".join(missing))


# -- sh -----------------------------------------------------------------------------------------

def _commands(body: str) -> list[str]:
    lines = body.rstrip("\n").split("\n")
    prompted = any(line.startswith("$ ") for line in lines)
    commands, current = [], ""
    for line in lines:
        if not current:
            if prompted and not line.startswith("$ "):
                continue
            line = line[2:] if prompted else line
        current += line
        if current.endswith("\\"):
            current = current[:-1]
            continue
        if current.strip() and not current.strip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def _scratch(tmp_path: Path, doc: Path) -> Path:
    """A folder with the repo's folders linked in and the doc's named TOML examples written out."""
    for name in ("rules", "simulator", "drivers", "examples", "controller", "flash.sh"):
        (tmp_path / name).symlink_to(REPO / name)
    for b in blocks(doc):
        first = b.body.split("\n", 1)[0]
        named = re.fullmatch(r"# ([\w.-]+\.toml)", first)
        if b.tag == "toml" and named:
            (tmp_path / named.group(1)).write_text(b.body, encoding="utf-8")
    return tmp_path


SH = [b for b in ALL if b.tag == "sh" and not b.not_run]


def _scheduled(block: Block):
    """A block that flashes runs in the flash group (tests/scheduling.py); it and the demo's night are long."""
    commands = _commands(block.body)
    if any(c.startswith("./flash.sh") for c in commands):
        return pytest.param(block, marks=[pytest.mark.xdist_group(FLASH_GROUP), pytest.mark.long])
    if any(c.startswith("cabguard demo") for c in commands):
        return pytest.param(block, marks=pytest.mark.long)
    return block


@pytest.mark.parametrize("block", [_scheduled(b) for b in SH], ids=[b.where for b in SH])
def test_shell_example_runs(block, tmp_path):
    cwd = _scratch(tmp_path, block.doc)
    # No PYTHONPATH: the checkout's .venv has cabguard installed, and a flashed venv must run its own wheels.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = "{}:{}".format(BIN, os.environ["PATH"])
    background = []
    try:
        for command in _commands(block.body):
            if command.endswith("&"):
                proc = subprocess.Popen(["bash", "-c", "exec " + command[:-1]], cwd=cwd, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                first = proc.stdout.readline()     # it is up once it has said so (stdout or stderr)
                assert first, "{}: {!r} said nothing".format(block.where, command)
                background.append(proc)
                continue
            done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, "{}: {!r} exited {}:\n{}{}".format(
                block.where, command, done.returncode, done.stdout, done.stderr)
    finally:
        for proc in background:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def test_not_run_blocks_are_few_and_say_why():
    skipped = [b for b in ALL if b.not_run]
    assert all(len(b.not_run) > 10 for b in skipped)
    assert len(skipped) <= 12, [b.where for b in skipped]


def test_the_sh_runner_reads_prompts_continuations_and_plain_lines():
    assert _commands("$ a \\\n  b\nout\n$ c &\n") == ["a   b", "c &"]
    assert _commands("make x    # why\n# note\n") == ["make x    # why"]
    assert shlex.split(_commands("$ cabguard sim --link cab &\n")[0])[-1] == "&"


@pytest.mark.parametrize("words, option", [(("verify",), "--checkpoint"), (("replay",), "--trace-out"),
                                           (("console",), "--timeout")])
def test_readme_command_list_names_the_options_help_names(words, option):
    listed = [line for line in blocks(REPO / "README.md")[1].body.splitlines()
              if line.startswith("cabguard " + " ".join(words) + " ") and option in line]
    assert listed and option in _help(words)


def test_bench_help_lists_its_areas():
    from controller.devtools.bench import AREAS
    assert all(area in _help(("bench",)) for area in AREAS)
