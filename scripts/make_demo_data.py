"""Regenerate the shipped demo room in data/demo/ from the MIT-licensed XPersona Korean dialogues.

    python scripts/make_demo_data.py [--source tests/fixtures/xpersona_ko] [--out data/demo]

A two-person room: "나" (the exporter) and an invented friend "콩떡". Each XPersona dialogue becomes one evening's
chat (one session); the first speaker of every utterance pair is "나", the second "콩떡". The room is written as
three real KakaoTalk export files whose date ranges overlap, so the demo also exercises the parser and the merge:

* ``KakaoTalk_20230220_2214_05_417_group.txt`` — Windows PC, Korean UI (CRLF records), dialogues 0–49
* ``KakaoTalk_android_20230416.zip`` — Android, Korean UI (``KakaoTalkChats.txt`` inside; BOM; old-style
  "회원님" for the exporter), dialogues 35–79
* ``KakaoTalk_Chat_콩떡_2023-05-01-21-14-05.csv`` — PC CSV (BOM, seconds), dialogues 65–94

A few photos, emoticons, bursts (one utterance sent as two messages) and invented example.com links are sprinkled
in. Output is byte-for-byte deterministic (fixed seed, fixed zip timestamps).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SELF, FRIEND = "나", "콩떡"
N_DIALOGUES = 95
RANGES = {"windows": (0, 50), "android": (35, 80), "csv": (65, 95)}
START = datetime(2023, 1, 2)
# the 95 dialogues used, shipped with their MIT licence (tests/fixtures/xpersona_ko/README.md); the full XPersona
# file works too (only the first N_DIALOGUES dialogues are read)
SOURCE = REPO / "tests" / "fixtures" / "xpersona_ko"
WEEKDAYS = "월화수목금토일"


def load_dialogues(source: Path) -> list[list[str]]:
    """Utterances of the first N_DIALOGUES dialogues of the validation file, flattened in speaking order."""
    data = json.loads((source / "Ko_persona_split_valid_human_annotated.json").read_text(encoding="utf-8"))
    return [[u.strip() for pair in d["dialogue"] for u in pair] for d in data[:N_DIALOGUES]]


def build_timeline(dialogues: list[list[str]], seed: int = 20230102) -> list[list[tuple[datetime, str, str]]]:
    """Per dialogue: (time, speaker, body) messages. Bodies are text or a media placeholder ("사진", "이모티콘")."""
    rng = random.Random(seed)
    out = []
    for k, utterances in enumerate(dialogues):
        t = START + timedelta(days=k, hours=rng.randint(19, 21), minutes=rng.randint(0, 59))
        msgs: list[tuple[datetime, str, str]] = []
        for i, text in enumerate(utterances):
            who = SELF if i % 2 == 0 else FRIEND
            t += timedelta(minutes=rng.choice((0, 1, 1, 2, 3)))
            r = rng.random()
            if r < 0.04:
                msgs.append((t, who, "사진"))
            elif r < 0.07:
                msgs.append((t, who, "이모티콘"))
            elif r < 0.08:
                text = f"{text} https://example.com/p/{rng.randint(1000, 9999)}"
            parts = text.split(". ", 1)
            if len(parts) == 2 and rng.random() < 0.15:  # a burst: one thought sent as two messages
                msgs.append((t, who, parts[0] + "."))
                msgs.append((t, who, parts[1]))
            else:
                msgs.append((t, who, text))
            if who == FRIEND and rng.random() < 0.05:
                msgs.append((t, FRIEND, "ㅋㅋㅋ"))
        out.append(msgs)
    return out


def _ampm(t: datetime) -> str:
    return f"{'오전' if t.hour < 12 else '오후'} {t.hour % 12 or 12}:{t.minute:02d}"


def _ko_date(t: datetime) -> str:
    return f"{t.year}년 {t.month}월 {t.day}일"


def windows_ko(days, saved: datetime) -> bytes:
    lines = [f"{FRIEND} 님과 카카오톡 대화\r\n", f"저장한 날짜 : {saved:%Y-%m-%d %H:%M:%S}\r\n", "\r\n"]
    for msgs in days:
        d = msgs[0][0]
        lines.append(f"--------------- {_ko_date(d)} {WEEKDAYS[d.weekday()]}요일 ---------------\r\n")
        lines += [f"[{who}] [{_ampm(t)}] {body}\r\n" for t, who, body in msgs]
    return "".join(lines).encode("utf-8")


def android_ko(days, saved: datetime) -> bytes:
    # header byte quirk of real files: line 1 CRLF, lines 2-3 bare LF, line 4 CRLF
    out = [f"\ufeff{FRIEND} 님과 카카오톡 대화\r\n", f"저장한 날짜 : {_ko_date(saved)} {_ampm(saved)}\n", "\n", "\r\n"]
    for j, msgs in enumerate(days):
        if j:
            out.append("\r\n")
        out.append(f"{_ko_date(msgs[0][0])} {_ampm(msgs[0][0])}\r\n")
        for t, who, body in msgs:
            name = "회원님" if who == SELF else who  # old mobile exports call the exporter 회원님
            out.append(f"{_ko_date(t)} {_ampm(t)}, {name} : {body}\r\n")
    return "".join(out).encode("utf-8")


def pc_csv(days, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    buf = io.StringIO()
    buf.write("\ufeffDate,User,Message\n")
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    for msgs in days:
        for t, who, body in msgs:
            stamp = (t + timedelta(seconds=rng.randint(0, 59))).strftime("%Y-%m-%d %H:%M:%S")
            buf.write(stamp + ",")
            writer.writerow([who, body])
    return buf.getvalue().encode("utf-8")


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name, date_time=(2023, 4, 16, 18, 2, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=REPO / "data" / "demo")
    args = ap.parse_args()
    days = build_timeline(load_dialogues(args.source))
    sel = {k: days[a:b] for k, (a, b) in RANGES.items()}
    files = {
        "KakaoTalk_20230220_2214_05_417_group.txt": windows_ko(sel["windows"], datetime(2023, 2, 20, 22, 14, 5)),
        "KakaoTalk_android_20230416.zip": zipped("KakaoTalkChats.txt",
                                                 android_ko(sel["android"], datetime(2023, 4, 16, 18, 2))),
        f"KakaoTalk_Chat_{FRIEND}_2023-05-01-21-14-05.csv": pc_csv(sel["csv"]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out / name).write_bytes(data)
        print(f"{args.out / name}: {len(data):,} bytes")
    n = sum(len(m) for m in days)
    print(f"{len(days)} dialogues, {n} distinct messages; overlaps: dialogues 35-49 (Windows+Android), "
          f"65-79 (Android+CSV)")


if __name__ == "__main__":
    main()
