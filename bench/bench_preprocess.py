"""Preprocess throughput and peak memory on generated chat of ≥ 100 MB (target: < 60 s, < 2 GB on 2 cores).

    python bench/bench_preprocess.py [--mb 100] [--rooms 1] [--repo DIR] [--keep DIR]

``--rooms N`` splits the ``--mb`` megabytes into N rooms (one export each, own title, some speakers shared):
preprocess holds one room at a time, so its peak RSS should follow the largest room, not the corpus — compare
``--mb 100 --rooms 5`` with ``--mb 300 --rooms 15`` (same 20 MB rooms, three times the corpus). ``--repo`` runs
organize and preprocess from another checkout (e.g. the version before a change) on the same generated data.

1. Writes a synthetic Windows-Korean KakaoTalk export (six invented speakers; message words drawn from the XPersona
   dialogues in ../shared/data when present, plus random syllables for a long tail; photos, emoticons, bursts,
   multi-line messages, phone numbers and links sprinkled in) into a fresh workspace's inbox.
2. Runs ``organize`` (reported separately), then ``preprocess`` in a child process — the real parser, room merge,
   filters, PII masking, tokenizer training and encoding — and reports wall time, MB/s of raw export and the
   peak RSS of the main process and of the largest encode worker, with the ratios to the targets. CPU seconds
   are printed too: wall times on a machine shared with other work are inflated, CPU times much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from fixtures import REPO, korean_words  # bench/fixtures.py

TARGET_S, TARGET_RSS_MB = 60.0, 2048.0
SPEAKERS = ["나", "별빛토끼", "초코우유", "파란하늘", "고등어구이", "민트초코칩"]
SYLLABLES = "가나다라마바사아자차카타파하거너더러머버서어저처커터퍼허고노도로모보소오조초코토포호구누두루무부수우주"


def write_export(path: Path, megabytes: float, seed: int = 1, title: str = "벤치마크방") -> int:
    """A Windows-Korean export of about ``megabytes`` MB; returns the number of messages."""
    rng = random.Random(seed)
    words = korean_words()
    target = int(megabytes * 1_000_000)
    t = datetime(2019, 1, 1, 8, 0)
    day = None
    n = size = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        head = f"{title} 님과 카카오톡 대화\r\n저장한 날짜 : 2024-06-01 12:00:00\r\n\r\n"
        fh.write(head)
        size += len(head.encode())
        buf: list[str] = []
        while size < target:
            t += timedelta(minutes=rng.choice((0, 0, 0, 1, 1, 2, 3, 5, 12, 45, 150)))
            if t.date() != day:
                day = t.date()
                buf.append(f"--------------- {t.year}년 {t.month}월 {t.day}일 {'월화수목금토일'[t.weekday()]}요일 "
                           f"---------------\r\n")
            r = rng.random()
            if r < 0.03:
                body = "사진"
            elif r < 0.05:
                body = "이모티콘"
            elif r < 0.055:
                body = f"내 번호 010-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)} 로 연락 줘"
            elif r < 0.06:
                body = f"https://example.com/post/{rng.randint(1, 10**6)} 이거 봐"
            else:
                k = rng.randint(1, 9)
                i = rng.randrange(len(words) - k)
                body = " ".join(words[i : i + k])
                if rng.random() < 0.15:
                    body += " " + "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
                body += rng.choice(("", "", "", " ㅋㅋ", " ㅋㅋㅋㅋ", " ㅠㅠ", "?", "!!", "~"))
                if rng.random() < 0.01:
                    body += "\n" + " ".join(words[i : i + 3])
            h = t.hour
            buf.append(f"[{rng.choice(SPEAKERS)}] [{'오전' if h < 12 else '오후'} {h % 12 or 12}:{t.minute:02d}] "
                       f"{body}\r\n")
            n += 1
            if len(buf) >= 4096:
                chunk = "".join(buf)
                fh.write(chunk)
                size += len(chunk.encode())
                buf.clear()
        fh.write("".join(buf))
    return n


def _child(code: str, workspace: Path, repo: Path = REPO) -> tuple[float, float, float, str]:
    """Run python code in a fresh process; (wall s, its own peak RSS MB, its largest worker's peak RSS MB, output)."""
    code += ("; import resource; s, c = resource.getrusage(resource.RUSAGE_SELF), "
             "resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print('PEAK_RSS_KB', s.ru_maxrss, c.ru_maxrss, s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(workspace / "configs")], capture_output=True, text=True,
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"child failed:\n{proc.stdout}\n{proc.stderr}")
    lines = proc.stdout.splitlines()
    self_kb, workers_kb, cpu_self, cpu_workers = next(
        map(float, x.split()[1:]) for x in lines if x.startswith("PEAK_RSS_KB"))
    out = "\n".join(x for x in lines if not x.startswith("PEAK_RSS_KB")) + proc.stderr
    out += f"\nCPU time: main process {cpu_self:.1f}s + worker processes {cpu_workers:.1f}s"
    return wall, self_kb / 1024.0, workers_kb / 1024.0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="size of the generated export in MB (default 100)")
    ap.add_argument("--rooms", type=int, default=1, help="split the chat into this many rooms (default 1)")
    ap.add_argument("--repo", type=Path, default=REPO, help="run the stages from this checkout (default: this one)")
    ap.add_argument("--keep", type=Path, help="keep the workspace in this folder")
    args = ap.parse_args()
    repo = args.repo.resolve()
    ws = Path(tempfile.mkdtemp(prefix="bench_preprocess_")) if args.keep is None else args.keep
    try:
        shutil.copytree(repo / "configs", ws / "configs", dirs_exist_ok=True)  # the config keys of that version
        inbox = ws / "data" / "raw" / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        n = 0
        raw_mb = 0.0
        for k in range(args.rooms):
            export = inbox / f"KakaoTalk_20240601_1200_00_{k:03d}_group.txt"
            n += write_export(export, args.mb / args.rooms, seed=1 + k, title=f"벤치마크방 {k}" if k else "벤치마크방")
            raw_mb += export.stat().st_size / 1e6
        print(f"generated {raw_mb:.1f} MB in {args.rooms} room(s) of {raw_mb / args.rooms:.1f} MB, {n:,} messages, "
              f"in {time.perf_counter() - t0:.1f}s; running {repo}")

        org_s, _, _, org_out = _child("import sys; from chatbot.config import load_config; "
                               "from chatbot.kakao.organize import organize; organize(load_config(sys.argv[1]))", ws, repo)
        print(f"organize: {org_s:.1f}s ({org_out.strip().splitlines()[-1]})")
        pre_s, rss_mb, worker_mb, out = _child("import sys; from chatbot.config import load_config; "
                                    "from chatbot.data.preprocess import preprocess; preprocess(load_config(sys.argv[1]))",
                                    ws, repo)
        print(out.strip())
        stats = json.loads((ws / "data" / "processed" / "stats.json").read_text(encoding="utf-8"))
        print(f"preprocess (parse + merge + filters + PII + tokenizer training + encoding + writes): {pre_s:.1f}s "
              f"= {raw_mb / pre_s:.2f} MB/s; peak RSS {rss_mb:.0f} MB (main process); largest encode worker "
              f"{worker_mb:.0f} MB (forked: counts pages shared with the main process)")
        print(f"tokens: train {stats['tokens']['train']:,}, val {stats['tokens']['val']:,}; "
              f"vocab {stats['vocab_size']}")
        scale = 100.0 / raw_mb
        print(f"ratio to target (100 MB in {TARGET_S:.0f}s): {pre_s * scale / TARGET_S:.2f}x of budget "
              f"({'OK' if pre_s * scale < TARGET_S else 'OVER'}); peak RSS {rss_mb / TARGET_RSS_MB:.2f}x of "
              f"{TARGET_RSS_MB:.0f} MB ({'OK' if rss_mb < TARGET_RSS_MB else 'OVER'})")
    finally:
        if args.keep is None:
            shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
