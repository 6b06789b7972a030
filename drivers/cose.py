"""COSE_Mac0 and COSE_Encrypt0 (RFC 9052) for cabguard's records.

COSE_Mac0 uses CBC-MAC over AES or SM4 (RFC 9053 §3.2): the deterministic
CBOR encoding of the MAC_structure ``["MAC0", protected, external_aad,
payload]`` is zero-padded to a whole number of 16-byte blocks and run
through the block cipher in CBC mode with an all-zero IV; the tag is the
last block (128-bit tag).  SM4 uses the same construction under a
private-use algorithm id.

COSE_Encrypt0 uses AES-GCM (A128GCM, alg 1) or SM4-GCM (private-use id):
the 12-byte IV goes in the unprotected header (label 5), the additional
data is the Enc_structure ``["Encrypt0", protected, external_aad]`` and
the ciphertext carries the 16-byte GCM tag at its end (RFC 9053 §4.1).
SM4-GCM is cryptography's SM4 block cipher in its GCM mode (the
construction of RFC 8998), checked against RFC 8998's test vector.

Both message kinds may carry the record's sequence number in the
protected header under a private-use label, so that a journal reader can
order records without opening them.  Tags are compared in constant time.

cryptography is imported where a key is first used (``CbcMac``, ``Gcm``):
a process that only decodes (the uplink's, reading sequence numbers) never
loads it (docs/architecture.md, "The import rule").
"""

from __future__ import annotations

import hmac
import io
import os
from typing import Callable

import cbor2

from drivers.errors import CoseError
from drivers.safefile import loads_cbor

# COSE algorithm ids (IANA "COSE Algorithms"; private-use ids are < -65536).
ALG_A128GCM = 1
ALG_AES_MAC_128_128 = 25
ALG_SM4_MAC_128_128 = -65537
ALG_SM4_GCM = -65538
MAC_ALGS = {ALG_AES_MAC_128_128: "AES-MAC 128/128", ALG_SM4_MAC_128_128: "SM4-MAC 128/128"}
AEAD_ALGS = {ALG_A128GCM: "A128GCM", ALG_SM4_GCM: "SM4-GCM"}
ALGS = {**MAC_ALGS, **AEAD_ALGS}
# Names for the command line (`keys gen --alg`).
ALG_BY_NAME = {"aes-mac": ALG_AES_MAC_128_128, "sm4-mac": ALG_SM4_MAC_128_128,
               "a128gcm": ALG_A128GCM, "sm4-gcm": ALG_SM4_GCM}

HDR_ALG = 1
HDR_KID = 4
HDR_IV = 5
HDR_SEQ = -65537   # private-use header label: the record's sequence number
TAG_ENCRYPT0 = 16
TAG_MAC0 = 17
TAG_LEN = 16
IV_LEN = 12
_ZERO_IV = bytes(16)
_ZEROS = [bytes(n) for n in range(16)]    # the zero padding of a last block of 16 - n bytes


