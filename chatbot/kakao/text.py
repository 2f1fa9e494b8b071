"""Opening an export as a stream of text lines: plain file or a ``.zip`` holding one, UTF-8 or CP949.

Decoding rules (formats doc §9): UTF-8 strict first (a leading BOM is dropped), CP949 when the bytes are not
UTF-8 (files re-saved by Notepad/Excel); UTF-16 only when the file starts with a UTF-16 BOM (Notepad "Unicode"). Whether the bytes decode is checked in one streaming pass before parsing,
so a decode error can never surface half-way through a parse. A file that is neither decodes as UTF-8 with
replacement characters, and detection then decides whether it is an export at all.

Lines: ``\\r\\n`` and ``\\r`` become ``\\n`` (universal newlines); lines are split on ``\\n`` only, never on the
other characters ``str.splitlines`` treats as breaks (U+2028, U+001C …), which can occur inside message bodies.

Zip members are expanded only within :class:`ZipLimits` (``paths.raw.zip_max_member_mb`` and
``paths.raw.zip_max_ratio``): a member whose *declared* uncompressed size or compression ratio is beyond them, or
that uses a compression method other than stored/deflate, is refused before a byte is expanded; and because the
sizes in a zip can lie, the expanded bytes are also counted while streaming and the read stops with the same
refusal once they pass the bound. The ratio is taken against the compressed bytes the member can really have (the
gap to the next header in the file, when that is smaller than the declared size), so overlapping-member bombs are
caught too. Members smaller than RATIO_FLOOR_BYTES are exempt from the ratio (a short "ㅋㅋㅋ…" file compresses far).
"""

from __future__ import annotations

import codecs
import io
import zipfile
import zlib
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from ..errors import FormatError

CHUNK = 1 << 20
EXPORT_SUFFIXES = (".txt", ".csv")
RATIO_FLOOR_BYTES = 1 << 20  # members expanding to less than this are never refused for their ratio
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


@dataclass(frozen=True)
class ZipLimits:
    """How far one zip member may expand (defaults = the ``paths.raw`` defaults). See the module doc."""

    max_member_bytes: int = 1024 << 20
    max_ratio: float = 100.0

    @classmethod
    def from_raw(cls, raw) -> "ZipLimits":
        return cls(int(raw.zip_max_member_mb * (1 << 20)), float(raw.zip_max_ratio))

    def bound(self, compressed: int) -> int:
        """The most bytes a member with ``compressed`` bytes of data may expand to."""
        return min(self.max_member_bytes, max(RATIO_FLOOR_BYTES, int(self.max_ratio * max(compressed, 1))))


class ArchiveLimitError(FormatError):
    """A zip member beyond :class:`ZipLimits` (a zip bomb, or an export far larger than any real chat)."""


def _limit_error(zip_name: str, member: str, what: str) -> ArchiveLimitError:
    return ArchiveLimitError(
        f"{zip_name}: member {member} {what}; the zip was left untouched (unzip it yourself if it is a real export, "
        "or raise paths.raw.zip_max_member_mb / zip_max_ratio)")


@dataclass
class Source:
    """A readable export: ``open_bytes()`` gives a fresh binary stream of the export's bytes."""

    path: Path
    member: str | None  # the file inside a zip, else None
    open_bytes: Callable[[], IO[bytes]]

    @property
    def label(self) -> str:
        return f"{self.path.name}:{self.member}" if self.member else self.path.name


def _decodes(open_bytes: Callable[[], IO[bytes]], encoding: str) -> bool:
    dec = codecs.getincrementaldecoder(encoding)("strict")
    try:
        with open_bytes() as fh:
            while chunk := fh.read(CHUNK):
                dec.decode(chunk)
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def encodings_to_try(src: Source) -> list[tuple[str, str]]:
    """[(python codec, errors)] in preference order for this source (see module doc)."""
    with src.open_bytes() as fh:
        start = fh.read(2)
    if start in (b"\xff\xfe", b"\xfe\xff") and _decodes(src.open_bytes, "utf-16"):
        return [("utf-16", "strict")]  # re-saved as "Unicode" by Windows Notepad
    if _decodes(src.open_bytes, "utf-8"):
        return [("utf-8-sig", "strict")]
    if _decodes(src.open_bytes, "cp949"):
        return [("cp949", "strict"), ("utf-8-sig", "replace")]
    return [("utf-8-sig", "replace")]


def open_text(src: Source, codec: str, errors: str) -> IO[str]:
    raw = src.open_bytes()
    text = io.TextIOWrapper(raw, encoding=codec, errors=errors, newline=None)
    text._CHUNK_SIZE = 1 << 16  # fewer decode calls; ~10% faster line iteration on big files
    return text


def iter_lines(fh: IO[str]) -> Iterator[str]:
    """Lines without their trailing newline."""
    for line in fh:
        yield line[:-1] if line.endswith("\n") else line


