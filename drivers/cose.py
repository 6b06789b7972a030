"""COSE_Mac0 (RFC 9052 §6.2) with CBC-MAC over AES or SM4 (RFC 9053 §3.2).

The MAC is computed over the deterministic CBOR encoding of the
MAC_structure ``["MAC0", protected, external_aad, payload]``: the bytes are
zero-padded to a whole number of 16-byte blocks and run through the block
cipher in CBC mode with an all-zero IV; the tag is the last block (128-bit
tag).  SM4 uses the same construction under a private-use algorithm id.
Tags are compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Callable

import cbor2
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drivers.errors import CoseError

# COSE algorithm ids (IANA "COSE Algorithms"; private-use ids are < -65536).
ALG_A128GCM = 1
ALG_AES_MAC_128_128 = 25
ALG_SM4_MAC_128_128 = -65537
ALG_SM4_GCM = -65538
MAC_ALGS = {ALG_AES_MAC_128_128: "AES-MAC 128/128", ALG_SM4_MAC_128_128: "SM4-MAC 128/128"}

HDR_ALG = 1
HDR_KID = 4
TAG_MAC0 = 17
_ZERO_IV = bytes(16)


def encode(obj: object) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2): shortest forms, sorted map keys."""
    return cbor2.dumps(obj, canonical=True)


def cbc_mac(alg: int, key: bytes, data: bytes) -> bytes:
    """The 128-bit CBC-MAC of ``data`` under ``key`` with AES or SM4."""
    if alg == ALG_AES_MAC_128_128:
        cipher = algorithms.AES(key)
    elif alg == ALG_SM4_MAC_128_128:
        cipher = algorithms.SM4(key)
    else:
        raise CoseError("algorithm {} is not a MAC this gateway knows ({})".format(
            alg, ", ".join("{} = {}".format(k, v) for k, v in MAC_ALGS.items())))
    if len(key) != 16:
        raise CoseError("a {} key must be 16 bytes, this one has {}".format(MAC_ALGS[alg], len(key)))
    pad = (-len(data)) % 16
    enc = Cipher(cipher, modes.CBC(_ZERO_IV)).encryptor()
    out = enc.update(data + bytes(pad)) + enc.finalize()
    return out[-16:]


def _mac_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    return encode(["MAC0", protected, external_aad, payload])


def mac0_create(payload: bytes, alg: int, kid: bytes, key: bytes, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Mac0 with ``alg`` and ``kid`` in the protected header."""
    protected = encode({HDR_ALG: alg, HDR_KID: kid})
    tag = cbc_mac(alg, key, _mac_structure(protected, external_aad, payload))
    return encode(cbor2.CBORTag(TAG_MAC0, [protected, {}, payload, tag]))


class Mac0:
    """A decoded (not yet verified) COSE_Mac0."""

    def __init__(self, protected: bytes, payload: bytes, tag: bytes, alg: int, kid: bytes):
        self.protected = protected
        self.payload = payload
        self.tag = tag
        self.alg = alg
        self.kid = kid

    def verify(self, key: bytes, external_aad: bytes = b"") -> bytes:
        """The payload if the tag is right; CoseError naming the kid if not."""
        want = cbc_mac(self.alg, key, _mac_structure(self.protected, external_aad, self.payload))
        if not hmac.compare_digest(want, self.tag):
            raise CoseError("MAC mismatch for kid {}".format(kid_text(self.kid)))
        return self.payload


def kid_text(kid: bytes) -> str:
    try:
        text = kid.decode("ascii")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return kid.hex()


def mac0_decode(data: bytes) -> Mac0:
    """Parse a tagged COSE_Mac0; CoseError says what is malformed."""
    try:
        obj = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for bad input
        raise CoseError("not CBOR: {}".format(e)) from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != TAG_MAC0:
        raise CoseError("not a tagged COSE_Mac0 (CBOR tag 17)")
    body = obj.value
    if not isinstance(body, list) or len(body) != 4:
        raise CoseError("COSE_Mac0 must be an array of 4 items")
    protected, _unprotected, payload, tag = body
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(tag, bytes):
        raise CoseError("COSE_Mac0 protected header, payload and tag must be byte strings")
    try:
        header = cbor2.loads(protected)
    except Exception as e:
        raise CoseError("protected header is not CBOR: {}".format(e)) from None
    if not isinstance(header, dict) or not isinstance(header.get(HDR_ALG), int) \
            or not isinstance(header.get(HDR_KID), bytes):
        raise CoseError("protected header must carry alg (1) and kid (4)")
    return Mac0(protected, payload, tag, header[HDR_ALG], header[HDR_KID])


def mac0_verify(data: bytes, key_for: Callable[[bytes, int], bytes], external_aad: bytes = b"") -> bytes:
    """Decode and verify; ``key_for(kid, alg)`` returns the key bytes."""
    msg = mac0_decode(data)
    return msg.verify(key_for(msg.kid, msg.alg), external_aad)
