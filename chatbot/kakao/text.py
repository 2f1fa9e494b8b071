"""Opening an export as a stream of text lines: plain file or a ``.zip`` holding one, UTF-8 or CP949.

Decoding rules (formats doc §9): UTF-8 strict first (a leading BOM is dropped), CP949 when the bytes are not
UTF-8 (files re-saved by Notepad/Excel); UTF-16 only when the file starts with a UTF-16 BOM (Notepad "Unicode"). Whether the bytes decode is checked in one streaming pass before parsing,
so a decode error can never surface half-way through a parse. A file that is neither decodes as UTF-8 with
replacement characters, and detection then decides whether it is an export at all.

Lines: ``\\r\\n`` and ``\\r`` become ``\\n`` (universal newlines); lines are split on ``\\n`` only, never on the
other characters ``str.splitlines`` treats as breaks (U+2028, U+001C …), which can occur inside message bodies.
"""

from __future__ import annotations

import codecs
import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from ..errors import FormatError

CHUNK = 1 << 20
EXPORT_SUFFIXES = (".txt", ".csv")


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


def sources(path: Path) -> list[Source]:
    """The candidate export streams of ``path``: the file itself, or the ``.txt``/``.csv`` members of a zip
    (``KakaoTalkChats.txt`` first, then largest first). Raises FormatError for a missing or broken file."""
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        if path.suffix.lower() == ".zip":
            raise FormatError(f"{path.name}: not a readable .zip archive (re-download or re-export it)")
        return [Source(path, None, lambda: open(path, "rb", buffering=CHUNK))]
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [
                i for i in zf.infolist()
                if not i.is_dir() and i.filename.lower().endswith(EXPORT_SUFFIXES)
                and not i.filename.startswith("__MACOSX/") and not Path(i.filename).name.startswith("._")
            ]
    except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
        raise FormatError(f"{path.name}: not a readable .zip archive ({type(exc).__name__})") from None
    if not infos:
        raise FormatError(f"{path.name}: the zip holds no .txt or .csv export")
    infos.sort(key=lambda i: (Path(i.filename).name != "KakaoTalkChats.txt", -i.file_size, i.filename))

    def opener(name: str) -> Callable[[], IO[bytes]]:
        def open_member() -> IO[bytes]:
            zf = zipfile.ZipFile(path)
            try:
                fh = zf.open(name)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                zf.close()
                raise FormatError(f"{path.name}: cannot read {name} from the zip ({type(exc).__name__})") from None
            return io.BufferedReader(_ZipMember(fh, zf), CHUNK)

        return open_member

    return [Source(path, i.filename, opener(i.filename)) for i in infos]


class _ZipMember(io.RawIOBase):
    """A zip member stream that also closes its ZipFile (TextIOWrapper needs a readable binary stream)."""

    def __init__(self, fh: IO[bytes], zf: zipfile.ZipFile):
        self._fh, self._zf = fh, zf

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self._fh.read(len(b))
        except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, zlib.error) as exc:
            raise FormatError(f"{self._zf.filename}: corrupt zip member ({type(exc).__name__})") from None
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
            self._zf.close()
        super().close()