def sources(path: Path, limits: ZipLimits | None = None, member: str | None = None) -> list[Source]:
    """The candidate export streams of ``path``: the file itself, or the ``.txt``/``.csv`` members of a zip
    (``KakaoTalkChats.txt`` first, then largest first; only ``member`` when given). Raises FormatError for a
    missing or broken file, ArchiveLimitError for a member beyond ``limits`` (see the module doc)."""
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        if path.suffix.lower() == ".zip":
            raise FormatError(f"{path.name}: not a readable .zip archive (re-download or re-export it)")
        if member is not None:
            raise FormatError(f"{path.name}: not a zip, so it has no member {member}; run organize again")
        return [Source(path, None, lambda: open(path, "rb", buffering=CHUNK))]
    limits = limits or ZipLimits()
    infos, room = zip_members(path, limits)
    if member is not None:
        infos = [i for i in infos if i.filename == member]
        if not infos:
            raise FormatError(f"{path.name}: the zip has no member {member}; run organize again")

    def opener(info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
        bound = limits.bound(min(info.compress_size, room[info.filename]))

        def open_member() -> IO[bytes]:
            zf = zipfile.ZipFile(path)
            try:
                fh = zf.open(info.filename)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                zf.close()
                raise FormatError(f"{path.name}: cannot read {info.filename} from the zip "
                                  f"({type(exc).__name__})") from None
            return io.BufferedReader(_ZipMember(fh, zf, info.filename, bound), CHUNK)

        return open_member

    return [Source(path, i.filename, opener(i)) for i in infos]


def zip_members(path: Path, limits: ZipLimits | None = None) -> tuple[list[zipfile.ZipInfo], dict[str, int]]:
    """The export candidates of a zip (``.txt``/``.csv`` members, macOS resource forks skipped) in preference
    order, after checking every candidate's declared sizes against ``limits``; plus, per member, the most
    compressed bytes it can really hold (the gap to the next header). Raises FormatError / ArchiveLimitError."""
    limits = limits or ZipLimits()
    try:
        with zipfile.ZipFile(path) as zf:
            everything = zf.infolist()
            end = zf.start_dir
    except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError) as exc:
        raise FormatError(f"{path.name}: not a readable .zip archive ({type(exc).__name__})") from None
    infos = [
        i for i in everything
        if not i.is_dir() and i.filename.lower().endswith(EXPORT_SUFFIXES)
        and not i.filename.startswith("__MACOSX/") and not Path(i.filename).name.startswith("._")
    ]
    if not infos:
        raise FormatError(f"{path.name}: the zip holds no .txt or .csv export")
    offsets = sorted({i.header_offset for i in everything} | {end})
    room: dict[str, int] = {}
    for i in infos:
        nxt = offsets[min(bisect_right(offsets, i.header_offset), len(offsets) - 1)]
        room[i.filename] = max(0, nxt - i.header_offset) if nxt > i.header_offset else i.compress_size
        mb = i.file_size / (1 << 20)
        if i.compress_type not in _METHODS:
            raise _limit_error(path.name, i.filename, f"uses compression method {i.compress_type} (only stored and "
                                                      "deflate are accepted)")
        if i.file_size > limits.max_member_bytes:
            raise _limit_error(path.name, i.filename, f"would expand to {mb:,.1f} MB, over the "
                                                      f"{limits.max_member_bytes / (1 << 20):,.0f} MB limit")
        if i.file_size > limits.bound(min(i.compress_size, room[i.filename])):
            ratio = i.file_size / max(1, min(i.compress_size, room[i.filename]))
            raise _limit_error(path.name, i.filename, f"would expand {ratio:,.0f} times ({mb:,.0f} MB), over the "
                                                      f"compression ratio limit of {limits.max_ratio:g}")
    infos.sort(key=lambda i: (Path(i.filename).name != "KakaoTalkChats.txt", -i.file_size, i.filename))
    return infos, room


class _ZipMember(io.RawIOBase):
    """A zip member stream that also closes its ZipFile (TextIOWrapper needs a readable binary stream) and stops
    with ArchiveLimitError once more than ``bound`` bytes came out (declared sizes can lie)."""

    def __init__(self, fh: IO[bytes], zf: zipfile.ZipFile, name: str, bound: int):
        self._fh, self._zf, self._name, self._left = fh, zf, name, bound

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self._fh.read(len(b))
        except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, zlib.error) as exc:
            raise FormatError(f"{self._zf.filename}: corrupt zip member ({type(exc).__name__})") from None
        n = len(data)
        self._left -= n
        if self._left < 0:
            raise _limit_error(Path(self._zf.filename or "?").name, self._name,
                               "expands beyond what its compressed size allows")
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self._zf.close()
        super().close()
