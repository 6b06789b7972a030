"""Symmetric COSE_Key files (RFC 9052 §7, kty 4), mode 0600.

A key file is one CBOR map: ``{1: 4 (kty Symmetric), 2: kid, 3: alg,
-1: k}``.  The gateway refuses a key file that group or others can read,
because a readable record key lets anyone forge evidence.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import cbor2

from drivers.cose import ALG_AES_MAC_128_128, MAC_ALGS, encode, kid_text
from drivers.errors import KeyFileError

KTY = 1
KID = 2
ALG = 3
K = -1
KTY_SYMMETRIC = 4


class CoseKey:
    def __init__(self, kid: bytes, alg: int, k: bytes):
        self.kid = kid
        self.alg = alg
        self.k = k

    @property
    def kid_text(self) -> str:
        return kid_text(self.kid)

    def encode(self) -> bytes:
        return encode({KTY: KTY_SYMMETRIC, KID: self.kid, ALG: self.alg, K: self.k})


def generate(kid: str | bytes, alg: int = ALG_AES_MAC_128_128) -> CoseKey:
    kid_b = kid.encode() if isinstance(kid, str) else kid
    return CoseKey(kid_b, alg, secrets.token_bytes(16))


def write_key(path: str | Path, key: CoseKey) -> None:
    """Write atomically with mode 0600 (never briefly world-readable)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def decode_key(data: bytes, where: str) -> CoseKey:
    try:
        m = cbor2.loads(data)
    except Exception as e:
        raise KeyFileError("{}: not a COSE_Key (CBOR did not decode: {})".format(where, e)) from None
    if not isinstance(m, dict) or m.get(KTY) != KTY_SYMMETRIC:
        raise KeyFileError("{}: not a symmetric COSE_Key (want kty 4)".format(where))
    kid, alg, k = m.get(KID), m.get(ALG), m.get(K)
    if not isinstance(kid, bytes) or not isinstance(alg, int) or not isinstance(k, bytes):
        raise KeyFileError("{}: COSE_Key needs kid (2, bytes), alg (3, int) and k (-1, bytes)".format(where))
    if alg in MAC_ALGS and len(k) != 16:
        raise KeyFileError("{}: key for alg {} must be 16 bytes, has {}".format(where, alg, len(k)))
    return CoseKey(kid, alg, k)


def load_key(path: str | Path, check_mode: bool = True) -> CoseKey:
    """Read a key file, refusing one that group or others can read."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError("key file {} does not exist (make one: cabguard keys gen)".format(path)) from None
    except OSError as e:
        raise KeyFileError("cannot read key file {}: {}".format(path, e.strerror)) from None
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            "key file {} is readable by others (mode {:o}); fix it with: chmod 600 {}".format(
                path, stat.S_IMODE(st.st_mode), path))
    return decode_key(data, str(path))
