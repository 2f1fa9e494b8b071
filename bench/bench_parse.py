"""Parse throughput and peak memory of the KakaoTalk parser and of `organize`, on a synthetic export.

    python bench/bench_parse.py [--mb 100] [--format android_ko] [--keep DIR]

Generates an invented export of at least ``--mb`` MB (multi-line bodies, system lines, placeholders, day
headers), then, each in a fresh child process so peak RSS is its own:

* parse    — ``iter_records`` over the whole file (decode check, detection, parsing; records are counted, not
  kept): wall and CPU MB/s, peak RSS;
* organize — ``organize`` of a throw-away project whose inbox holds the file (sha256, streaming parse, stats,
  room fingerprint, copy, manifest): MB/s, peak RSS.

Targets (issue 2): parse >= 20 MB/s on one core; organize peak RSS < 300 MB whatever the export size.
"On one core" is the CPU-time figure. Because a shared or loaded machine runs Python several times slower than
an idle one, the parse child also times a fixed reference loop (``sum(range(10**6))``, about 10 ms on an idle
modern core) before and after parsing, and prints the throughput scaled to that reference core. The figures
and their ratio to the targets are printed; nothing is asserted. The synthetic text is pessimistic for the
timestamp caches (a new minute for most messages).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from fixtures import REPO, copy_configs  # bench/fixtures.py

TARGET_MBPS = 20.0
TARGET_RSS_MB = 300.0

NAMES = ["김민준", "이서연", "박지호", "최유나", "정우진", "한예린", "산책러/서울/3기", "Alice", "오지훈 캡스톤"]
WORDS = ["오늘", "내일", "점심", "뭐", "먹을까", "ㅋㅋㅋ", "좋아", "그래", "회의", "자료", "올려", "주세요", "확인",
         "했어요", "ok", "see", "you", "soon", "진짜", "대박", "아니", "근데", "우리", "몇", "시에", "만나?"]
BODIES_SPECIAL = ["사진", "이모티콘", "사진 3장", "동영상", "삭제된 메시지입니다.", "파일: 회의록.pdf", "보이스톡 해요"]


def _body(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:
        return rng.choice(BODIES_SPECIAL)
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
    if r > 0.95:  # multi-line body with a " : " continuation and a blank line
        text += "\n요청인원 : 4명\n\n" + " ".join(rng.choice(WORDS) for _ in range(5))
    return text


def _ko_time(t: datetime) -> str:
    h = t.hour % 12 or 12
    return f"{'오전' if t.hour < 12 else '오후'} {h}:{t.minute:02d}"


def generate(path: Path, mb: float, fmt: str, seed: int = 0) -> int:
    """Write a synthetic export of >= mb MB; returns the number of user messages written."""
    rng = random.Random(seed)
    target = int(mb * 1e6)
    t = datetime(2016, 1, 1, 9, 0)
    n_msg = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        if fmt == "android_ko":
            fh.write("\ufeff벤치마크 방 12 카카오톡 대화\r\n저장한 날짜 : 2025년 3월 9일 오후 5:47\n\n\r\n")
        elif fmt == "windows_ko":
            fh.write("벤치마크 방 님과 카카오톡 대화\r\n저장한 날짜 : 2025-03-09 17:47:00\r\n\r\n")
        elif fmt == "csv":
            fh.write("Date,User,Message\n")
        else:
            raise SystemExit(f"unsupported --format {fmt}")
        day = None
        buf: list[str] = []
        written = 0
        while written < target:
            t += timedelta(seconds=rng.randint(0, 240))
            if t.date() != day:
                day = t.date()
                if fmt == "android_ko":
                    buf.append(f"\r\n{t.year}년 {t.month}월 {t.day}일 {_ko_time(t)}\r\n")
                elif fmt == "windows_ko":
                    wd = "월화수목금토일"[t.weekday()]
                    buf.append(f"--------------- {t.year}년 {t.month}월 {t.day}일 {wd}요일 ---------------\r\n")
            name = rng.choice(NAMES)
            if rng.random() < 0.01:
                if fmt == "android_ko":
                    buf.append(f"{t.year}년 {t.month}월 {t.day}일 {_ko_time(t)}, {name}님이 들어왔습니다.\r\n")
                elif fmt == "windows_ko":
                    buf.append(f"{name}님이 들어왔습니다.\r\n")
                else:
                    buf.append(f'{t:%Y-%m-%d %H:%M:%S},"{name}","{name} joined this chatroom."\n')
                continue
            body = _body(rng)
            n_msg += 1
            if fmt == "android_ko":
                buf.append(f"{t.year}년 {t.month}월 {t.day}일 {_ko_time(t)}, {name} : {body}\r\n")
            elif fmt == "windows_ko":
                buf.append(f"[{name}] [{_ko_time(t)}] {body}\r\n")
            else:
                quoted = body.replace('"', '""')
                buf.append(f'{t:%Y-%m-%d %H:%M:%S},"{name}","{quoted}"\n')
            if len(buf) >= 4096:
                chunk = "".join(buf)
                fh.write(chunk)
                written += len(chunk.encode("utf-8"))
                buf.clear()
        fh.write("".join(buf))
    return n_msg


# ------------------------------------------------------------------------------------------------ child phases
def _phase_parse(path: str) -> dict:
    from chatbot.kakao import iter_records

    cal0 = calibrate()
    t0, c0 = time.perf_counter(), time.process_time()
    info, it = iter_records(path, "나")
    n = users = 0
    for rec in it:
        n += 1
        users += rec.is_user_message
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    cal = (cal0 + calibrate()) / 2
    return {"seconds": dt, "cpu_seconds": dc, "calibration_ms": cal, "records": n, "messages": users,
            "format": info.format}


def _phase_organize(root: str) -> dict:
    from chatbot.config import load_config
    from chatbot.kakao.organize import organize

    cfg = load_config(Path(root) / "configs")
    t0 = time.perf_counter()
    organize(cfg, dry=False)
    dt = time.perf_counter() - t0
    manifest = json.loads((cfg.path(cfg.paths.raw.manifest)).read_text(encoding="utf-8"))
    return {"seconds": dt, "messages": sum(e["messages"] for e in manifest)}


def calibrate() -> float:
    """CPU ms of a fixed pure-Python loop (about 10 ms on an unloaded modern core): how fast this core is right
    now, so that figures taken on a loaded or slow machine can be put in proportion."""
    best = float("inf")
    for _ in range(5):
        c0 = time.process_time()
        sum(range(10**6))
        best = min(best, time.process_time() - c0)
    return best * 1000


def _run_child(phase: str, arg: str) -> dict:
    """Run one phase in a fresh interpreter; returns its result plus the child's peak RSS (MB)."""
    out = subprocess.run([sys.executable, __file__, "--child", phase, arg], check=True, capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=100.0, help="size of the synthetic export (MB)")
    ap.add_argument("--format", default="android_ko", choices=["android_ko", "windows_ko", "csv"])
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--child", nargs=2, metavar=("PHASE", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        phase, arg = args.child
        res = _phase_parse(arg) if phase == "parse" else _phase_organize(arg)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps(res))
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_parse_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        root = work / "project"
        if root.exists():
            shutil.rmtree(root)
        copy_configs(root)
        inbox = root / "data" / "raw" / "inbox"
        inbox.mkdir(parents=True)
        ext = ".csv" if args.format == "csv" else ".txt"
        export = inbox / f"KakaoTalk_bench{ext}"
        t0 = time.perf_counter()
        n_msg = generate(export, args.mb, args.format)
        size_mb = export.stat().st_size / 1e6
        print(f"generated {args.format} export: {size_mb:.1f} MB, {n_msg} messages ({time.perf_counter() - t0:.1f}s)")

        p = _run_child("parse", str(export))
        mbps, cpu_mbps, cal = size_mb / p["seconds"], size_mb / p["cpu_seconds"], p["calibration_ms"]
        print(f"parse    : {p['seconds']:.2f}s wall = {mbps:.1f} MB/s; {p['cpu_seconds']:.2f}s CPU = "
              f"{cpu_mbps:.1f} MB/s "
              f"on one core ({cpu_mbps / TARGET_MBPS:.2f}x the {TARGET_MBPS:.0f} MB/s target); peak RSS "
              f"{p['peak_rss_mb']:.0f} MB; records {p['records']}, messages {p['messages']}"
              f"{'' if p['messages'] == n_msg else '  MISMATCH vs generated ' + str(n_msg)}")
        print(f"           reference loop {cal:.1f} ms during the parse (10 ms = unloaded modern core): scaled to "
              f"that core, {cpu_mbps * cal / 10:.1f} MB/s")
        o = _run_child("organize", str(root))
        ombps = size_mb / o["seconds"]
        print(f"organize : {o['seconds']:.2f}s  {ombps:.1f} MB/s  peak RSS {o['peak_rss_mb']:.0f} MB "
              f"({o['peak_rss_mb'] / TARGET_RSS_MB:.2f}x the {TARGET_RSS_MB:.0f} MB limit)  "
              f"messages {o['messages']}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