def encode(obj: object) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2): shortest forms, sorted map keys."""
    return cbor2.dumps(obj, canonical=True)


class Encoder:
    """``encode`` with one long-lived CBOR encoder: making an encoder (as ``cbor2.dumps``
    does for each call) costs about half of what encoding a record does.  Not
    thread-safe: one per thread."""

    def __init__(self) -> None:
        self._fp = io.BytesIO()
        self._encoder = cbor2.CBOREncoder(self._fp, canonical=True)

    def encode(self, obj: object) -> bytes:
        """The same bytes as ``encode(obj)``."""
        fp = self._fp
        fp.seek(0)
        fp.truncate()
        self._encoder.encode(obj)
        return fp.getvalue()


def _check_key(alg: int, key: bytes) -> None:
    if alg not in ALGS:
        raise CoseError("algorithm {} is not one this gateway knows ({})".format(
            alg, ", ".join("{} = {}".format(k, v) for k, v in ALGS.items())))
    if len(key) != 16:
        raise CoseError("a {} key must be 16 bytes, this one has {}".format(ALGS[alg], len(key)))


class CbcMac:
    """CBC-MAC with one long-lived CBC context per key (not thread-safe).

    Creating a cipher context costs more than MACing a record, so the
    context is kept.  After a message the chaining value is that message's
    tag T; two blocks put in front of the next message bring it back to zero,
    which makes the rest exactly CBC-MAC with a zero IV: T itself (E(T xor T)
    = E(0), a constant of the key) and E(0) xor D(0) (E(E(0) xor E(0) xor
    D(0)) = E(D(0)) = 0).  That is two more blocks for the cipher instead of
    an XOR into the message's first block in Python.
    """

    def __init__(self, alg: int, key: bytes):
        if alg not in MAC_ALGS:
            raise CoseError("algorithm {} is not a MAC this gateway knows ({})".format(
                alg, ", ".join("{} = {}".format(k, v) for k, v in MAC_ALGS.items())))
        _check_key(alg, key)
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        cipher = algorithms.AES(key) if alg == ALG_AES_MAC_128_128 else algorithms.SM4(key)
        e0 = Cipher(cipher, modes.ECB()).encryptor().update(_ZERO_IV)
        d0 = Cipher(cipher, modes.ECB()).decryptor().update(_ZERO_IV)
        self._reset = (int.from_bytes(e0, "big") ^ int.from_bytes(d0, "big")).to_bytes(16, "big")
        self._enc = Cipher(cipher, modes.CBC(_ZERO_IV)).encryptor()
        self._chain = _ZERO_IV      # the context's chaining value: E(0 xor 0) = E(0) holds from the start too

    def tag(self, data: bytes) -> bytes:
        n = len(data)
        if n < 16:          # one block, zero-padded (an empty message too)
            data, n = data + bytes(16 - n), 16
        tag = self._enc.update(self._chain + self._reset + data + _ZEROS[-n % 16])[-16:]
        self._chain = tag
        return tag


def cbc_mac(alg: int, key: bytes, data: bytes) -> bytes:
    """The 128-bit CBC-MAC of ``data`` under ``key`` with AES or SM4."""
    return CbcMac(alg, key).tag(data)


class Gcm:
    """AES-GCM or SM4-GCM with a 12-byte IV and a 16-byte tag."""

    def __init__(self, alg: int, key: bytes):
        if alg not in AEAD_ALGS:
            raise CoseError("algorithm {} is not an AEAD this gateway knows ({})".format(
                alg, ", ".join("{} = {}".format(k, v) for k, v in AEAD_ALGS.items())))
        _check_key(alg, key)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._alg = alg
        self._key = key
        self._aes = AESGCM(key) if alg == ALG_A128GCM else None

    def seal(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if self._aes is not None:
            return self._aes.encrypt(iv, plaintext, aad)
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(iv)).encryptor()
        enc.authenticate_additional_data(aad)
        return enc.update(plaintext) + enc.finalize() + enc.tag

    def open(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext; InvalidTag if the tag is wrong."""
        if self._aes is not None:
            return self._aes.decrypt(iv, ciphertext, aad)
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        if len(ciphertext) < TAG_LEN:
            raise InvalidTag()
        dec = Cipher(algorithms.SM4(self._key), modes.GCM(iv, ciphertext[-TAG_LEN:])).decryptor()
        dec.authenticate_additional_data(aad)
        return dec.update(ciphertext[:-TAG_LEN]) + dec.finalize()


# The fixed structures below are written out by hand: they are the same
# bytes as encode() gives (tests/test_cose.py checks), at a fraction of the
# cost per record.

_HEADS = [[bytes((major << 5 | n,)) for n in range(24)] for major in range(8)]   # the one-byte heads


