"""Property tests: arbitrary bytes and mangled real-looking exports either parse or raise FormatError — never
another exception, never a hang (hypothesis deadline) — and any message body survives every format."""

from __future__ import annotations

import zipfile
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.errors import FormatError
from chatbot.kakao import FORMATS, parse_file
from chatbot.records import Kind, Record
from tests.support.kakao import FIXTURES, Ev, conversation, render

SETTINGS = settings(max_examples=40, deadline=timedelta(seconds=10), derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
BASE = conversation(datetime(2019, 5, 1, 23, 30), 25, ["김민준", "이서연", "Alice"], seed=7)
BASE.insert(4, Ev(BASE[4].ts, "박지호", join=True))
EXPORTS = {f: render(f, "테스트 방", BASE, datetime(2019, 6, 1, 9, 0), self_name="김민준") for f in FORMATS}


def check(path: Path) -> None:
    """The contract: a ParsedExport with sane records, or a one-line FormatError naming the file."""
    try:
        p = parse_file(path)
    except FormatError as exc:
        msg = str(exc)
        assert "\n" not in msg and path.name in msg
        return
    assert p.format in FORMATS and p.encoding in ("utf-8", "cp949", "utf-16")
    for r in p.records:
        assert isinstance(r, Record) and isinstance(r.timestamp, datetime) and isinstance(r.kind, Kind)
        assert r.text == r.text.rstrip() or p.format == "csv"
    assert p.segments[0] == 0 and p.segments == sorted(p.segments)


@SETTINGS
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes(tmp_path, data):
    path = tmp_path / "KakaoTalkChats.txt"
    path.write_bytes(data)
    check(path)
    assert path.read_bytes() == data  # never modified


@SETTINGS
@given(data=st.binary(max_size=2000), name=st.sampled_from(["a.zip", "b.csv"]))
def test_arbitrary_bytes_with_export_suffixes(tmp_path, data, name):
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04" + data if name.endswith(".zip") else data)
    check(path)


def _mangle(text: str, ops: list[tuple[int, int, int, str]]) -> str:
    lines = text.splitlines(keepends=True)
    for op, i, j, junk in ops:
        if not lines:
            break
        i %= len(lines)
        j %= len(lines)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[j])
        elif op == 2:
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines.insert(i, junk + "\n")
        elif op == 4:
            cut = j % (len(lines[i]) + 1)
            lines[i] = lines[i][:cut] + junk + lines[i][cut:]
        elif op == 5:
            lines[i] = lines[i].replace("\r\n", "\n") if "\r" in lines[i] else lines[i].replace("\n", "\r\n")
        else:
            lines = lines[: i + 1]
    return "".join(lines)


JUNK = st.text(alphabet=st.sampled_from(list("[]:,. -가나다년월일오전후0123456789AMPM\ufeff\u00a0\u202f\"'\t")),
               max_size=30)


@SETTINGS
@given(fmt=st.sampled_from(FORMATS),
       ops=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 10_000), st.integers(0, 10_000), JUNK), max_size=8),
       cut=st.integers(0, 10_000), enc=st.sampled_from(["utf-8", "cp949"]), zipped=st.booleans())
def test_mangled_exports(tmp_path, fmt, ops, cut, enc, zipped):
    text = _mangle(EXPORTS[fmt], ops)
    data = text.encode(enc, errors="replace")
    if cut % 3 == 0:
        data = data[: cut % (len(data) + 1)]  # truncated mid-character / mid-line
    if zipped:
        path = tmp_path / "export.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("KakaoTalkChats.txt", data)
    else:
        path = tmp_path / ("export.csv" if fmt == "csv" else "export.txt")
        path.write_bytes(data)
    check(path)


# Bodies from an alphabet without digits, '[', '.', so no body line can look like a stamp, a system sentence or a
# header; spaces, ' : ', blank lines, U+FEFF and NBSP included.
BODY = st.lists(st.text(alphabet=st.sampled_from(list("가나다라마 바사 :,!?ㅋㅎabcXYZ\ufeff\u00a0")), max_size=20),
                min_size=1, max_size=4).map("\n".join)


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), bodies=st.lists(BODY, min_size=1, max_size=6), gap=st.integers(1, 2000))
def test_any_body_survives_every_format(tmp_path, fmt, bodies, gap):
    t0 = datetime(2020, 2, 28, 23, 0)
    events = [Ev(t0 + timedelta(minutes=gap * i), ["김민준", "이서연 B"][i % 2], b) for i, b in enumerate(bodies)]
    path = tmp_path / "export.txt"
    path.write_bytes(render(fmt, "방", events, datetime(2021, 1, 1)).encode())
    p = parse_file(path)
    assert p.format == fmt
    assert [r.text for r in p.records] == [b.rstrip() if fmt != "csv" else b.rstrip() for b in bodies]
    assert [r.speaker for r in p.records] == [e.speaker for e in events]
    assert [r.timestamp.replace(second=0) for r in p.records] == [e.ts for e in events]


def _records(fmt: str, text: str, reference: bool, chunk: int | None = None):
    from io import StringIO

    from chatbot.kakao.lines import PARSERS, Ctx, TextStream

    stream = TextStream([], StringIO(text))
    if chunk is not None:
        stream.CHUNK = chunk  # tiny chunks: records and bodies straddle chunk borders
    ctx = Ctx(fmt, "나", reference=reference)
    return list(PARSERS[fmt](stream, ctx)), ctx.segments


TXT_FORMATS = [f for f in FORMATS if f != "csv"]
# the rendered conversation plus every fixture file of the format (more shapes: system lines, notices, eras)
BASES = [(f, EXPORTS[f]) for f in TXT_FORMATS] + [
    (parse_file(p).format, p.read_text(encoding="utf-8-sig")) for p in sorted(FIXTURES.glob("*.txt"))
    if p.name != "not_export.txt"]


@SETTINGS
@given(base=st.sampled_from(BASES),
       ops=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 10_000), st.integers(0, 10_000), JUNK), max_size=10),
       chunk=st.integers(1, 400))
def test_fast_paths_agree_with_the_per_line_rules(base, ops, chunk):
    """The chunked multi-line-regex hot path is an optimisation only: on any (mangled) input it must give
    exactly the records of the plain per-line state machine, wherever the chunk borders fall."""
    fmt, text = base
    text = _mangle(text, ops)
    body = text.split("\n", 2)[-1]  # the parsers see the text after the detected header
    want = _records(fmt, body, reference=True)
    assert _records(fmt, body, reference=False) == want
    assert _records(fmt, body, reference=False, chunk=chunk) == want


def test_fast_paths_agree_on_every_fixture():
    for fmt, text in BASES:
        body = text.split("\n", 2)[-1]
        want = _records(fmt, body, reference=True)
        assert _records(fmt, body, reference=False) == want, fmt
        for chunk in (1, 17, 64):
            assert _records(fmt, body, reference=False, chunk=chunk) == want, (fmt, chunk)
