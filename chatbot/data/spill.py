"""The session spill of a build: sessions written to a private temp file while the rooms are read, and read
back one at a time (so preprocess never holds more than one room's sessions in memory)."""

from __future__ import annotations

import marshal
from array import array
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from . import conversation as conv
from .outputs import SPILL_NAME, TempOut

_EPOCH = datetime(1, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


class Spill:
    """Sessions written to a private temp file in the output folder while the rooms are read, and read back one
    session at a time, so no more than one room's sessions are ever in memory. Per session only a row of typed
    arrays stays in memory (start, room, useful, offset, size, turns: 37 bytes). The turns are ``marshal``-ed
    plain ints and strings (fast, and loading it runs nothing); the file lives only during the build (recover()
    removes one a killed build left behind)."""

    NAME = SPILL_NAME

    def __init__(self, out_dir: Path) -> None:
        self.out = TempOut(out_dir, self.NAME)
        self.reader: IO[bytes] | None = None
        self.start, self.room, self.useful = array("q"), array("i"), array("b")
        self.offset, self.size, self.turns_of = array("q"), array("q"), array("q")
        self.pos = 0

    def __enter__(self) -> "Spill":
        return self

    def __exit__(self, *exc) -> None:
        for fh in (self.out.fh, self.reader):
            if fh is not None:
                fh.close()
        self.out.path.unlink(missing_ok=True)

    @property
    def sessions(self) -> int:
        return len(self.offset)

    @property
    def total_turns(self) -> int:
        return int(sum(self.turns_of))

    def add(self, session: conv.Session, useful: bool) -> None:
        blob = marshal.dumps([(turn.speaker, turn.length, turn.text) for turn in session.turns])
        self.out.fh.write(blob)
        self.start.append((session.start - _EPOCH) // _MICROSECOND)
        self.room.append(session.room)
        self.useful.append(useful)
        self.offset.append(self.pos)
        self.size.append(len(blob))
        self.turns_of.append(len(session.turns))
        self.pos += len(blob)

    def finish(self) -> None:
        self.out.fh.flush()
        self.reader = open(self.out.path, "rb")

    def split(self, val_fraction: float) -> tuple["SpilledSplit", "SpilledSplit"]:
        """(train, val) exactly as conversation.split_sessions would cut these sessions (sorted by start, then
        room; a stable sort, so ties keep the order the sessions were added in within a room)."""
        order = np.lexsort((np.frombuffer(self.room, dtype=np.int32), np.frombuffer(self.start, dtype=np.int64)))
        flags = np.frombuffer(self.useful, dtype=np.int8)[order].astype(bool)
        cut, cut_turn = conv.split_point(flags, val_fraction, lambda i: self.turns_of[int(order[i])])
        if cut_turn is None:
            return SpilledSplit(self, order[:cut]), SpilledSplit(self, order[cut:])
        cut_session = int(order[cut])
        return (SpilledSplit(self, order[:cut], tail=(cut_session, 0, cut_turn)),
                SpilledSplit(self, order[cut + 1:], head=(cut_session, cut_turn, None)))

    def session(self, index: int, first: int = 0, stop: int | None = None) -> conv.Session:
        """Session ``i`` (its turns ``lo:hi``). Turn times are not spilled (nothing after the split needs them)."""
        assert self.reader is not None
        self.reader.seek(self.offset[index])
        rows = marshal.loads(self.reader.read(self.size[index]))
        if (first, stop) != (0, None):
            rows = rows[first:stop]
        return conv.Session(self.room[index],
                            [conv.Turn(speaker, text, length, None, None) for speaker, length, text in rows])


class SpilledSplit:
    """One split's sessions in order — ``head`` (a session's later turns), the sessions ``order``, ``tail`` (a
    session's first turns) — read from the spill on every iteration; ``len`` needs no reading."""

    def __init__(self, spill: Spill, order: np.ndarray, head: tuple | None = None, tail: tuple | None = None):
        self.spill, self.order, self.head, self.tail = spill, order, head, tail

    def __len__(self) -> int:
        return len(self.order) + (self.head is not None) + (self.tail is not None)

    def __iter__(self) -> Iterator[conv.Session]:
        if self.head is not None:
            yield self.spill.session(*self.head)
        for index in self.order:
            yield self.spill.session(int(index))
        if self.tail is not None:
            yield self.spill.session(*self.tail)
