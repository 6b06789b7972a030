import os

import pytest
from pycose.keys import SymmetricKey
from pycose.messages import Mac0Message

from drivers.cose import ALG_AES_MAC_128_128, ALG_SM4_MAC_128_128, mac0_create, mac0_decode, mac0_verify
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
