"""``cabguard keys gen``: a gateway's COSE_Key files (mode 0600).

``record.key`` (the provisioning record key: the gateway derives its
epoch keys from it, the head-end keeps it to verify), ``command.key`` (the
head-end signs downlink commands with it) and ``installer.key`` (the
installer's console and rule-table key).  Kids: docs/keys.md.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from controller.errors import CabguardError, UsageError
from controller.gateway.config import GATEWAY_ID
from drivers.cose import ALG_AES_MAC_128_128, ALG_BY_NAME, ALG_SM4_GCM, ALG_SM4_MAC_128_128
from drivers.keys import ROLES, generate, role_kid, write_key

# Command and installer keys always MAC; they follow the record key's cipher family.
_MAC_FOR = {ALG_SM4_MAC_128_128: ALG_SM4_MAC_128_128, ALG_SM4_GCM: ALG_SM4_MAC_128_128}


def generate_keys(gateway: str, out: Path, record_alg: int, force: bool = False) -> list[Path]:
    if not re.fullmatch(GATEWAY_ID, gateway):
        raise UsageError("--gateway {!r}: a gateway id is letters, digits, '.', '_' or '-', up to 64, "
                         "as [gateway] id in the site config (e.g. site4-cab2)".format(gateway[:80]))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CabguardError("cannot create {}: {}".format(out, e.strerror)) from None
    paths = [out / "{}.key".format(role) for role in ROLES]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CabguardError("{} already exist; a new key orphans every record made with the old one "
                            "(use --force to replace them)".format(", ".join(existing)))
    mac_alg = _MAC_FOR.get(record_alg, ALG_AES_MAC_128_128)
    for role, path in zip(ROLES, paths):
        try:
            write_key(path, generate(role_kid(gateway, role), record_alg if role == "record" else mac_alg))
        except OSError as e:
            raise CabguardError("cannot write {}: {}; give a folder you can write to".format(
                path, e.strerror)) from None
    return paths


def main(args: argparse.Namespace) -> int:
    for path in generate_keys(args.gateway, Path(args.out), ALG_BY_NAME[args.alg], args.force):
        print("wrote {} (mode 0600)".format(path))
    return 0
