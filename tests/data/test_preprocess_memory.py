"""preprocess holds one room at a time (memory bounded by the largest room, not the corpus): rooms are read one by
one and released, sessions wait in a private spill file that is gone afterwards, and the outputs are the same
as building from the rooms in memory. Peak-RSS figures for 100 MB / 300 MB corpora: bench/bench_preprocess.py."""

from __future__ import annotations

import weakref

from chatbot.config import load_config
from chatbot.data import encode
from chatbot.data import preprocess as pp
from tests.support.preprocess import chat_room, output_bytes


class _Room(list):
    """A room's records (a list subclass so that it can be tracked with a weak reference)."""

    __hash__ = object.__hash__


def test_rooms_are_read_one_at_a_time_and_the_spill_is_removed(project, monkeypatch):
    cfg = load_config(project / "configs")
    cfg.paths.processed.preprocess.vocab_size = 600
    keys = [f"room-{k}" for k in range(5)]
    alive: weakref.WeakSet = weakref.WeakSet()  # rooms returned by load_room and still referenced
    held_at_load: list[int] = []
    loads: list[str] = []

    def fake_load(_cfg, key):
        held_at_load.append(len(alive))  # rooms still referenced anywhere when the next one is read
        loads.append(key)
        room = _Room(chat_room(6, seed=keys.index(key), names=("나", f"친구{keys.index(key)}", "공통")))
        alive.add(room)
        return room

    monkeypatch.setattr(pp, "_manifest_rooms", lambda _cfg: (keys, len(keys), "h" * 64, "i" * 64))
    monkeypatch.setattr(pp, "load_room", fake_load)
    monkeypatch.setattr(encode, "CHUNK_TURNS", 32)
    pp.preprocess(cfg)
    assert held_at_load and max(held_at_load) == 0
    # two passes over the rooms; the room read last in the first pass is reused, not read again
    assert loads == keys + keys[:-1]
    out = cfg.processed_dir
    assert pp.check_outputs(out, full=True) is None
    assert not [p.name for p in out.iterdir() if "spill" in p.name]

    # the same bytes as a build from every room held in memory at once
    pp.build([chat_room(6, seed=k, names=("나", f"친구{k}", "공통")) for k in range(5)],
             cfg.paths.processed.preprocess, project / "in_memory",
             fingerprint=json_fingerprint(out))
    skip = ("stats.json", pp.LOCK)
    assert output_bytes(project / "in_memory", exclude=skip) == output_bytes(out, exclude=skip)


def json_fingerprint(out) -> str:
    import json

    return json.loads((out / "speakers.json").read_text(encoding="utf-8"))["fingerprint"]


def test_a_spill_left_by_a_killed_build_is_removed(tmp_path):
    (tmp_path / ".sessions.spill.abc123.tmp").write_bytes(b"private turns")
    (tmp_path / "unrelated.tmp").write_bytes(b"x")
    pp.recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.tmp"]
