"""The chunked AEAD container: round trips at chunk boundaries, and every kind of tampering refused."""

from __future__ import annotations

import io
import os
import random
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot import crypto
from chatbot.crypto import DecryptError, EncryptingWriter, decrypt_bytes, encrypt_bytes
from chatbot.errors import ChatbotError

KEY = "crypto-test-key-" + "z" * 16  # invented
CS = 64  # tiny chunks: many chunks from little data


def _enc(data: bytes, **kw) -> bytes:
    return encrypt_bytes(data, KEY, chunk_size=kw.pop("chunk_size", CS), log2n=10, **kw)


@pytest.mark.parametrize("n", [0, 1, CS - 1, CS, CS + 1, 2 * CS, 2 * CS + 1, 10 * CS - 3])
def test_round_trip_at_chunk_boundaries(n):
    data = os.urandom(n)
    blob = _enc(data)
    assert decrypt_bytes(blob, KEY) == data
    # size = header + one tag per chunk; the last chunk holds 0..CS-1 bytes
    assert len(blob) == crypto.HEADER_BYTES + n + crypto.TAG_BYTES * (n // CS + 1)
    assert len(data) < 16 or data not in blob  # (a 1-byte plaintext may occur in random bytes by chance)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=700), st.lists(st.integers(0, 150), max_size=12), st.sampled_from([16, 17, 64, 100]))
def test_any_write_split_gives_the_same_plaintext(data, cuts, chunk_size):
    sink = io.BytesIO()
    w = EncryptingWriter(sink, KEY, chunk_size=chunk_size, log2n=10)
    pos = 0
    for c in cuts:
        w.write(data[pos:pos + c])
        pos += c
    w.write(memoryview(data)[pos:])
    w.close()
    assert decrypt_bytes(sink.getvalue(), KEY) == data


def test_every_single_bit_flip_and_every_truncation_is_refused():
    blob = _enc(os.urandom(3 * 32 + 5), chunk_size=32)  # 4 chunks, ~240 bytes: every position is tried
    for pos in range(len(blob)):
        b = bytearray(blob)
        b[pos] ^= 1 << (pos % 8)
        with pytest.raises(DecryptError):
            decrypt_bytes(bytes(b), KEY)
    for cut in range(len(blob)):
        with pytest.raises(DecryptError):
            decrypt_bytes(blob[:cut], KEY)


def test_reordered_appended_and_wrong_key_are_refused_with_one_line():
    blob = _enc(os.urandom(4 * CS + 10))
    header, body = blob[: crypto.HEADER_BYTES], blob[crypto.HEADER_BYTES:]
    size = CS + crypto.TAG_BYTES
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    other = _enc(os.urandom(4 * CS + 10))  # same key, another file: chunks must not transplant
    variants = {
        "swap": header + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "drop-last-full": header + b"".join(chunks[:3]) + chunks[4],
        "append-byte": blob + b"x",
        "append-copy": blob + chunks[0],
        "transplant-chunk": header + other[crypto.HEADER_BYTES:crypto.HEADER_BYTES + size] + b"".join(chunks[1:]),
        "transplant-header": other[: crypto.HEADER_BYTES] + body,
    }
    for name, v in variants.items():
        with pytest.raises(DecryptError) as err:
            decrypt_bytes(v, KEY)
        assert "\n" not in str(err.value), name
    with pytest.raises(DecryptError, match="wrong CHATBOT_MODEL_KEY") as err:
        decrypt_bytes(blob, "another-key-that-is-long-enough")
    assert KEY not in str(err.value)


def test_header_parameters_are_bounded_before_any_work():
    blob = bytearray(_enc(b"hello"))
    blob[11] = 40  # log2(N) = 40 would need terabytes: refused without running scrypt
    with pytest.raises(DecryptError, match="invalid header parameters"):
        decrypt_bytes(bytes(blob), KEY)
    blob = bytearray(_enc(b"hello"))
    blob[8] = 99
    with pytest.raises(DecryptError, match="unsupported"):
        decrypt_bytes(bytes(blob), KEY)
    with pytest.raises(DecryptError, match="not an encrypted"):
        decrypt_bytes(b"PK\x03\x04" + bytes(100), KEY)
    with pytest.raises(ChatbotError):
        decrypt_bytes(_enc(b"x"), "")


def test_two_encryptions_differ_and_nonce_layout():
    a, b = _enc(b"same"), _enc(b"same")
    assert a != b  # fresh salt and nonce prefix per file
    fields = struct.unpack(">8sBBBBBB16s7sI", a[:41])
    assert fields[0] == crypto.MAGIC and fields[1] == crypto.VERSION and fields[-1] == CS and fields[4] == 10
    assert crypto._nonce(b"p" * 7, 1, True) != crypto._nonce(b"p" * 7, 1, False)


def test_torch_save_streams_through_writer_and_loads_from_memory(tmp_path):
    obj = {"w": torch.randn(300, 7), "name": "x", "n": 3}
    path = tmp_path / "m.enc"
    with EncryptingWriter(path, KEY, chunk_size=1024, log2n=10) as w:
        torch.save(obj, w)
    assert crypto.is_encrypted(path) and b"PK\x03\x04" not in path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m.enc"]
    back = torch.load(crypto.open_decrypted(path, KEY), weights_only=True)
    assert torch.equal(back["w"], obj["w"]) and back["name"] == "x"
    assert bytes(crypto.decrypt_to_bytes(path, KEY)).startswith(b"PK\x03\x04")


def test_aborted_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "m.enc"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with EncryptingWriter(path, KEY, chunk_size=64, log2n=10) as w:
            w.write(os.urandom(1000))
            raise RuntimeError("interrupted")
    w2 = EncryptingWriter(path, KEY, chunk_size=64, log2n=10)
    w2.write(b"abc")
    w2.abort()
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.enc"]
    with pytest.raises(ValueError):
        w2.write(b"more")


def test_memory_reader_is_a_seekable_file():
    r = crypto.MemoryReader(bytearray(b"0123456789"))
    assert r.read(3) == b"012" and r.tell() == 3
    r.seek(-2, io.SEEK_END)
    assert r.read() == b"89" and r.read(5) == b""
    r.seek(1)
    buf = bytearray(4)
    assert r.readinto(buf) == 4 and buf == b"1234"


def test_random_fuzz_of_a_larger_blob():
    rng = random.Random(1234)
    blob = _enc(os.urandom(3000), chunk_size=256)
    for _ in range(200):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= rng.randint(1, 255)
        if bytes(b) == blob:  # two flips cancelled out
            continue
        with pytest.raises(DecryptError):
            decrypt_bytes(bytes(b), KEY)


@pytest.mark.parametrize("padded_to", [200 << 20, 64 << 30])
def test_a_padded_or_sparse_huge_file_is_refused_in_constant_memory(tmp_path, padded_to):
    """The file length is not trusted before it is authenticated: no allocation by it (a sparse 64 GiB file)."""
    import tracemalloc

    path = tmp_path / "m.enc"
    path.write_bytes(_enc(os.urandom(5 * CS + 7)))
    step = CS + crypto.TAG_BYTES  # a length whose chunk layout is plausible, so only authentication can tell
    padded_to = crypto.HEADER_BYTES + (padded_to // step) * step + crypto.TAG_BYTES + 9
    with open(path, "r+b") as fh:
        fh.truncate(padded_to)  # sparse: takes no disk space
    tracemalloc.start()
    try:
        with pytest.raises(DecryptError, match="tampered") as err:
            crypto.decrypt_to_bytes(path, KEY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value)
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB allocated"
    # the same file cut back to its real length opens again
    with open(path, "r+b") as fh:
        fh.truncate(crypto.HEADER_BYTES + 5 * CS + 7 + 6 * crypto.TAG_BYTES)
    assert len(crypto.decrypt_to_bytes(path, KEY)) == 5 * CS + 7


# written by the release before the last-chunk-first reader (same format, version 1): must still open
FORMAT1_FILE = bytes.fromhex(
    "43484154454e43000101010a08014e90416e98789cc6c5e71590827c022d0698bf2dbc023100000010f7128450f7b20f87e4"
    "fc529c7d90af9368e3781ff43a38be9c87c65e3ce9fcd949ff271ac1b6deeb55117387f5721b9f2bf3eec880f0bc4c4f59a6"
    "85e0c255a11078912ce5e4fed2717a8557aa08121645aa27d3669a4e351e101f10b1d0"
)


def test_files_written_by_the_previous_release_still_open():
    assert decrypt_bytes(FORMAT1_FILE, KEY) == b"written by format 1 (issue 11)"
