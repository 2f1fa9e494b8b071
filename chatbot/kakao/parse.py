"""Entry points: ``iter_records`` (streaming) and ``parse_file`` (everything in memory).

Both detect the format from the content, decode (UTF-8, CP949 fallback), open ``.zip`` files, and raise
:class:`FormatError` with one line naming the file when it is no KakaoTalk export. The file is only read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Iterator

from ..errors import FormatError
from ..records import Record
from .classify import csv_room
from .detect import Detected, detect
from .lines import PARSERS, Ctx, TextStream
from .text import ArchiveLimitError, ZipLimits, encodings_to_try, open_text, sources

HEAD_LINES = 400
HEAD_BYTES = 1 << 20
EXPECTED = ("expected a KakaoTalk chat export: a Windows/Mac .txt or .csv, an Android KakaoTalkChats.txt, "
            "an iPhone .txt, or a .zip holding one")


@dataclass
class ExportInfo:
    """What is known about an export before (and, for ``segments``, after) its records are read."""

    path: Path
    format: str  # windows_ko, windows_en, csv, android_ko, android_en, ios_ko, ios_en
    room: str  # room name from the title ("" when the title names none, e.g. iOS Talk_… files)
    saved_at: datetime | None
    encoding: str  # "utf-8" or "cp949" ("utf-16" for a file re-saved as Notepad "Unicode")
    title: str = ""  # line 1 as written
    members: int | None = None  # member count from the title, when it has one
    member: str | None = None  # the file inside a .zip
    segments: list[int] = field(default_factory=lambda: [0])  # record index of each concatenated export

    @property
    def source(self) -> str:
        return f"{self.path.name}:{self.member}" if self.member else self.path.name


@dataclass
class ParsedExport(ExportInfo):
    records: list[Record] = field(default_factory=list)

    def segment_records(self) -> list[list[Record]]:
        """The records split at concatenated-export boundaries (each part is one export)."""
        cuts = [*self.segments, len(self.records)]
        return [self.records[start:end] for start, end in zip(cuts, cuts[1:]) if end > start]


def _read_head(fh: IO[str]) -> list[str]:
    head: list[str] = []
    size = 0
    while len(head) < HEAD_LINES and size < HEAD_BYTES:
        line = fh.readline()
        if not line:
            break
        head.append(line)
        size += len(line)
    return head


def iter_records(path: str | Path, self_name: str = "나", *, member: str | None = None,
                 limits: ZipLimits | None = None) -> tuple[ExportInfo, Iterator[Record]]:
    """Detect the export and return (info, lazy record iterator). Memory stays bounded by one message.

    For a zip, ``member`` picks the export inside it (default: the first member that is an export) and ``limits``
    bounds how far a member may expand (see :mod:`chatbot.kakao.text`). Raises FormatError right away when the
    file is not an export (ArchiveLimitError, a FormatError, for a zip member beyond the limits); ``info.segments``
    is complete once the iterator is exhausted.
    """
    path = Path(path)
    empty = True
    for src in sources(path, limits, member):
        for codec, errors in encodings_to_try(src):
            fh = open_text(src, codec, errors)
            try:
                head = _read_head(fh)
            except ArchiveLimitError:
                fh.close()
                raise
            except (UnicodeDecodeError, FormatError, OSError):
                fh.close()
                continue
            if any(first_line.strip() for first_line in head):
                empty = False
            det = detect(head)
            if det is None:
                fh.close()
                continue
            room = det.room
            if det.format == "csv":  # CSV has no title line; KakaoTalk names the file after the room
                room = csv_room(src.member or path.name)
            info = ExportInfo(path=path, format=det.format, room=room, saved_at=det.saved_at,
                              encoding={"cp949": "cp949", "utf-16": "utf-16"}.get(codec, "utf-8"),
                              title=det.title.strip(),
                              members=det.members, member=src.member)
            return info, _stream(fh, head, det, info, self_name)
    what = "is empty" if empty else "is not a KakaoTalk export"
    raise FormatError(f"{path.name} {what} ({EXPECTED}); the file was left untouched")


def _stream(fh: IO[str], head: list[str], det: Detected, info: ExportInfo, self_name: str) -> Iterator[Record]:
    ctx = Ctx(format=det.format, self_name=self_name, saved_at=det.saved_at, ios_time_only=det.ios_time_only,
              segments=info.segments)
    try:
        yield from PARSERS[det.format](TextStream(head[det.skip:], fh), ctx)
    except FormatError as exc:
        raise FormatError(f"{info.source}: {exc}") from None
    except UnicodeDecodeError:
        raise FormatError(f"{info.source}: not valid {info.encoding} text; re-export the chat") from None
    finally:
        fh.close()


def parse_file(path: str | Path, self_name: str = "나", *, member: str | None = None,
               limits: ZipLimits | None = None) -> ParsedExport:
    """Parse a whole export into memory. See :func:`iter_records` for the streaming form and the arguments."""
    info, record_stream = iter_records(path, self_name, member=member, limits=limits)
    records = list(record_stream)
    return ParsedExport(**{name: getattr(info, name) for name in info.__dataclass_fields__}, records=records)
