"""The files a site config names, checked as ``cabguard run`` will use them.

``file_problems`` checks the keys (COSE keys of this gateway, each of its
role), the rule table (or, when installing, the rule sources compiled for
this site: the schedules a pack needs included) and the anomaly model.
``Sources`` says where the files are read from: the config's own paths on
the gateway, or the installer's files on the flashing machine (flash.sh),
where nothing is installed yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.core.catalog import Catalog
from controller.gateway.config import SiteConfig
from controller.gateway.schema import Problem
from controller.gateway.tables import load_table
from controller.journal.segments import list_segments
from drivers.errors import DriverError
from drivers.keys import CoseKey, load_key, require_role
from rules.errors import ModelFileError, RuleError
from rules.modelfile import read_model

# Key files: config key -> (role, the name `cabguard keys gen` gives the file).
KEY_FILES = (("keys.record", "record", "record.key"), ("keys.headend", "command", "command.key"),
             ("rules.key", "installer", "installer.key"))
# The current record epoch key, in [gateway] state_dir (docs/keys.md): flash.sh installs
# epoch 0 there, and the root record key ([keys] record) never reaches the gateway.
EPOCH_KEY_FILE = "record-epoch.key"


def epoch_key_path(doc: dict) -> Path:
    return Path(doc["gateway"]["state_dir"]) / EPOCH_KEY_FILE


@dataclass(frozen=True)
class Sources:
    """Where the checked files come from.  ``installing``: from the installer's
    files (``keys_dir``, ``model``, ``rules``); keys without ``keys_dir`` are
    yet to be generated for this gateway and are not checked."""
    installing: bool = False
    keys_dir: str = ""
    model: str = ""
    rules: tuple[str, ...] = ()


def _value(doc: dict, dotted: str) -> str:
    section, key = dotted.split(".")
    return (doc.get(section) or {}).get(key, "")


def _key_path(doc: dict, dotted: str, file_name: str, sources: Sources) -> str:
    if sources.installing:
        return str(Path(sources.keys_dir) / file_name) if sources.keys_dir else ""
    return _value(doc, dotted)


def _keys(config: SiteConfig, sources: Sources, problems: list[Problem]) -> CoseKey | None:
    """Check each key file; returns the installer key, if it loaded."""
    doc, installer = config.doc, None
    for dotted, role, file_name in KEY_FILES:
        path = _key_path(doc, dotted, file_name, sources)
        if not _value(doc, dotted) or not path:
            continue
        journal = Path(doc["journal"]["dir"])
        if dotted == "keys.record" and not sources.installing and not Path(path).exists() \
                and (epoch_key_path(doc).exists() or journal.is_dir() and list_segments(journal)):
            continue    # kept off the gateway (docs/keys.md): the journal has its epoch key
        try:
            key = load_key(path)
            require_role(key, role, path, config.gateway_id)
        except DriverError as e:
            problems.append(Problem(dotted, str(e)))
            continue
        if role == "installer":
            installer = key
    return installer


def _rules(config: SiteConfig, catalog: Catalog | None, classes: dict[str, str], installer: CoseKey | None,
           sources: Sources, problems: list[Problem]) -> None:
    if catalog is None:
        return      # the site itself has problems: rules cannot be checked against it yet
    if sources.installing:
        # Here, not at the top: the gateway imports this module, and loads its table
        # through rules/payload.py, never the compiler (docs/architecture.md).
        from rules.compiler import SiteCatalog, compile_files
        from rules.language import default_sources
        try:
            compile_files(default_sources(list(sources.rules)), SiteCatalog(catalog.specs(), classes, catalog.digest()))
        except RuleError as e:
            problems.append(Problem("rules", "the rules to install do not compile for this site: {}".format(e)))
        return
    if config.doc.get("rules") and installer is not None:
        try:
            load_table(config.doc["rules"]["table"], installer, catalog)
        except RuleError as e:
            problems.append(Problem("rules.table", str(e)))


def _model(config: SiteConfig, sources: Sources, problems: list[Problem]) -> None:
    path = sources.model if sources.installing else _value(config.doc, "model.path")
    if not path:
        return
    try:
        read_model(path)
    except ModelFileError as e:
        problems.append(Problem("model.path", str(e)))


def file_problems(config: SiteConfig, catalog: Catalog | None, classes: dict[str, str],
                  sources: Sources) -> list[Problem]:
    """Every problem of the files; ``catalog`` is None when the site could not be assembled."""
    problems: list[Problem] = []
    installer = _keys(config, sources, problems)
    _rules(config, catalog, classes, installer, sources, problems)
    _model(config, sources, problems)
    return problems
