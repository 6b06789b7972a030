"""Symmetric COSE_Key files (RFC 9052 §7, kty 4), mode 0600, and the
forward-secure record key epochs.

A key file is one CBOR map: ``{1: 4 (kty Symmetric), 2: kid, 3: alg,
-1: k}``.  The gateway refuses a key file that group or others can read,
because a readable record key lets anyone forge evidence.

Kids (docs/keys.md): ``<gateway>/record`` is the provisioning record key,
``<gateway>/record/<n>`` its epoch ``n``, ``<gateway>/command`` the
head-end's command key and ``<gateway>/installer`` the installer's key.

Epochs: ``E0 = HKDF(K_prov, info=INFO || 0)`` and
``En = HKDF(E(n-1), info=INFO || n)`` with HKDF-SHA256, no salt, 16 bytes,
``n`` as 4 bytes big-endian.  The chain runs one way: the gateway keeps
only the current epoch key, so a gateway stolen today holds nothing that
forges yesterday's records; a verifier with ``K_prov`` derives them all.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drivers.cose import ALG_AES_MAC_128_128, ALGS, encode, kid_text
from drivers.atomicfile import write_atomic
from drivers.errors import KeyFileError
from drivers.safefile import KIB, InputFileError, loads_cbor, read_bytes

KTY = 1
KID = 2
ALG = 3
K = -1
KTY_SYMMETRIC = 4
KEY_LIMIT = 4 * KIB    # a COSE_Key is about 60 bytes


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
    write_atomic(path, key.encode())


def decode_key(data: bytes, where: str) -> CoseKey:
    try:
        m = loads_cbor(data)
    except ValueError as e:
        raise KeyFileError("{}: not a COSE_Key ({})".format(where, e)) from None
    if not isinstance(m, dict) or m.get(KTY) != KTY_SYMMETRIC:
        raise KeyFileError("{}: not a symmetric COSE_Key (want kty 4)".format(where))
    kid, alg, k = m.get(KID), m.get(ALG), m.get(K)
    if not isinstance(kid, bytes) or not isinstance(alg, int) or not isinstance(k, bytes):
        raise KeyFileError("{}: COSE_Key needs kid (2, bytes), alg (3, int) and k (-1, bytes)".format(where))
    if alg in ALGS and len(k) != 16:
        raise KeyFileError("{}: key for alg {} must be 16 bytes, has {}".format(where, alg, len(k)))
    return CoseKey(kid, alg, k)


def load_key(path: str | Path, check_mode: bool = True) -> CoseKey:
    """Read a key file, refusing one that group or others can read."""
    path = Path(path)
    try:
        st = path.stat()
        data = read_bytes(path, "key file", KEY_LIMIT)
    except InputFileError as e:
        raise KeyFileError(str(e)) from None
    except FileNotFoundError:
        raise KeyFileError("key file {} does not exist (make one: cabguard keys gen)".format(path)) from None
    except OSError as e:
        raise KeyFileError("cannot read key file {}: {}".format(path, e.strerror)) from None
    key = decode_key(data, str(path))   # what the file is comes first: a wrong file is not a mode problem
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            "key file {} is readable by others (mode {:o}); fix it with: chmod 600 {}".format(
                path, stat.S_IMODE(st.st_mode), path))
    return key


EPOCH_INFO = b"cabguard record epoch "
ROLES = ("record", "command", "installer")


def role_kid(gateway: str, role: str) -> bytes:
    """The kid of a gateway's key for ``role`` (one of ROLES)."""
    return "{}/{}".format(gateway, role).encode()


def require_role(key: CoseKey, role: str, where: str, gateway: str | None = None) -> None:
    """Refuse a key whose kid is not ``<gateway>/<role>`` (docs/keys.md): another
    role's key or another gateway's would sign or seal what nobody can check."""
    parts = key.kid_text.split("/")
    if len(parts) != 2 or parts[1] != role:
        raise KeyFileError("{}: key '{}' is not an {} key (want kid '<gateway>/{}': the {}.key "
                           "`cabguard keys gen` writes)".format(where, key.kid_text, role, role, role))
    if gateway is not None and parts[0] != gateway:
        raise KeyFileError("{}: key '{}' belongs to gateway {}, not {} (use this gateway's keys, or "
                           "`cabguard keys gen --gateway {}`)".format(where, key.kid_text, parts[0], gateway, gateway))


