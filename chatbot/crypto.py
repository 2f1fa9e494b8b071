"""Streaming authenticated encryption of model artifacts (``artifacts/model_latest.enc``).

``cryptography`` offers one-shot AEADs (AESGCM, ChaCha20Poly1305, ...) but no streaming construction, and
one-shot sealing of a multi-GB model would need the whole plaintext and ciphertext in memory at once. So this
module implements the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015; the same idea as Tink's
streaming AEAD and age): the plaintext is cut into fixed-size chunks, each sealed with AES-256-GCM under a nonce
built from a per-file random prefix, the chunk counter and a "last chunk" flag. That detects every kind of
tampering with one check per chunk: a modified byte fails that chunk's tag, swapped or dropped chunks fail the
counter, truncation or appended bytes fail because the file must end in a short chunk sealed with the last flag
(the chunk boundaries follow from the file length, so any change of length misaligns a tag or the flag).

File layout (all integers big-endian)::

    header   magic "CHATENC\\0" | version u8 | aead u8 | kdf u8 | log2(N) u8 | r u8 | p u8
             | salt 16 B | nonce prefix 7 B | chunk size u32 | HMAC-SHA256(mac key, all previous header bytes) 32 B
    chunks   AES-256-GCM(enc key, nonce = prefix | counter u32 | last u8, chunk, associated data = header) ...

Keys: scrypt(CHATBOT_MODEL_KEY, salt, N, r, p) → 64 bytes = encryption key | header MAC key. The header MAC makes
a wrong key fail fast with a clear message (and commits the file to the key); the whole header is also the
associated data of every chunk. Every chunk but the last holds exactly ``chunk size`` plaintext bytes; the last
holds 0 .. chunk size - 1, so the chunk count and the plaintext length follow from the file size alone.

Memory: encrypting holds one chunk; decrypting first authenticates the last chunk (so the length that the
file's size implies is proven before anything is allocated by it: a padded or sparse multi-GiB file is refused
using one chunk of memory), then fills one buffer of the exact plaintext size (``decrypt_into`` writes straight
into it), which :func:`open_decrypted` exposes as a seekable reader that ``torch.load`` reads from without another
copy. Nothing here ever writes plaintext to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import ChatbotError
from .fsio import atomic_open

MAGIC = b"CHATENC\x00"
VERSION = 1
AEAD_AES256GCM = 1
KDF_SCRYPT = 1

_FIELDS = struct.Struct(">8sBBBBBB16s7sI")
MAC_BYTES = 32
HEADER_BYTES = _FIELDS.size + MAC_BYTES
TAG_BYTES = 16
SALT_BYTES, PREFIX_BYTES = 16, 7

# Defaults for new files (tests monkeypatch these to keep the KDF and the chunks small).
DEFAULT_CHUNK_SIZE = 1 << 20  # 1 MiB: large enough that per-chunk Python overhead vanishes, small for memory
DEFAULT_LOG2N, DEFAULT_R, DEFAULT_P = 17, 8, 1  # scrypt: 128 MiB, ~0.5 s — the OWASP minimum for scrypt

# Bounds accepted when reading (a corrupted header must not make us allocate gigabytes or spin for minutes).
_LOG2N_RANGE, _R_RANGE, _P_RANGE = (10, 20), (1, 32), (1, 16)
_MAX_SCRYPT_MEM = 1 << 30
_CHUNK_RANGE = (16, 1 << 26)
_MAX_COUNTER = 2**32 - 1


class DecryptError(ChatbotError):
    """An encrypted artifact could not be opened: wrong key, or the file is corrupted / tampered with."""


_WRONG = "wrong CHATBOT_MODEL_KEY, or the file header is corrupted or tampered with"
_TAMPERED = ("file is corrupted or tampered with ({}); publish it again with "
             "`python -m chatbot.ops publish --encrypt`")


def _derive(key: str, salt: bytes, log2n: int, r: int, p: int) -> tuple[bytes, bytes]:
    raw = Scrypt(salt=salt, length=64, n=1 << log2n, r=r, p=p).derive(key.encode("utf-8", "surrogatepass"))
    return raw[:32], raw[32:]


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ChatbotError("an encryption key is required (CHATBOT_MODEL_KEY in .env)")


# -------------------------------------------------------------------------------------------------- encryption
class EncryptingWriter:
    """A write-only file object that encrypts chunk by chunk into ``path`` (atomically: temp file + rename).

    ``torch.save(obj, writer)`` works (torch only needs ``write`` and ``flush``). Call :meth:`close` to finish
    (seal the last chunk, fsync, rename over ``path``) or :meth:`abort` to drop everything; as a context manager an
    exception aborts. Only ciphertext ever reaches the disk, and only in the destination folder.
    """

    def __init__(self, path: str | os.PathLike | BinaryIO, key: str, *, chunk_size: int | None = None,
                 log2n: int | None = None, r: int | None = None, p: int | None = None):
        _check_key(key)
        self.chunk_size = int(chunk_size or DEFAULT_CHUNK_SIZE)
        log2n, r, p = log2n or DEFAULT_LOG2N, r or DEFAULT_R, p or DEFAULT_P
        if not _CHUNK_RANGE[0] <= self.chunk_size <= _CHUNK_RANGE[1]:
            raise ValueError(f"chunk_size must be within {_CHUNK_RANGE}")
        salt, self._prefix = os.urandom(SALT_BYTES), os.urandom(PREFIX_BYTES)
        enc_key, mac_key = _derive(key, salt, log2n, r, p)
        fields = _FIELDS.pack(MAGIC, VERSION, AEAD_AES256GCM, KDF_SCRYPT, log2n, r, p, salt, self._prefix,
                              self.chunk_size)
        self._header = fields + hmac.new(mac_key, fields, hashlib.sha256).digest()
        self._aead = AESGCM(enc_key)
        self._buf = bytearray(self.chunk_size)  # pending plaintext (at most one chunk)
        self._fill = 0
        self._out = bytearray(self.chunk_size + TAG_BYTES)
        self._counter = 0
        self.bytes_in = 0
        self._stack = contextlib.ExitStack()
        if hasattr(path, "write"):  # an open binary sink (in-memory helpers); the caller owns it
            self._fh = path
        else:
            self._fh = self._stack.enter_context(atomic_open(path, "wb"))
        self._closed = False
        try:
            self._fh.write(self._header)
        except BaseException as exc:
            self._abort(exc)
            raise

    # file-object protocol -------------------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self) -> None:
        """No-op by design: a partial chunk stays in memory until it is full (or sealed as the last one)."""

    def write(self, data) -> int:
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        mv = memoryview(data).cast("B")
        n, pos, cs = len(mv), 0, self.chunk_size
        try:
            while pos < n:
                if self._fill == cs:  # a full pending chunk is sealed only once more data proves it is not last
                    self._seal(memoryview(self._buf), last=False)
                    self._fill = 0
                if self._fill == 0 and n - pos > cs:  # whole chunks straight from the caller's buffer, no copy
                    self._seal(mv[pos:pos + cs], last=False)
                    pos += cs
                    continue
                take = min(cs - self._fill, n - pos)
                self._buf[self._fill:self._fill + take] = mv[pos:pos + take]
                self._fill += take
                pos += take
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            mv.release()
        self.bytes_in += n
        return n

    def _seal(self, chunk, last: bool) -> None:
        if self._counter > _MAX_COUNTER:
            raise ChatbotError("artifact too large for the encrypted format (increase the chunk size)")
        n = len(chunk)
        out = memoryview(self._out)[: n + TAG_BYTES]
        self._aead.encrypt_into(_nonce(self._prefix, self._counter, last), chunk, self._header, out)
        self._fh.write(out)
        self._counter += 1

    def close(self) -> None:
        """Seal the last chunk and atomically move the file into place."""
        if self._closed:
            return
        try:
            if self._fill == self.chunk_size:  # a full pending chunk followed by an empty last chunk
                self._seal(memoryview(self._buf), last=False)
                self._fill = 0
            self._seal(memoryview(self._buf)[: self._fill], last=True)
        except BaseException as exc:
            self._abort(exc)
            raise
        self._closed = True
        self._wipe()
        self._stack.close()  # atomic_open: flush, fsync, rename, fsync folder

    def abort(self) -> None:
        """Discard: remove the temp file, leave any existing ``path`` untouched."""
        self._abort(RuntimeError("aborted"))

    def _abort(self, exc: BaseException) -> None:
        if self._closed:
            return
        self._closed = True
        self._wipe()
        self._stack.__exit__(type(exc), exc, exc.__traceback__)  # atomic_open unlinks its temp file

    def _wipe(self) -> None:
        self._buf[:] = bytes(len(self._buf))
        self._fill = 0

    def __enter__(self) -> "EncryptingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)


# -------------------------------------------------------------------------------------------------- decryption
def _parse_header(header: bytes, key: str, total_len: int) -> tuple[AESGCM, bytes, int, int, int]:
    """Validate the header, the file length and the key; return (aead, nonce prefix, chunk size, number of
    chunks, plaintext length). Cheap checks come before the (deliberately slow) key derivation."""
    if len(header) < len(MAGIC) or header[: len(MAGIC)] != MAGIC:
        raise DecryptError("not an encrypted chatbot model (bad magic bytes); publish it again with "
                           "`python -m chatbot.ops publish --encrypt`")
    if len(header) < HEADER_BYTES:
        raise DecryptError(_TAMPERED.format("truncated header"))
    fields, mac = header[: _FIELDS.size], header[_FIELDS.size:HEADER_BYTES]
    _, version, aead, kdf, log2n, r, p, salt, prefix, chunk = _FIELDS.unpack(fields)
    if version != VERSION or aead != AEAD_AES256GCM or kdf != KDF_SCRYPT:
        # (an authentic header with another version, or a corrupted one: both need a new publish or a newer tool)
        raise DecryptError(f"unsupported encrypted-model format (version {version}); update the tool or "
                           "publish again with `python -m chatbot.ops publish --encrypt`")
    if (not _LOG2N_RANGE[0] <= log2n <= _LOG2N_RANGE[1] or not _R_RANGE[0] <= r <= _R_RANGE[1]
            or not _P_RANGE[0] <= p <= _P_RANGE[1] or 128 * r * (1 << log2n) > _MAX_SCRYPT_MEM
            or not _CHUNK_RANGE[0] <= chunk <= _CHUNK_RANGE[1]):
        raise DecryptError(_TAMPERED.format("invalid header parameters"))
    n_chunks, plain_len = _layout(total_len - HEADER_BYTES, chunk)
    enc_key, mac_key = _derive(key, salt, log2n, r, p)
    if not hmac.compare_digest(hmac.new(mac_key, fields, hashlib.sha256).digest(), mac):
        raise DecryptError(_WRONG)
    return AESGCM(enc_key), prefix, chunk, n_chunks, plain_len


def _layout(body_len: int, chunk: int) -> tuple[int, int]:
    """(number of chunks, plaintext length) implied by the ciphertext body length."""
    full, rem = divmod(body_len, chunk + TAG_BYTES)
    if rem < TAG_BYTES:  # the last chunk (0..chunk-1 bytes + tag) is missing or cut
        raise DecryptError(_TAMPERED.format("truncated or extended"))
    return full + 1, full * chunk + rem - TAG_BYTES


def _decrypt_stream(fh: BinaryIO, total_len: int, key: str) -> bytearray:
    """Decrypt the seekable ``fh`` (``total_len`` bytes long) into one buffer of the exact plaintext size.

    The chunk count and the plaintext length follow from the file length, which anyone can change (pad a file to
    1 GiB, or make it a sparse 64 GiB file), so nothing is allocated by that length before it is authenticated:
    the *last* chunk is read and authenticated first. Its nonce holds its counter and the "last" flag, so only the
    real last chunk of a file of exactly this length passes; a padded, extended or cut file fails there, having
    used one chunk of memory. Only then is the plaintext buffer allocated and the other chunks decrypted in order.
    """
    _check_key(key)
    header = fh.read(HEADER_BYTES)
    aead, prefix, chunk, n_chunks, plain_len = _parse_header(header, key, total_len)
    last = n_chunks - 1
    if last > _MAX_COUNTER:
        raise DecryptError(_TAMPERED.format("truncated or extended"))
    last_plain = plain_len - last * chunk
    cbuf = bytearray(min(chunk, plain_len) + TAG_BYTES)  # one chunk (the header bounds the chunk size)
    cview = memoryview(cbuf)
    tail = bytearray(last_plain)
    try:
        fh.seek(HEADER_BYTES + last * (chunk + TAG_BYTES))
        _read_exact(fh, cview[:last_plain + TAG_BYTES])
        try:
            aead.decrypt_into(_nonce(prefix, last, True), cview[:last_plain + TAG_BYTES], header, tail)
        except InvalidTag:
            raise DecryptError(_TAMPERED.format("truncated or extended, or its last chunk fails authentication")) \
                from None
        out = bytearray(plain_len)  # the length is authentic now
        view = memoryview(out)
        try:
            view[last * chunk:] = tail
            fh.seek(HEADER_BYTES)
            for i in range(last):
                _read_exact(fh, cview[:chunk + TAG_BYTES])
                try:
                    aead.decrypt_into(_nonce(prefix, i, False), cview[:chunk + TAG_BYTES], header,
                                      view[i * chunk:(i + 1) * chunk])
                except InvalidTag:
                    raise DecryptError(_TAMPERED.format(f"chunk {i + 1} of {n_chunks} fails authentication")) \
                        from None
            fh.seek(HEADER_BYTES + last * (chunk + TAG_BYTES) + last_plain + TAG_BYTES)
            if fh.read(1):
                raise DecryptError(_TAMPERED.format("file changed while reading"))
        finally:
            view.release()
    finally:
        cview.release()
    return out


def _read_exact(fh: BinaryIO, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        n = fh.readinto(buf[got:])
        if not n:
            raise DecryptError(_TAMPERED.format("file changed while reading"))
        got += n


def decrypt_to_bytes(path: str | os.PathLike, key: str) -> bytearray:
    """Decrypt a whole file into memory (a bytearray; DecryptError with one line on any problem)."""
    path = Path(path)
    try:
        with open(path, "rb", buffering=0) as fh:
            return _decrypt_stream(fh, os.fstat(fh.fileno()).st_size, key)
    except OSError as exc:
        raise ChatbotError(f"cannot read {path}: {exc.strerror or exc}") from None


class MemoryReader(io.RawIOBase):
    """A read-only, seekable file object over a bytes-like buffer without copying it (for ``torch.load``)."""

    def __init__(self, buf):
        super().__init__()
        self._mv = memoryview(buf).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = max(0, min(len(b), len(self._mv) - self._pos))
        memoryview(b).cast("B")[:n] = self._mv[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        end = len(self._mv) if size is None or size < 0 else min(len(self._mv), self._pos + size)
        out = bytes(self._mv[self._pos:end]) if end > self._pos else b""
        self._pos = max(self._pos, end)
        return out

    def readall(self) -> bytes:
        return self.read(-1)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._mv)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._mv.release()
        super().close()


def open_decrypted(path: str | os.PathLike, key: str) -> MemoryReader:
    """Decrypt ``path`` in memory and return a seekable reader over the plaintext (no copy, no temp file)."""
    return MemoryReader(decrypt_to_bytes(path, key))


def is_encrypted(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with this format's magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ in-memory helpers
def encrypt_bytes(data, key: str, *, chunk_size: int | None = None, log2n: int | None = None,
                  r: int | None = None, p: int | None = None) -> bytes:
    """Encrypt ``data`` to the file format in memory (for tests and small payloads)."""
    sink = io.BytesIO()
    with EncryptingWriter(sink, key, chunk_size=chunk_size, log2n=log2n, r=r, p=p) as w:
        w.write(data)
    return sink.getvalue()


def decrypt_bytes(blob, key: str) -> bytes:
    """Decrypt an in-memory ciphertext produced by :func:`encrypt_bytes` / :class:`EncryptingWriter`."""
    mv = memoryview(blob).cast("B")
    return bytes(_decrypt_stream(io.BytesIO(mv), len(mv), key))
