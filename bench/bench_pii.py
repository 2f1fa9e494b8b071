"""PII masking speed and false-positive rate.

    python bench/bench_pii.py [--messages 300000]

1. Speed: masks a generated stream of Korean chat messages (words from the XPersona dialogues in ../shared/data when
   present, else a built-in word list; numbers, times, prices, "." and "@" sprinkled in as in real chats, and ~1 %
   of messages carrying a phone number, e-mail, link, account or street address) with the speakers' names known,
   and prints messages/s and µs per message. Preprocess masks every message once, so this is the PII share of
   ``bench_preprocess.py``'s "sessions" time.
2. False positives: the ordinary-sentence corpus ``tests/fixtures/pii/ordinary_ko.txt`` (times, prices, scores,
   dates, versions, counts, file names, places) must pass through unchanged: prints how many lines were changed.
3. Recall on the invented examples of issue 11 (every one must become a placeholder).

Run it with ``PYTHONPATH`` pointing at another checkout to compare two versions of the rules on the same data.
"""

from __future__ import annotations

import argparse
import random
import time

from fixtures import REPO, korean_words  # bench/fixtures.py

from chatbot.data.pii import PiiMasker

NAMES = ["김하늘", "박서준", "이도현(Leo)", "초코우유", "민트초코칩", "John Park"]
SPRINKLE = ["3시", "10:30", "15,000원", "2024.3.5", "3-2로", "v1.2", "5명", "ㅋㅋ.", "응.그래", "@하늘", "1.5배",
            "2호선", "101번", "3층", "12/25", "2시간", "95점"]
PII = ["010-2345-6789", "(010)2345-6789", "010 - 2345 - 6789", "name@gmail", "sun (at) example.com",
       "https://example.com/a?b=1", "shop.example.store/item", "http://예시.com/경로", "3333011234567",
       "신한 110123456789", "서울시 강남구 테헤란로 123", "경기도 성남시 분당구 판교역로 235, 101동 1203호"]
ISSUE_EXAMPLES = ["(010)1234-5678", "010 - 1234 - 5678", "010_1234_5678", "010/1234/5678", "http://예시.com/경로",
                  "한글도메인.한국/경로", "shop.example.store/item", "name (at) example.com", "name@gmail",
                  "3333011234567", "서울시 강남구 테헤란로 123", "경기도 성남시 분당구 판교역로 235, 101동 1203호"]


def messages(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    words = korean_words()
    out = []
    for _ in range(n):
        parts = rng.choices(words, k=rng.choice((1, 2, 3, 4, 6, 9)))
        if rng.random() < 0.15:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(SPRINKLE))
        if rng.random() < 0.01:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(PII))
        out.append(" ".join(parts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300_000)
    args = ap.parse_args()
    msgs = messages(args.messages)
    masker = PiiMasker(names=NAMES)
    t0 = time.perf_counter()
    c0 = time.process_time()
    for m in msgs:
        masker.mask(m)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"speed: {len(msgs):,} messages in {wall:.2f}s wall / {cpu:.2f}s CPU = {len(msgs) / cpu:,.0f} messages/s "
          f"({cpu / len(msgs) * 1e6:.2f} µs per message, CPU); replaced: {dict(masker.counts)}")

    corpus = REPO / "tests" / "fixtures" / "pii" / "ordinary_ko.txt"
    lines = [x for x in corpus.read_text(encoding="utf-8").splitlines() if x and not x.startswith("#")]
    checker = PiiMasker(names=NAMES)
    changed = [x for x in lines if checker.mask(x) != x]
    print(f"false positives: {len(changed)}/{len(lines)} ordinary sentences changed "
          f"({100 * len(changed) / len(lines):.1f} %)" + (f": {changed[:5]}" if changed else ""))
    missed = [x for x in ISSUE_EXAMPLES if "\ue000" not in checker.mask(x)]
    print(f"issue 11 examples masked: {len(ISSUE_EXAMPLES) - len(missed)}/{len(ISSUE_EXAMPLES)}"
          + (f"; missed: {missed}" if missed else ""))


if __name__ == "__main__":
    main()