def _head(major: int, n: int) -> bytes:
    """A CBOR head in its shortest form."""
    if n < 24:
        return _HEADS[major][n]
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25, n >> 8, n & 0xFF))
    for size, extra in ((4, 26), (8, 27)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + n.to_bytes(size, "big")
    raise CoseError("integer {} does not fit in CBOR's 64 bits".format(n))


def _int(n: int) -> bytes:
    return _head(0, n) if n >= 0 else _head(1, -1 - n)


def _bstr(b: bytes) -> bytes:
    n = len(b)
    if n < 24:
        return _HEADS[2][n] + b
    if n < 0x100:
        return bytes((0x58, n)) + b
    return _head(2, n) + b


def _mac_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """``["MAC0", protected, external_aad, payload]``."""
    return b"\x84\x64MAC0" + _bstr(protected) + _bstr(external_aad) + _bstr(payload)


def _enc_structure(protected: bytes, external_aad: bytes) -> bytes:
    """``["Encrypt0", protected, external_aad]``."""
    return b"\x83\x68Encrypt0" + _bstr(protected) + _bstr(external_aad)


def _seq_header_prefix(alg: int, kid: bytes) -> bytes:
    """``{1: alg, 4: kid, -65537:`` of a protected header with a seq, which ends it."""
    return b"\xa3\x01" + _int(alg) + b"\x04" + _bstr(kid) + _int(HDR_SEQ)


def protected_header(alg: int, kid: bytes, seq: int | None = None) -> bytes:
    """``{1: alg, 4: kid}`` plus ``-65537: seq``, keys in deterministic order."""
    if seq is None:
        return b"\xa2\x01" + _int(alg) + b"\x04" + _bstr(kid)
    return _seq_header_prefix(alg, kid) + _int(seq)


class Sealer:
    """Wraps payloads under one key: COSE_Mac0 for MAC algorithms,
    COSE_Encrypt0 for AEAD ones.  ``seal`` returns ``(message, tag)``.
    Keeps cipher state: one Sealer per thread."""

    def __init__(self, alg: int, kid: bytes, key: bytes):
        self.alg = alg
        self.kid = kid
        self._mac = CbcMac(alg, key) if alg in MAC_ALGS else None
        self._gcm = Gcm(alg, key) if alg in AEAD_ALGS else None
        if self._mac is None and self._gcm is None:
            _check_key(alg, key)
        self._seq_prefix = _seq_header_prefix(alg, kid)    # the same for every record: encoded once

    def seal(self, payload: bytes, seq: int | None = None, external_aad: bytes = b"") -> tuple[bytes, bytes]:
        protected = protected_header(self.alg, self.kid) if seq is None else self._seq_prefix + _int(seq)
        head = _bstr(protected)
        if self._mac is not None:
            # ["MAC0", protected, external_aad, payload] and 17([protected, {}, payload, tag])
            # share the protected and payload byte strings, heads included.
            body = _bstr(payload)
            tag = self._mac.tag(b"\x84\x64MAC0" + head + _bstr(external_aad) + body)
            return b"\xd1\x84" + head + b"\xa0" + body + b"\x50" + tag, tag
        assert self._gcm is not None
        iv = os.urandom(IV_LEN)
        ct = self._gcm.seal(iv, payload, _enc_structure(protected, external_aad))
        # 16([protected, {5: iv}, ciphertext])
        return b"\xd0\x83" + head + b"\xa1\x05" + _bstr(iv) + _bstr(ct), ct[-TAG_LEN:]


def mac0_create(payload: bytes, alg: int, kid: bytes, key: bytes, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Mac0 with ``alg`` and ``kid`` in the protected header."""
    if alg not in MAC_ALGS:
        CbcMac(alg, key)  # raises the clear error
    return Sealer(alg, kid, key).seal(payload, external_aad=external_aad)[0]


def encrypt0_create(payload: bytes, alg: int, kid: bytes, key: bytes, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Encrypt0 (A128GCM or SM4-GCM) with a fresh random IV."""
    if alg not in AEAD_ALGS:
        Gcm(alg, key)  # raises the clear error
    return Sealer(alg, kid, key).seal(payload, external_aad=external_aad)[0]


def kid_text(kid: bytes) -> str:
    try:
        text = kid.decode("ascii")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return kid.hex()


class Message:
    """A decoded (not yet verified) COSE_Mac0 or COSE_Encrypt0.

    ``tag`` is the MAC tag, or the GCM tag at the end of the ciphertext;
    ``seq`` is the private-use sequence header, or None.
    """

    __slots__ = ("cose_tag", "protected", "alg", "kid", "seq", "body", "tag", "iv", "tbm")

    def __init__(self, cose_tag: int, protected: bytes, alg: int, kid: bytes, seq: int | None,
                 body: bytes, tag: bytes, iv: bytes = b"", tbm: bytes = b""):
        self.cose_tag = cose_tag
        self.protected = protected
        self.alg = alg
        self.kid = kid
        self.seq = seq
        self.body = body          # payload (Mac0) or ciphertext with tag (Encrypt0)
        self.tag = tag
        self.iv = iv
        self.tbm = tbm            # the MAC structure with no external AAD, when the decoder has it at hand

    @property
    def encrypted(self) -> bool:
        return self.cose_tag == TAG_ENCRYPT0

    def _mismatch(self) -> CoseError:
        return CoseError("MAC mismatch for kid {}".format(kid_text(self.kid)))

    def verify(self, key: bytes, external_aad: bytes = b"", mac: CbcMac | None = None) -> bytes:
        """The payload if the tag is right; CoseError naming the kid if not.

        ``mac`` may be a long-lived CbcMac for this key (faster)."""
        if self.cose_tag == TAG_ENCRYPT0:
            from cryptography.exceptions import InvalidTag
            try:
                return Gcm(self.alg, key).open(self.iv, self.body, _enc_structure(self.protected, external_aad))
            except InvalidTag:
                raise self._mismatch() from None
        if self.alg not in MAC_ALGS:
            raise CoseError("COSE_Mac0 with kid {} names algorithm {}, which is not a MAC".format(
                kid_text(self.kid), self.alg))
        tbm = self.tbm if self.tbm and not external_aad else _mac_structure(self.protected, external_aad, self.body)
        want = (mac or CbcMac(self.alg, key)).tag(tbm)
        if not hmac.compare_digest(want, self.tag):
            raise self._mismatch()
        return self.body


def _read_head(data: bytes, pos: int) -> tuple[int, int, int]:
    """``(major type, value, next position)`` of the CBOR head at ``pos``."""
    ib = data[pos]
    ai = ib & 31
    if ai < 24:
        return ib >> 5, ai, pos + 1
    size = {24: 1, 25: 2, 26: 4, 27: 8}[ai]   # KeyError: indefinite or reserved
    end = pos + 1 + size
    if end > len(data):
        raise IndexError("short head")
    return ib >> 5, int.from_bytes(data[pos + 1:end], "big"), end


def _read_bstr(data: bytes, pos: int) -> tuple[bytes, int]:
    major, n, pos = _read_head(data, pos)
    if major != 2 or pos + n > len(data):
        raise ValueError("not a byte string")
    return data[pos:pos + n], pos + n


def _read_int(data: bytes, pos: int) -> tuple[int, int]:
    major, n, pos = _read_head(data, pos)
    if major > 1:
        raise ValueError("not an integer")
    return (n if major == 0 else -1 - n), pos


_SEQ_LABEL = _int(HDR_SEQ)
# Protected headers without their seq, ``{1: alg, 4: kid, -65537:`` as bytes, parsed
# once: the records of one epoch differ only in the seq that ends theirs.
_PREFIXES: dict[bytes, tuple[int, bytes]] = {}
_PREFIXES_MAX = 64
_UINT_SIZE = {0x18: 2, 0x19: 3, 0x1A: 5, 0x1B: 9}     # a uint's head byte -> its length


def _protected_prefix(protected: bytes) -> tuple[int, bytes, int] | None:
    """``(alg, kid, seq)`` of a protected header ``{1: alg, 4: kid, -65537: seq}``
    whose part before the seq was parsed before; None for anything else.

    The split is taken after the last ``-65537`` label.  Only a known prefix is
    taken, and a known prefix is a whole ``{1, 4, -65537:`` parse, which fixes its
    own length: a split elsewhere (the label's bytes inside a long seq) is not
    known, and goes to the full reader."""
    split = protected.rfind(_SEQ_LABEL) + len(_SEQ_LABEL)
    known = _PREFIXES.get(protected[:split])
    size = len(protected) - split
    if known is None or not size:
        return None
    head = protected[split]
    if size == 1:
        return (known[0], known[1], head) if head < 24 else None
    if _UINT_SIZE.get(head) != size:
        return None
    seq = int.from_bytes(protected[split + 1:], "big")
    if seq < (24 if size == 2 else 1 << (4 * size - 4)):
        return None     # not the shortest form: the full reader decides
    return known[0], known[1], seq


def _read_protected(protected: bytes) -> tuple[int, bytes, int] | None:
    """``(alg, kid, seq)`` of our protected header layout, read in full; None for any other."""
    try:
        if protected[:2] != b"\xa3\x01":
            return None
        alg, hp = _read_int(protected, 2)
        if protected[hp] != 0x04:
            return None
        kid, hp = _read_bstr(protected, hp + 1)
        if protected[hp:hp + len(_SEQ_LABEL)] != _SEQ_LABEL:
            return None
        hp += len(_SEQ_LABEL)
        major, seq, end = _read_head(protected, hp)
        if major != 0 or end != len(protected):
            return None
    except (IndexError, KeyError, ValueError):
        return None
    if len(_PREFIXES) >= _PREFIXES_MAX:
        _PREFIXES.clear()
    _PREFIXES[protected[:hp]] = (alg, kid)
    return alg, kid, seq


def _bstr_at(data: bytes, pos: int) -> tuple[int, int]:
    """``(start, end)`` of the byte string whose head is at ``pos``, its length in
    the shortest form (else ValueError: the full decoder takes it)."""
    b = data[pos]
    if 0x40 <= b < 0x58:
        start, n = pos + 1, b - 0x40
    elif b == 0x58 and data[pos + 1] >= 24:
        start, n = pos + 2, data[pos + 1]
    elif b == 0x59 and data[pos + 1]:
        start, n = pos + 3, data[pos + 1] << 8 | data[pos + 2]
    else:
        raise ValueError("not a short byte string in its shortest form")
    return start, start + n


def _fast_mac0(data: bytes) -> Message | None:
    """The common case, our own layout ``17([protected {1,4,-65537}, {}, payload, tag])``
    with every length in its shortest form, read without building CBOR objects; None
    sends anything else to the full decoder.  The MAC structure is then the message's
    own bytes: ``["MAC0", protected, h'', payload]`` shares the protected and payload
    byte strings, heads included, with the message."""
    try:
        if data[:2] != b"\xd1\x84":
            return None
        if data[2] == 0x58 and data[3] >= 24:       # our protected headers: 24 to 255 bytes
            p0, p1 = 4, 4 + data[3]
        else:
            p0, p1 = _bstr_at(data, 2)
        if data[p1] != 0xA0:
            return None
        b0, b1 = _bstr_at(data, p1 + 1)
        if data[b1] != 0x50 or b1 + 17 != len(data):
            return None
    except (IndexError, ValueError):
        return None
    protected = data[p0:p1]
    header = _protected_prefix(protected) or _read_protected(protected)
    if header is None:
        return None
    return Message(TAG_MAC0, protected, header[0], header[1], header[2], data[b0:b1], data[b1 + 1:],
                   tbm=b"\x84\x64MAC0" + data[2:p1] + b"\x40" + data[p1 + 1:b1])


def decode(data: bytes) -> Message:
    """Parse a tagged COSE_Mac0 or COSE_Encrypt0; CoseError says what is malformed."""
    fast = _fast_mac0(data)
    if fast is not None:
        return fast
    try:
        obj = loads_cbor(data)
    except ValueError as e:
        raise CoseError("not CBOR: {}".format(e)) from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag not in (TAG_MAC0, TAG_ENCRYPT0):
        raise CoseError("not a tagged COSE_Mac0 (CBOR tag 17) or COSE_Encrypt0 (tag 16)")
    body = obj.value
    size = 4 if obj.tag == TAG_MAC0 else 3
    name = "COSE_Mac0" if obj.tag == TAG_MAC0 else "COSE_Encrypt0"
    if not isinstance(body, list) or len(body) != size:
        raise CoseError("{} must be an array of {} items".format(name, size))
    protected, unprotected, content = body[0], body[1], body[2]
    if not isinstance(protected, bytes) or not isinstance(content, bytes) or not isinstance(unprotected, dict):
        raise CoseError("{} protected header and content must be byte strings, "
                        "the unprotected header a map".format(name))
    try:
        header = loads_cbor(protected)
    except ValueError as e:
        raise CoseError("protected header is not CBOR: {}".format(e)) from None
    if not isinstance(header, dict) or not isinstance(header.get(HDR_ALG), int) \
            or not isinstance(header.get(HDR_KID), bytes):
        raise CoseError("protected header must carry alg (1) and kid (4)")
    alg, kid, seq = header[HDR_ALG], header[HDR_KID], header.get(HDR_SEQ)
    seq = seq if isinstance(seq, int) else None
    if obj.tag == TAG_MAC0:
        if not isinstance(body[3], bytes):
            raise CoseError("COSE_Mac0 tag must be a byte string")
        return Message(TAG_MAC0, protected, alg, kid, seq, content, body[3])
    iv = unprotected.get(HDR_IV)
    if not isinstance(iv, bytes) or len(iv) != IV_LEN or len(content) < TAG_LEN:
        raise CoseError("COSE_Encrypt0 needs a 12-byte IV (unprotected label 5) and a 16-byte tag")
    return Message(TAG_ENCRYPT0, protected, alg, kid, seq, content, content[-TAG_LEN:], iv)


def mac0_decode(data: bytes) -> Message:
    msg = decode(data)
    if msg.encrypted:
        raise CoseError("not a tagged COSE_Mac0 (CBOR tag 17): this is a COSE_Encrypt0")
    return msg


def mac0_verify(data: bytes, key_for: Callable[[bytes, int], bytes], external_aad: bytes = b"") -> bytes:
    """Decode and verify; ``key_for(kid, alg)`` returns the key bytes."""
    msg = mac0_decode(data)
    return msg.verify(key_for(msg.kid, msg.alg), external_aad)


def open_message(data: bytes, key_for: Callable[[bytes, int], bytes], external_aad: bytes = b"") -> bytes:
    """Decode and verify (or decrypt) either kind of message."""
    msg = decode(data)
    return msg.verify(key_for(msg.kid, msg.alg), external_aad)
