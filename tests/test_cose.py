import os

import cbor2
import pytest
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

from drivers.cose import (ALG_A128GCM, ALG_AES_MAC_128_128, ALG_SM4_GCM, ALG_SM4_MAC_128_128, HDR_SEQ, Encoder,
                          Sealer, cbc_mac, encode, mac0_create, mac0_decode, mac0_verify, open_message,
                          protected_header)
from drivers.errors import CoseError, KeyFileError
from drivers.keys import generate, load_key, write_key


def test_aes_mac_interoperates_with_pycose():
    key = generate("gw-test")
    data = mac0_create(b"payload", ALG_AES_MAC_128_128, key.kid, key.k)
    msg = Mac0Message.decode(data)
    msg.key = SymmetricKey(k=key.k)
    assert msg.verify_tag()


@pytest.mark.parametrize("alg", [ALG_AES_MAC_128_128, ALG_SM4_MAC_128_128])
def test_tampering_is_a_mac_mismatch_naming_the_kid(alg):
    key = generate("gw-7")
    data = bytearray(mac0_create(b"door forced", alg, key.kid, key.k))
    assert mac0_verify(bytes(data), lambda kid, a: key.k) == b"door forced"
    data[-20] ^= 1
    with pytest.raises(CoseError, match="MAC mismatch for kid gw-7"):
        mac0_verify(bytes(data), lambda kid, a: key.k)


def test_garbage_is_refused_clearly():
    with pytest.raises(CoseError, match="not a tagged COSE_Mac0"):
        mac0_decode(b"\x01")


