"""How `organize` scales with the number of exports (issue 11 item 10: it compared every pair of files).

    python bench/bench_organize.py [--exports 1000] [--rooms 400] [--pairwise-upto 200]

Writes ``--exports`` small invented exports (Windows-Korean ``.txt`` with the room in the title, and PC ``.csv``
whose room is in the file name) of ``--rooms`` rooms: most rooms are exported several times with overlapping
date ranges, some re-exports carry a renamed title (so they must be matched by content), and a few rooms share a
title with another room (so the content check must keep them apart). Then:

* organize — a full ``organize`` of a throw-away project holding 1/4, 1/2 and all of the exports (wall and CPU
  seconds, CPU per export: a flat per-export time = no quadratic term). Wall time includes two fsyncs per copied
  file (atomic copies), which a busy shared disk makes dominate;
* grouping — the room-grouping step alone on the scanned files: the indexed ``group_rooms`` vs the old
  every-pair comparison (kept here as the reference) on the first ``--pairwise-upto`` files, with a check that
  both give the same groups, and the indexed one on all files.

Target: 1,000 exports organize in seconds. Figures and ratios are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from fixtures import REPO, copy_configs, pairwise_groups  # bench/fixtures.py

sys.path.insert(0, str(REPO))

WORDS = ("오늘 내일 점심 저녁 뭐 먹을까 ㅋㅋㅋ 좋아 그래 회의 자료 올려 확인 했어요 진짜 대박 아니 근데 우리 몇 시에 만나 "
         "영화 주말 산책 비와 우산 고마워 미안 괜찮아 어디야 도착").split()
SPEAKERS = ("하늘", "바다", "구름", "노을", "새벽", "별빛", "도토리", "콩떡")


def _room_timeline(rng: random.Random, k: int) -> list[tuple[datetime, str, str]]:
    t = datetime(2019, 1, 1) + timedelta(days=rng.randint(0, 900), minutes=rng.randint(0, 1000))
    people = rng.sample(SPEAKERS, rng.randint(2, 4))
    msgs = []
    for i in range(rng.randint(200, 400)):
        t += timedelta(minutes=rng.choice((0, 1, 1, 2, 3, 7, 30, 300)))
        msgs.append((t, rng.choice(people), " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + f" {k}"))
    return msgs


def _windows_ko(title: str, msgs) -> str:
    out = [f"{title} 님과 카카오톡 대화\r\n", f"저장한 날짜 : {msgs[-1][0]:%Y-%m-%d %H:%M:%S}\r\n", "\r\n"]
    day = None
    for t, who, text in msgs:
        if t.date() != day:
            day = t.date()
            out.append(f"--------------- {t.year}년 {t.month}월 {t.day}일 {'월화수목금토일'[t.weekday()]}요일 "
                       "---------------\r\n")
        out.append(f"[{who}] [{'오전' if t.hour < 12 else '오후'} {t.hour % 12 or 12}:{t.minute:02d}] {text}\r\n")
    return "".join(out)


def _csv(msgs) -> str:
    buf = io.StringIO()
    buf.write("Date,User,Message\n")
    w = csv.writer(buf, lineterminator="\n")
    for t, who, text in msgs:
        w.writerow([f"{t:%Y-%m-%d %H:%M:%S}", who, text])
    return buf.getvalue()


def write_exports(folder: Path, n_exports: int, n_rooms: int, seed: int = 3) -> list[Path]:
    rng = random.Random(seed)
    rooms = [(f"방{k:04d}" if k % 50 else "동창회", _room_timeline(rng, k)) for k in range(n_rooms)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_exports):
        k = i if i < n_rooms else rng.randrange(n_rooms)  # every room once, then re-exports
        title, msgs = rooms[k]
        a = rng.randrange(len(msgs) // 2)
        part = msgs[a:a + rng.randint(60, 160)]
        if i >= n_rooms and rng.random() < 0.2:
            title = title + " (새 이름)"  # renamed room: matched by content only
        if rng.random() < 0.3:
            p = folder / f"KakaoTalk_Chat_{title}_{i:05d}.csv"
            p.write_text(_csv(part), encoding="utf-8")
        else:
            p = folder / f"KakaoTalk_{i:05d}.txt"
            p.write_text(_windows_ko(title, part), encoding="utf-8", newline="")
        paths.append(p)
    return paths


def _project(root: Path, exports: list[Path]):
    from chatbot.config import load_config

    copy_configs(root)
    inbox = root / "data" / "raw" / "inbox"
    inbox.mkdir(parents=True)
    for p in exports:
        shutil.copy(p, inbox / p.name)
    return load_config(root / "configs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exports", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=400)
    ap.add_argument("--pairwise-upto", type=int, default=200)
    args = ap.parse_args()
    from chatbot.kakao import organize as org

    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench_organize_") as tmp:
        tmp = Path(tmp)
        exports = write_exports(tmp / "exports", args.exports, args.rooms)
        mb = sum(p.stat().st_size for p in exports) / 1e6
        print(f"{len(exports)} exports of {args.rooms} rooms, {mb:.1f} MB")
        for n in sorted({max(1, args.exports // 4), max(1, args.exports // 2), args.exports}):
            cfg = _project(tmp / f"project_{n}", exports[:n])
            devnull = open(os.devnull, "w")
            old, sys.stdout = sys.stdout, devnull
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                org.organize(cfg)
            finally:
                sys.stdout = old
                devnull.close()
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            rooms = {e["room_id"] for e in org.load_manifest(cfg)}
            print(f"organize {n:5d} exports: {dt:7.2f} s wall, {cpu:6.2f} s cpu ({1000 * cpu / n:.1f} ms cpu per "
                  f"export), {len(rooms)} rooms")
        stats = [org.scan_file(p, "나") for p in exports]
        m = min(args.pairwise_upto, len(stats))
        t0 = time.perf_counter()
        ref = pairwise_groups(stats[:m])
        t_pair = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = org.group_rooms(stats[:m], "나")
        t_idx = time.perf_counter() - t0
        print(f"grouping {m} files: every pair {t_pair:.2f} s, indexed {t_idx:.3f} s "
              f"({t_pair / max(t_idx, 1e-9):.0f}x), same groups: {got == ref}")
        t0 = time.perf_counter()
        org.group_rooms(stats, "나")
        t_all = time.perf_counter() - t0
        est = t_pair * (len(stats) / m) ** 2
        print(f"grouping {len(stats)} files: indexed {t_all:.3f} s; every pair would take ~{est:.0f} s "
              f"(quadratic extrapolation of the {m}-file time)")


if __name__ == "__main__":
    main()