def require_epoch(key: CoseKey, where: str, gateway: str) -> None:
    """Refuse a key that is not an epoch key of ``gateway``'s record key."""
    parsed = parse_epoch_kid(key.kid)
    if parsed is None or parsed[0] != role_kid(gateway, "record"):
        raise KeyFileError("{}: key '{}' is not a record epoch key of gateway {} (want kid '{}/record/<n>': "
                           "`cabguard provision epoch-key` writes epoch 0)".format(where, key.kid_text, gateway, gateway))


def epoch_kid(provisioning_kid: bytes, n: int) -> bytes:
    return provisioning_kid + b"/" + str(n).encode()


# An epoch number has at most this many digits (a rotation a second for 30
# years is 10 digits less one); anything longer is not an epoch kid.
EPOCH_DIGITS = 9
# A verifier derives keys at most this many epochs past the newest epoch it has
# seen a record verify under: a forged kid cannot make it derive without end
# (1,024 derivations take about 9 ms; a rotation a day is 2.8 years of them).
MAX_EPOCH_AHEAD = 1024


def parse_epoch_kid(kid: bytes) -> tuple[bytes, int] | None:
    """``(provisioning kid, n)`` for an epoch kid, None for any other kid."""
    base, _, n = kid.rpartition(b"/")
    if not base or not n.isdigit() or len(n) > EPOCH_DIGITS or not base.endswith(b"/record"):
        return None
    return base, int(n)


def epoch_number(kid: bytes) -> int:
    """The epoch an epoch kid names, -1 for any other kid."""
    parsed = parse_epoch_kid(kid)
    return parsed[1] if parsed else -1


def _hkdf(ikm: bytes, n: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=None,
                info=EPOCH_INFO + n.to_bytes(4, "big")).derive(ikm)


def first_epoch(provisioning: CoseKey) -> CoseKey:
    """Epoch 0 of a provisioning record key."""
    return CoseKey(epoch_kid(provisioning.kid, 0), provisioning.alg, _hkdf(provisioning.k, 0))


def next_epoch(current: CoseKey) -> CoseKey:
    """The following epoch's key; the caller forgets ``current``."""
    parsed = parse_epoch_kid(current.kid)
    if parsed is None:
        raise KeyFileError("key {} is not an epoch key (want kid <gateway>/record/<n>)".format(
            current.kid_text))
    base, n = parsed
    return CoseKey(epoch_kid(base, n + 1), current.alg, _hkdf(current.k, n + 1))


class EpochKeys:
    """A verifier's view: every epoch key of one provisioning key, derived
    on demand (and cached), looked up by kid."""

    def __init__(self, provisioning: CoseKey):
        self.provisioning = provisioning
        self._epochs = [first_epoch(provisioning)]
        self.confirmed = 0      # the newest epoch a record has verified under

    def epoch(self, n: int) -> CoseKey:
        while len(self._epochs) <= n:
            self._epochs.append(next_epoch(self._epochs[-1]))
        return self._epochs[n]

    def key_for(self, kid: bytes) -> CoseKey | None:
        """The key for ``kid``, or None when this provisioning key has no such epoch."""
        parsed = parse_epoch_kid(kid)
        if parsed is None or parsed[0] != self.provisioning.kid or parsed[1] > self.confirmed + MAX_EPOCH_AHEAD:
            return None
        return self.epoch(parsed[1])

    def confirm(self, kid: bytes) -> None:
        """A record under ``kid`` verified: its epoch is real, derive ahead of it."""
        self.confirmed = max(self.confirmed, epoch_number(kid))