def test_key_files_are_0600_and_open_ones_refused(tmp_path):
    path = tmp_path / "record.key"
    write_key(path, generate("gw-1"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_key(path).kid == b"gw-1"
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others.*chmod 600"):
        load_key(path)


def test_a_file_that_is_no_key_is_blamed_on_its_content_before_its_mode(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text("[gateway]\n")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="site.toml: not a"):
        load_key(path)


def test_a_key_of_another_role_or_gateway_is_refused_by_name(tmp_path):
    from drivers.keys import require_role
    require_role(generate("gw-1/installer"), "installer", "k", "gw-1")
    with pytest.raises(KeyFileError, match="key 'gw-1/record' is not an installer key"):
        require_role(generate("gw-1/record"), "installer", "k")
    with pytest.raises(KeyFileError, match="key 'gw-2/record' belongs to gateway gw-2, not gw-1"):
        require_role(generate("gw-2/record"), "record", "k", "gw-1")


@pytest.mark.parametrize("alg, kid, seq", [
    (ALG_AES_MAC_128_128, b"gw-7/record/0", None), (ALG_SM4_MAC_128_128, b"k" * 30, 0),
    (ALG_A128GCM, b"x", 23), (ALG_SM4_GCM, b"y" * 300, 2**32 + 5), (ALG_AES_MAC_128_128, b"", 65536)])
def test_hand_written_structures_equal_deterministic_cbor(alg, kid, seq):
    header = {1: alg, 4: kid}
    if seq is not None:
        header[HDR_SEQ] = seq
    assert protected_header(alg, kid, seq) == encode(header)
    protected, payload = encode(header), b"p" * 70000
    key = bytes(range(16))
    message, tag = Sealer(alg, kid, key).seal(payload, seq, b"aad")
    if alg in (ALG_AES_MAC_128_128, ALG_SM4_MAC_128_128):
        assert message == encode(cbor2.CBORTag(17, [protected, {}, payload, tag]))
        assert cbc_mac(alg, key, encode(["MAC0", protected, b"aad", payload])) == tag
    else:
        iv = cbor2.loads(message).value[1][5]
        assert message == encode(cbor2.CBORTag(16, [protected, {5: iv}, cbor2.loads(message).value[2]]))
        assert open_message(message, lambda k, a: key, b"aad") == payload


def test_fast_reader_agrees_with_the_full_decoder():
    from drivers import cose

    key = bytes(16)
    # the last seq carries the seq label's own bytes (3a 00 01 00 00): the split after its last copy is no
    # known prefix, and the full read takes it
    for seq in (0, 23, 24, 255, 65536, 2**40, 0x003A000100000005):
        message, tag = Sealer(ALG_AES_MAC_128_128, b"gw/record/3", key).seal(b"x" * seq.bit_length(), seq)
        fast = cose._fast_mac0(message)
        assert fast is not None and (fast.seq, fast.kid, fast.alg, fast.tag) == (seq, b"gw/record/3", 25, tag)
        full = cbor2.loads(message).value
        assert (fast.protected, fast.body) == (full[0], full[2])
    odd = encode(cbor2.CBORTag(17, [encode({1: 25, 4: b"k"}), {}, b"p", bytes(16)]))
    assert cose._fast_mac0(odd) is None and cose.decode(odd).kid == b"k"    # the full decoder takes over
    assert cose._fast_mac0(message[:-1]) is None


def test_fast_reader_hands_over_the_mac_structure_and_leaves_odd_lengths_to_the_full_decoder():
    """The fast reader's MAC structure is the message's own bytes: equal to the one built
    from its parts, for every width of seq, first read in full and then by its known
    prefix; a length not in its shortest form goes to the full decoder, as before."""
    from drivers import cose

    key = bytes(range(16))
    sealer = Sealer(ALG_AES_MAC_128_128, b"gw/record/3", key)
    for seq in (5, 24, 300, 70000, 2**33):
        for _ in range(2):
            message, _tag = sealer.seal(b"payload %d" % seq, seq)
            msg = cose._fast_mac0(message)
            assert msg.tbm == cose._mac_structure(msg.protected, b"", msg.body) and msg.seq == seq
            assert msg.verify(key) == b"payload %d" % seq
            with pytest.raises(CoseError, match="MAC mismatch"):
                msg.verify(bytes(16))
    # seq 5 written in five bytes under a known prefix: read in full, the same seq
    protected = b"\xa3\x01\x18\x19\x04" + cose._bstr(b"gw/record/3") + cose._SEQ_LABEL + b"\x1a\x00\x00\x00\x05"
    tag = cbc_mac(ALG_AES_MAC_128_128, key, cose._mac_structure(protected, b"", b"p"))
    message = b"\xd1\x84" + cose._bstr(protected) + b"\xa0" + cose._bstr(b"p") + cose._bstr(tag)
    assert cose._fast_mac0(message).seq == 5 and cose.decode(message).verify(key) == b"p"
    # the payload's length in two bytes where one would do: the full decoder, and the same verdict
    long_form = b"\xd1\x84" + cose._bstr(protected) + b"\xa0\x59\x00\x01p" + cose._bstr(tag)
    assert cose._fast_mac0(long_form) is None and cose.decode(long_form).verify(key) == b"p"


def test_the_long_lived_encoder_gives_the_deterministic_bytes_call_after_call():
    """The journal's writer encodes every record with one Encoder: the bytes must be
    encode()'s (the on-disk format) whatever came before, and for what only the
    canonical rules put in order: map keys of every width and type, floats."""
    objs = [
        {3: 1796227096080, 4: 1, 5: 21302101, 7: 3, 8: 0, 9: 49, 10: list(range(40)), 12: {1: 49, 2: 0, 3: 1},
         1: 500, 2: 0, 6: "bench-gw", 11: bytes(16)},
        {12: {"zone": 1, "a": [1.5, -0.0, 1e300], 24: None, -1: True, 1000: b"x"}, 1: 2**70, 2: -2**70},
        {"b": 1, "a": {"d": [], "c": {}}, 10: [None, False, "é", 65536]},
        [1.0, 0.1, {b"k": 1, b"": 2}],
        "text",
        {1: 1},
    ]
    enc = Encoder()
    for _ in range(2):
        for obj in objs:
            assert enc.encode(obj) == encode(obj)
    assert enc.encode({1: 1}) == b"\xa1\x01\x01"     # nothing left over from a longer one before


@pytest.mark.parametrize("alg", [ALG_AES_MAC_128_128, ALG_SM4_MAC_128_128])
def test_the_long_lived_cbc_mac_is_cbc_mac_with_a_zero_iv_message_after_message(alg):
    """CbcMac keeps one cipher context and resets its chain with two blocks in front of
    each message: every tag must be the last block of a fresh zero-IV CBC encryption of
    the zero-padded message, whatever length the messages before had."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from drivers.cose import CbcMac

    key = os.urandom(16)
    cipher = algorithms.AES(key) if alg == ALG_AES_MAC_128_128 else algorithms.SM4(key)
    mac = CbcMac(alg, key)
    for n in (0, 1, 15, 16, 17, 31, 32, 100, 1000, 16, 0, 33):
        data = os.urandom(n)
        padded = data + bytes(-n % 16) if n else bytes(16)
        assert mac.tag(data) == Cipher(cipher, modes.CBC(bytes(16))).encryptor().update(padded)[-16:]
