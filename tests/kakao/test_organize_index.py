"""organize's indexed room grouping gives exactly the groups of comparing every pair of files (the old rule)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from types import SimpleNamespace

from bench.fixtures import pairwise_groups  # the reference: every pair compared, as organize did before the index
from chatbot.kakao import organize as org


def _files(rng: random.Random, n_rooms: int, n_files: int, cap: int | None):
    words = ["밥", "먹자", "ㅋㅋ", "내일", "회의", "좋아", "영화", "어디", "가자", "늦어"]
    rooms = []
    for r in range(n_rooms):
        t = datetime(2020, 1, 1) + timedelta(minutes=rng.randint(0, 3000))
        msgs = []
        for _ in range(rng.randint(20, 120)):
            t += timedelta(minutes=rng.choice((0, 1, 2, 5)))
            msgs.append((t, " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))))
        rooms.append(msgs)
    titles = ["가족", "가족 ", "동기", "", "", "회사, 팀장, 나", "팀장,회사,나"]
    files = []
    for _ in range(n_files):
        msgs = rooms[rng.randrange(n_rooms)]
        a = rng.randrange(len(msgs))
        b = rng.randint(a + 1, len(msgs))
        sk = org.Sketch()
        for ts, text in msgs[a:b]:
            sk.add(ts, text if rng.random() > 0.1 else text + "!")  # exports differ a little
        if cap is not None and rng.random() < 0.5:
            while len(sk.items) > cap:  # coarse sampling, as in a big export
                sk.thin()
        files.append(SimpleNamespace(info=SimpleNamespace(room=rng.choice(titles)), sketch=sk))
    return files


def test_indexed_grouping_equals_comparing_every_pair():
    merged_somewhere = 0
    for seed in range(40):
        rng = random.Random(seed)
        files = _files(rng, rng.randint(1, 8), rng.randint(2, 30), cap=rng.choice((None, 8, 30)))
        got = org.group_rooms(files, "나")
        assert got == pairwise_groups(files), seed
        merged_somewhere += len(set(got)) < len(got)
    assert merged_somewhere > 20  # the cases do exercise merging
