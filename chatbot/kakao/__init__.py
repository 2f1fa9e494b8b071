"""KakaoTalk export parsing: every platform, UI language and era, detected from the content.

Public API (other stages code against these names):

* :func:`parse_file` ``(path, self_name="나") -> ParsedExport`` — whole export in memory.
* :func:`iter_records` ``(path, self_name="나") -> (ExportInfo, Iterator[Record])`` — streaming, bounded memory.
* :mod:`chatbot.kakao.merge` — ``merge_timelines`` (several exports of one room -> one timeline).
* :mod:`chatbot.kakao.organize` — ``organize``, ``load_manifest``, ``room_records``.

Formats: ``windows_ko``, ``windows_en``, ``csv``, ``android_ko``, ``android_en``, ``ios_ko``, ``ios_en`` (the
suffix follows the language of the timestamps / day separators). The reference for every shape handled here is
../shared/docs/kakao-export-formats.md.
"""

from .detect import FORMATS
from .parse import ExportInfo, ParsedExport, iter_records, parse_file

__all__ = ["FORMATS", "ExportInfo", "ParsedExport", "iter_records", "parse_file"]
