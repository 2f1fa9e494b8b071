"""`preprocess`: organized exports → private, training-ready token and loss-mask memmaps in ``data/processed/``.

Pipeline (pure steps in :mod:`chatbot.data.conversation` and :mod:`chatbot.data.pii`)::

    manifest → every room's merged timeline (organize/parser) → pseudonyms → clean + mask PII + filter
             → sessions → turns → train/val split by time → BPE tokenizer (train split only)
             → {train,val}.bin + loss masks + window starts → preview.json, speakers.json, stats.json

Every room in the manifest is used; a session never spans two rooms; one pseudonym table covers all rooms (the
same nickname in two rooms is one person).

Keys of ``paths.yaml`` → ``processed.preprocess`` (precise meaning):

``session_gap_minutes``  A new session starts when the time between two consecutive *kept* messages of a room is
                         longer than this (exactly this long stays in the session). Every session starts with
                         ``<|bos|>``.
``merge_same_speaker``   Merge a speaker's consecutive messages into one turn (joined with a newline) ...
``merge_gap_minutes``    ... when each follows the turn's previous message within this many minutes (gap ≤ value;
                         timestamps have minute precision, so 0 merges messages of the same minute only) ...
``max_merged_chars``     ... and while the merged turn has at most this many characters (newlines count).
``min_message_chars``    Drop a text message with fewer characters than this after cleaning and PII masking (a
                         placeholder counts as one character) — reason ``too_short``.
``max_message_chars``    Drop a text message with more characters than this — reason ``too_long``.
``min_target_chars``     A turn with fewer characters than this is context only: never a loss target.
``drop_low_signal``      Drop text messages with nothing but punctuation, spaces and placeholders ("...", "?", a
                         lone URL) — reason ``low_signal`` — and sender-deleted messages (``deleted``). "ㅋㅋㅋ",
                         "ㅠㅠ", "^^" and emoji are signal and kept.
``media``                ``token``: a photo/video/emoticon/file/call/... record becomes its typed placeholder
                         (``<|photo|>`` …) inside the sender's turn; ``drop``: dropped (reason ``media``).
``system``               ``token``: a join/leave/invite/... event becomes a turn ``<|system|> <|eot|>`` without a
                         speaker token (the event text, which names people, is never kept); ``drop``: dropped
                         (reason ``system``). System turns are never targets.
``corpus_mode``          ``context_windows``: the only mode — sessions are concatenated and training windows start
                         at turn boundaries (below).
``context_turns``        A window for target turn *t* starts ``context_turns`` turns before *t* in its session (at
                         the session's ``<|bos|>`` when fewer precede it). The trainer reads ``block_size + 1``
                         tokens from there, so the target is inside the window when the context is short enough.
``min_context_turns``    A turn is a target only when at least this many turns precede it in its session (0 lets
                         a session's first turn be a target).
``sample_stride``        Eligible target turns of a split are numbered 0, 1, 2 …; every ``sample_stride``-th one
                         (0, stride, 2·stride …) yields a window start. The loss mask is not affected: every
                         eligible target turn carries loss wherever a window covers it.
``target``               ``room``: every speaker's turns are targets (the bot learns the room's style); a speaker's
                         real name exactly as the export writes it (or a pseudonym such as ``S2``): only that
                         speaker's turns are targets. An unknown name is an error (no names are echoed).
``val_fraction``         Validation = every session after one point in time, chosen so that it holds the latest
                         ``round(val_fraction × u)`` of the u sessions that contain a target turn (at least one,
                         never all); with a single such session, that session is cut at a turn boundary instead.
``vocab_size``           BPE vocabulary size including the special tokens (the trainer may get fewer ids when the
                         corpus is too small to learn that many merges; stats.json has the real size).
``max_speakers``         Speakers ranked past this (by message count over all rooms) share ``<|spk:S0|>``.
``pii.*``                Which classes of personal data become placeholders (see :mod:`chatbot.data.pii`);
                         ``mention`` also covers speakers' names written inside messages.

Counting: ``messages.in`` is every record of the merged room timelines (system events included); each is either
kept (``messages.kept``, media and system events kept as tokens included) or counted under exactly one reason in
``messages.dropped`` (see :func:`chatbot.data.conversation.filter_records`), so in = kept + Σ dropped.

A *target* turn (loss mask 1 on its text tokens and its ``<|eot|>``; 0 on ``<|bos|>``, speaker tokens and every
other turn) is a non-system turn of a target speaker with ≥ ``min_target_chars`` characters and ≥
``min_context_turns`` preceding turns in its session.

Privacy: real names exist only in memory and in ``speakers.json`` (private; never published or logged). Speakers
are pseudonyms ``S1`` … (1 = most messages); names inside message text and @mentions become ``<|mention|>``;
phone numbers, e-mails, URLs, 주민등록번호, card and account numbers become typed placeholders before the
tokenizer ever sees the text. Log lines and errors carry counts only — no names, no room titles, no paths below
the organized folder.

Outputs are written to temp files, then committed by renames listed in a journal (``.preprocess-commit.json``),
``stats.json`` last: an interrupted build leaves the previous outputs untouched; a crash during the (milliseconds
long) commit is rolled forward by the next run. ``stats.json`` records size and sha256 of every other output, so a
reader can tell a consistent set. Re-running with the same exports and settings says "up to date" and does nothing.

Speed (100 MB export ≈ 1.3 M messages, 2 cores): the cyclic GC is paused during the build; the tokenizer trains on
an even sample of ≤ TOKENIZER_SAMPLE_CHARS characters of the train split; encoding uses :class:`FastEncoder`
(exactly the tokenizer's ids, several times faster) in worker processes for big corpora (forked on Linux,
spawned on Windows/macOS — the same bytes either way); token, mask and
start files are streamed chunk by chunk from numpy arrays. See bench/bench_preprocess.py.

Memory: a constant plus a small multiple of the largest room, whatever the number of rooms. Rooms are read one at
a time, twice (pass 1: speaker ranking and names to mask; pass 2: filter, mask, sessions — the room read last is
kept between the passes, so a one-room corpus is parsed once); each room's sessions go to a private spill file
(``.sessions.spill.*.tmp`` in the output folder, removed when the build ends) and only a few facts per session stay
in memory. The split, the tokenizer sample and the encoder read sessions back one at a time; chunks are made
lazily and at most two per worker wait for encoding. Per-corpus memory left: 37 bytes per session (typed arrays).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import marshal
import os
import re
import tempfile
import time
from collections import Counter, deque
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain, repeat
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from ..config import Config, PreprocessConfig, config_hash, to_dict
from ..errors import ChatbotError
from ..formats import processed
from ..formats.processed import FORMAT, JOURNAL, OUTPUT_FILES, SPLITS, VERSION
from ..formats.processed import check_outputs  # noqa: F401 (part of this module's interface: tests, status)
from ..fsio import atomic_write_json, fsync_dir, private_mkdir, read_json, sha256_file
from ..portable import pool_start_method, try_lock
from ..records import Record
from ..tokens import BOS, EOT, MAX_SPEAKERS, MEDIA_TOKENS, PII_TOKENS, speaker_token
from . import conversation as conv
from .pii import PII_CLASSES, PiiMasker
from .tokenizer import decode, special_id, train_tokenizer

LOCK = ".preprocess.lock"

TOKENIZER_SAMPLE_CHARS = 2_500_000  # train the BPE on at most ~this many characters of the train split
CHUNK_TURNS = 32_768  # turns encoded per batch
PARALLEL_MIN_TURNS = 200_000  # encode in worker processes from this many turns on
PREVIEW_WINDOWS = {"train": 3, "val": 2}
PREVIEW_TOKENS = 120

_SEGMENT_RE = re.compile("(\ue000[a-z_]+\ue001)")


def _log(msg: str) -> None:
    print(f"preprocess: {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ entry point
def preprocess(cfg: Config, force: bool = False) -> None:
    """Build ``cfg.processed_dir`` from every room in the organize manifest (no-op when already up to date)."""
    pcfg = cfg.paths.processed.preprocess
    out_dir = cfg.processed_dir
    rooms, files, inputs_hash, input_id = _manifest_rooms(cfg)
    fingerprint = _fingerprint(pcfg, cfg.paths.raw.self_name, input_id, _base_ref(cfg))
    base = _open_base(cfg)  # before any work: a missing base / library is one line
    private_mkdir(out_dir)
    with _exclusive(out_dir):
        recover(out_dir)
        if not force:
            reason = _stale_reason(out_dir, fingerprint)
            if reason is None:
                stats = read_json(out_dir / "stats.json")
                _log(f"{out_dir} is up to date ({stats['tokens']['train']} train / {stats['tokens']['val']} val "
                     f"tokens); nothing to do (use --force to rebuild)")
                return
            _log(f"building {out_dir} ({reason})")
        else:
            _log(f"building {out_dir} (--force)")
        with _no_gc():
            _build(_RoomLoader(cfg, rooms), len(rooms), pcfg, out_dir, self_name=cfg.paths.raw.self_name,
                   fingerprint=fingerprint, inputs={"rooms": len(rooms), "files": files, "inputs_hash": inputs_hash},
                   base=base)


def stale_reason(cfg: Config) -> str | None:
    """None when ``preprocess`` would find its outputs up to date, else a short reason (no private data in it).

    Cheap (reads the manifest and stats, hashes tokenizer.json; parses no export). For ``status`` and friends.
    """
    _rooms, _files, _inputs_hash, input_id = _manifest_rooms(cfg)
    return _stale_reason(cfg.processed_dir, _fingerprint(cfg.paths.processed.preprocess, cfg.paths.raw.self_name,
                                                         input_id, _base_ref(cfg)))


def _manifest_rooms(cfg: Config) -> tuple[list, int, str, str]:
    """(room keys, number of files, name-free hash of the export contents, private input id) from the manifest."""
    path = cfg.path(cfg.paths.raw.manifest)
    hint = "put your KakaoTalk exports in the inbox and run `python -m chatbot.ops organize` first"
    if not path.is_file():
        raise ChatbotError(f"no export manifest at {path}: {hint}")
    from ..kakao.organize import load_manifest

    entries = load_manifest(cfg)
    if not entries:
        raise ChatbotError(f"the export manifest {path} lists no exports: {hint}")
    rooms: list = []
    shas, ids = [], []
    for e in entries:
        room, sha = e.get("room_id") or e.get("room"), e.get("sha256")
        if room not in rooms:
            rooms.append(room)
        shas.append(str(sha))
        ids.append(f"{sha}\t{room}")
    inputs_hash = hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()
    input_id = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return sorted(rooms, key=lambda r: str(r)), len(entries), inputs_hash, input_id


def load_room(cfg: Config, room) -> list[Record]:
    """One room's merged timeline (every export of the room, duplicates removed) from organize."""
    from ..kakao.organize import room_records

    got = room_records(cfg, room)
    return got if isinstance(got, list) else list(got)


class _RoomLoader:
    """``load(i, last)`` for :func:`_build`: room ``i``'s merged timeline, parsed from its exports. Only the room
    parsed last is kept (for the next call, which the second pass makes first), so at most one room is held by
    the loader and a one-room corpus is parsed once. ``last``: the caller will not ask for this room again."""

    def __init__(self, cfg: Config, rooms: list) -> None:
        self.cfg, self.rooms = cfg, rooms
        self.kept: tuple[int, list[Record]] | None = None

    def __call__(self, i: int, last: bool) -> list[Record]:
        kept, self.kept = self.kept, None
        if kept is not None and kept[0] == i:
            records = kept[1]
        else:
            del kept  # free the previous room before parsing the next one
            records = load_room(self.cfg, self.rooms[i])
        if not last:
            self.kept = (i, records)
        return records


def _fingerprint(pcfg: PreprocessConfig, self_name: str, input_id: str, base: dict | None = None) -> str:
    """Private (may depend on names): decides whether the outputs are stale. Stored only in speakers.json."""
    doc = {"v": VERSION, "cfg": to_dict(pcfg), "self": self_name, "inputs": input_id}
    if base:  # only for a base model, so from-scratch fingerprints (and up-to-date outputs) stay as they were
        doc["base"] = base
    blob = json.dumps(doc, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _base_ref(cfg: Config) -> dict | None:
    """{"id", "revision"} of train.yaml's model.base, or None for a from-scratch run (its own BPE tokenizer)."""
    m = cfg.train.model
    return {"id": m.base, "revision": m.base_revision} if m.base else None


@dataclass
class BaseTokenizer:
    """The tokenizer of a pretrained base (``model.base``): preprocess encodes with it instead of training a BPE."""

    id: str
    revision: str
    tokenizer: object  # a transformers fast tokenizer


def _open_base(cfg: Config) -> BaseTokenizer | None:
    ref = _base_ref(cfg)
    if ref is None:
        return None
    from ..base import require_extra, resolve_base
    from ..base.load import load_tokenizer

    require_extra()
    folder = resolve_base(ref["id"], ref["revision"], root=cfg.root, weights=False)
    return BaseTokenizer(ref["id"], ref["revision"], load_tokenizer(folder))


# ---------------------------------------------------------------------------------------------------- the build
@dataclass
class _SplitOut:
    tokens: int = 0
    target_tokens: int = 0
    windows: int = 0
    sessions: int = 0
    turns: int = 0
    target_turns: int = 0
    files: dict = field(default_factory=dict)  # output name -> temp path


def build(
    rooms: list[list[Record]],
    pcfg: PreprocessConfig,
    out_dir: str | os.PathLike,
    *,
    self_name: str = "나",
    fingerprint: str = "",
    inputs: dict | None = None,
    base: BaseTokenizer | None = None,
) -> dict:
    """Build and commit all outputs from each room's merged record timeline; returns the stats dict.

    With ``base`` the ids are the base tokenizer's in the layout of :mod:`chatbot.base.layout` (no BPE is trained).

    ``rooms`` is consumed: each entry of the list is replaced by ``[]`` once that room's sessions are built, so
    the records can be freed early (pass a list nobody else holds on to).
    """
    if not isinstance(rooms, list):
        rooms = list(rooms)

    def load(i: int, last: bool) -> list[Record]:
        records = rooms[i]
        if last:
            rooms[i] = []  # release the records as we go
        return records

    with _no_gc():
        return _build(load, len(rooms), pcfg, out_dir, self_name=self_name, fingerprint=fingerprint, inputs=inputs,
                      base=base)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Millions of small long-lived objects make the cyclic GC rescan everything again and again (3-5x slower
    session building); nothing here creates garbage cycles worth collecting, so it is paused for the build."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _build(load, n_rooms: int, pcfg: PreprocessConfig, out_dir, *, self_name: str, fingerprint: str,
           inputs: dict | None, base: BaseTokenizer | None = None) -> dict:
    """The build, holding at most one room's records and sessions at a time (plus small per-session facts).

    Pass 1 reads every room for the speaker ranking and the names to mask; pass 2 reads each room again (the one
    read last first: it is still in memory), filters and masks it, cuts it into sessions and writes them to a
    private spill file in ``out_dir``; the split, the tokenizer sample and the encoding then read the sessions
    back from the spill one at a time. ``load(i, last)`` returns room ``i``'s records (see :class:`_RoomLoader`).
    Peak memory is a constant plus a small multiple of the largest room, whatever the number of rooms.
    """
    private_mkdir(Path(out_dir))
    with _Spill(Path(out_dir)) as spill:
        return _build_spilled(spill, load, n_rooms, pcfg, out_dir, self_name=self_name, fingerprint=fingerprint,
                              inputs=inputs, base=base)


def _build_spilled(spill: "_Spill", load, n_rooms: int, pcfg: PreprocessConfig, out_dir, *, self_name: str,
                   fingerprint: str, inputs: dict | None, base: BaseTokenizer | None) -> dict:
    t0 = time.perf_counter()
    clock = _Phases()
    out_dir = Path(out_dir)
    private_mkdir(out_dir)
    ranking = conv.SpeakerCounts()
    names: set[str] = set()
    messages_in = 0
    for i in range(n_rooms):
        records = load(i, False)
        messages_in += len(records)
        ranking.add(i, records)
        names.update(r.speaker for r in records if r.is_system and r.speaker)
        del records
    speakers = ranking.ranking(min(pcfg.max_speakers, MAX_SPEAKERS))
    del ranking
    if not speakers:
        raise ChatbotError("the exports hold no messages from any person; check that organize found your chats")
    try:
        target = conv.resolve_target(pcfg.target, speakers)
    except ValueError as exc:
        if str(exc) == "overflow":
            raise ChatbotError(
                f"processed.preprocess.target names a speaker outside the {pcfg.max_speakers} most active ones "
                f"(they share S0); raise processed.preprocess.max_speakers or choose `room`") from None
        raise ChatbotError(
            "processed.preprocess.target in paths.yaml names no speaker of your exports; write the name exactly "
            "as the export shows it, or use `room`") from None
    names.update(speakers)
    masker = PiiMasker(pcfg.pii, names)
    del names

    dropped: Counter = Counter()
    kept_by_speaker: Counter = Counter()

    def useful(session: conv.Session) -> bool:
        return any(conv.is_target(t, i, target, pcfg) for i, t in enumerate(session.turns))

    for i in ([n_rooms - 1, *range(n_rooms - 1)] if n_rooms else []):  # the room still in memory first
        records = sorted(load(i, True), key=lambda r: r.timestamp)
        msgs = conv.filter_records(records, pcfg, speakers, masker, dropped)
        del records
        kept_by_speaker.update(m.speaker for m in msgs)
        for session in conv.build_sessions(msgs, pcfg, room=i):
            spill.add(session, useful(session))
        del msgs
    spill.finish()
    kept = sum(kept_by_speaker.values())
    assert kept + sum(dropped.values()) == messages_in
    if not spill.sessions:
        raise ChatbotError("no messages are left after filtering; check processed.preprocess filters in paths.yaml")
    clock("sessions")
    train, val = spill.split(pcfg.val_fraction)
    n_turns = spill.total_turns

    layout = None
    if base is None:
        tok = train_tokenizer(_tokenizer_corpus(train), pcfg.vocab_size)
        tok_json = tok.to_str()
        vocab = tok.get_vocab_size()
    else:
        from ..base.layout import BaseLayout

        tok = layout = BaseLayout(base.tokenizer)
        tok_json = base.tokenizer.backend_tokenizer.to_str()
        vocab = layout.vocab_size
    clock("tokenizer")
    dtype = processed.token_dtype(vocab)

    temps: dict[str, Path] = {}
    try:
        temps["tokenizer.json"] = _write_temp(out_dir, "tokenizer.json", tok_json.encode("utf-8"))
        results = {}
        if layout is not None:
            for name, split in (("train", train), ("val", val)):
                results[name] = _encode_split_base(name, split, layout, target, pcfg, dtype, out_dir)
                temps.update(results[name].files)
        else:
            with _chunk_encoder(tok, n_turns) as encode_chunks:
                for name, split in (("train", train), ("val", val)):
                    results[name] = _encode_split(name, split, tok, encode_chunks, target, pcfg, dtype, out_dir)
                    temps.update(results[name].files)
        if results["train"].target_turns == 0:
            raise ChatbotError(
                "the training split has no target turns (too few turns by the target, or they are all shorter than "
                "min_target_chars / lack min_context_turns); adjust processed.preprocess or add exports")
        if pcfg.val_fraction > 0 and results["val"].windows == 0:
            _log("warning: the validation split has no target turns (too little data); validation loss will be "
                 "unavailable")
        persona = {
            "target": "room" if target is None else conv.pseudonym(target),
            "self": conv.pseudonym(speakers[self_name]) if speakers.get(self_name, 0) > 0 else None,
            "speakers": {conv.pseudonym(n): kept_by_speaker[n]
                         for n in sorted(kept_by_speaker, key=lambda n: (n == 0, n)) if n >= 0},
        }
        clock("encode")
        preview = (_preview(tok, temps, dtype, results) if layout is None else
                   _preview(tok, temps, dtype, results, eot=layout.eos_id, decode_fn=layout.decode))
        temps["preview.json"] = _write_temp(out_dir, "preview.json", _json_bytes(preview))
        private = {
            "_comment": "PRIVATE: real names of the chat participants. Never publish, share or commit this file.",
            "fingerprint": fingerprint,
            "speakers": {name: conv.pseudonym(n) for name, n in sorted(speakers.items(), key=lambda kv: kv[1] or 1e9)},
            "target": persona["target"],
            "self": persona["self"],
        }
        temps["speakers.json"] = _write_temp(out_dir, "speakers.json", _json_bytes(private))
        public_cfg = to_dict(pcfg)
        public_cfg["target"] = persona["target"]
        if not pcfg.learn_turn_taking:  # off = the layout of earlier versions: keep their config hash
            public_cfg.pop("learn_turn_taking", None)
        else:
            persona["turn_taking"] = True  # the model can say who speaks next (status, reply_policy model)
        inputs = inputs or {}
        stats = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": np.dtype(dtype).name,
            "vocab_size": vocab,
            "tokenizer_hash": hashlib.sha256(tok_json.encode("utf-8")).hexdigest(),
            "config_hash": config_hash(public_cfg),
            "inputs_hash": inputs.get("inputs_hash", ""),
            "persona": persona,
            "rooms": inputs.get("rooms", n_rooms),
            "files": inputs.get("files", 0),
            "speakers": len(speakers),
            "messages": {"in": messages_in, "kept": kept,
                         "dropped": {r: dropped[r] for r in conv.DROP_REASONS}},
            "pii": {c: masker.counts[c] for c in (*PII_CLASSES, "name")},
            "sessions": {s: results[s].sessions for s in SPLITS},
            "turns": {s: results[s].turns for s in SPLITS},
            "target_turns": {s: results[s].target_turns for s in SPLITS},
            "tokens": {s: results[s].tokens for s in SPLITS},
            "target_tokens": {s: results[s].target_tokens for s in SPLITS},
            "windows": {s: results[s].windows for s in SPLITS},
            **({"base": {"id": base.id, "revision": base.revision, "tokenizer_hash": stats_tok_hash(tok_json),
                         "layout": "base-1"}} if base is not None else {}),
            "outputs": {name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for name, p in temps.items()},
            "seconds": round(time.perf_counter() - t0, 2),
        }
        temps[processed.STATS] = _write_temp(out_dir, processed.STATS, processed.stats_bytes(stats))
        commit(out_dir, temps)
        clock("write")
    except BaseException:
        if not (out_dir / JOURNAL).exists():  # once the journal exists, recover() finishes the commit
            for p in temps.values():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        raise
    _log(f"{messages_in} messages in {stats['rooms']} room(s) → kept {kept}, dropped {sum(dropped.values())}; "
         f"{stats['speakers']} speakers, target {persona['target']}; train {stats['tokens']['train']} tokens "
         f"({stats['windows']['train']} windows), val {stats['tokens']['val']} tokens; vocab {vocab}; "
         f"{stats['seconds']}s ({clock})")
    return stats


def stats_tok_hash(tok_json: str) -> str:
    return hashlib.sha256(tok_json.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------ session spill
_EPOCH = datetime(1, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


class _Spill:
    """Sessions written to a private temp file in the output folder while the rooms are read, and read back one
    session at a time, so no more than one room's sessions are ever in memory. Per session only a row of typed
    arrays stays in memory (start, room, useful, offset, size, turns: 37 bytes). The turns are ``marshal``-ed
    plain ints and strings (fast, and loading it runs nothing); the file lives only during the build (recover()
    removes one a killed build left behind)."""

    NAME = "sessions.spill"

    def __init__(self, out_dir: Path) -> None:
        self.out = _TempOut(out_dir, self.NAME)
        self.reader: IO[bytes] | None = None
        self.start, self.room, self.useful = array("q"), array("i"), array("b")
        self.offset, self.size, self.turns_of = array("q"), array("q"), array("q")
        self.pos = 0

    def __enter__(self) -> "_Spill":
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
        blob = marshal.dumps([(t.speaker, t.length, t.text) for t in session.turns])
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

    def split(self, val_fraction: float) -> tuple["_SpilledSplit", "_SpilledSplit"]:
        """(train, val) exactly as conversation.split_sessions would cut these sessions (sorted by start, then
        room; a stable sort, so ties keep the order the sessions were added in within a room)."""
        order = np.lexsort((np.frombuffer(self.room, dtype=np.int32), np.frombuffer(self.start, dtype=np.int64)))
        flags = np.frombuffer(self.useful, dtype=np.int8)[order].astype(bool)
        k, t = conv.split_point(flags, val_fraction, lambda i: self.turns_of[int(order[i])])
        if t is None:
            return _SpilledSplit(self, order[:k]), _SpilledSplit(self, order[k:])
        at = int(order[k])
        return _SpilledSplit(self, order[:k], tail=(at, 0, t)), _SpilledSplit(self, order[k + 1:], head=(at, t, None))

    def session(self, i: int, lo: int = 0, hi: int | None = None) -> conv.Session:
        """Session ``i`` (its turns ``lo:hi``). Turn times are not spilled (nothing after the split needs them)."""
        assert self.reader is not None
        self.reader.seek(self.offset[i])
        rows = marshal.loads(self.reader.read(self.size[i]))
        if (lo, hi) != (0, None):
            rows = rows[lo:hi]
        return conv.Session(self.room[i], [conv.Turn(spk, text, n, None, None) for spk, n, text in rows])


class _SpilledSplit:
    """One split's sessions in order — ``head`` (a session's later turns), the sessions ``order``, ``tail`` (a
    session's first turns) — read from the spill on every iteration; ``len`` needs no reading."""

    def __init__(self, spill: _Spill, order: np.ndarray, head: tuple | None = None, tail: tuple | None = None):
        self.spill, self.order, self.head, self.tail = spill, order, head, tail

    def __len__(self) -> int:
        return len(self.order) + (self.head is not None) + (self.tail is not None)

    def __iter__(self) -> Iterator[conv.Session]:
        if self.head is not None:
            yield self.spill.session(*self.head)
        for i in self.order:
            yield self.spill.session(int(i))
        if self.tail is not None:
            yield self.spill.session(*self.tail)


class _Phases:
    """Wall seconds per phase, for the log line (``sessions`` includes cleaning, masking and filtering)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.last_cpu = time.process_time()
        self.spent: dict[str, tuple[float, float]] = {}

    def __call__(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.spent[name] = (now - self.last, cpu - self.last_cpu)
        self.last, self.last_cpu = now, cpu

    def __str__(self) -> str:
        return ", ".join(f"{k} {w:.1f}s (cpu {c:.1f}s)" for k, (w, c) in self.spent.items())


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _tokenizer_corpus(train: Sequence[conv.Session]) -> Iterator[str]:
    """Train-split turn texts without placeholder markers, sampled evenly to about TOKENIZER_SAMPLE_CHARS."""
    total = sum(len(t.text) for s in train for t in s.turns)
    step = max(1, -(-total // TOKENIZER_SAMPLE_CHARS))
    batch: list[str] = []
    i = 0
    for s in train:
        for t in s.turns:
            i += 1
            if i % step or t.speaker < 0:
                continue
            text = t.text
            if "\ue000" in text:
                text = "\n".join(seg for seg in _SEGMENT_RE.split(text)[::2] if seg)
            batch.append(text)
            if len(batch) >= 2048:
                yield "\n".join(batch)
                batch = []
    if batch:
        yield "\n".join(batch)


# ---------------------------------------------------------------------------------------------------- encoding
class _TempOut:
    """A temp file in the output folder (same name scheme as chatbot.fsio, so recover() cleans leftovers)."""

    def __init__(self, out_dir: Path, name: str):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=str(out_dir))
        self.path = Path(tmp)
        self.fh = os.fdopen(fd, "wb")

    def write(self, arr: np.ndarray) -> None:
        self.fh.write(memoryview(np.ascontiguousarray(arr)).cast("B"))

    def close(self) -> Path:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.path


def _write_temp(out_dir: Path, name: str, data: bytes) -> Path:
    out = _TempOut(out_dir, name)
    out.fh.write(data)
    return out.close()


def encode_texts(tok, texts: list[str]) -> list[list[int]]:
    """Marked texts → ids (placeholders as their token ids, everything typed as plain text), in two batch calls."""
    tok.encode_special_tokens = True
    out: list[list[int] | None] = [None] * len(texts)
    plain = [i for i, t in enumerate(texts) if "\ue000" not in t]
    if plain:
        for i, enc in zip(plain, tok.encode_batch([texts[i] for i in plain], add_special_tokens=False)):
            out[i] = enc.ids
    if len(plain) < len(texts):
        marked = [i for i, t in enumerate(texts) if "\ue000" in t]
        pieces = [_SEGMENT_RE.split(texts[i]) for i in marked]
        segs = [seg for p in pieces for seg in p[::2] if seg]
        seg_ids = iter(tok.encode_batch(segs, add_special_tokens=False)) if segs else iter(())
        for i, p in zip(marked, pieces):
            ids: list[int] = []
            for j, seg in enumerate(p):
                if j % 2:
                    ids.append(special_id(tok, f"<|{seg[1:-1]}|>"))
                elif seg:
                    ids.extend(next(seg_ids).ids)
            out[i] = ids
    return out  # type: ignore[return-value]


class FastEncoder:
    """Exactly :func:`~chatbot.data.tokenizer.encode_marked`, several times faster on Korean chat.

    The byte-level pre-tokenizer splits text with the GPT-2 regex before BPE sees it, and BPE is applied to each
    piece independently; so ids(text) = concat(ids(piece)). For text made only of ASCII, Hangul syllables and
    compatibility jamo (almost every chat message) the split is reproduced here with Python's ``re`` (identical
    character classes), each distinct piece is encoded once by the real tokenizer and cached in numpy arrays, and
    a chunk's ids are gathered with numpy. Any other text (emoji, CJK, …) goes through the tokenizer itself.
    Tests compare both paths on random text.
    """

    _L = "A-Za-z\uac00-\ud7a3\u3131-\u318e"
    PIECE = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{_L}]+| ?[0-9]+| ?[^\s{_L}0-9]+|\s+(?!\S)|\s+")
    UNSAFE = re.compile(r"[^\t\n\x20-\x7e\uac00-\ud7a3\u3131-\u318e\ue000\ue001]")
    MAX_PIECES = 2_000_000  # cache bound (memory); the cache restarts when full
    SEP = "\x1c"  # batch separator: a control character, so never inside a text taking the joined path

    def __init__(self, tok):
        self.tok = tok
        tok.encode_special_tokens = True
        self._reset()

    def _reset(self) -> None:
        self.index: dict[str, int] = {}
        self.w_off = np.zeros(0, dtype=np.int64)
        self.w_len = np.zeros(0, dtype=np.int64)
        self.w_tok = np.zeros(0, dtype=np.int64)
        self._add([self.SEP], [[]])  # zero tokens
        self.sep_row = self.index[self.SEP]
        for name in (*MEDIA_TOKENS, *PII_TOKENS):
            marker = f"\ue000{name}\ue001"
            if self.tok.token_to_id(f"<|{name}|>") is not None:
                self._add([marker], [[special_id(self.tok, f"<|{name}|>")]])

    def _add(self, words: list[str], ids: list[list[int]]) -> None:
        base = len(self.index)
        self.index.update(zip(words, range(base, base + len(words))))
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self.w_off = np.concatenate([self.w_off, len(self.w_tok) + np.cumsum(lens) - lens])
        self.w_len = np.concatenate([self.w_len, lens])
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lens.sum()))
        self.w_tok = np.concatenate([self.w_tok, flat])

    def _pieces(self, text: str) -> list[str]:
        if "\ue000" not in text:
            return self.PIECE.findall(text)
        out: list[str] = []
        for j, seg in enumerate(_SEGMENT_RE.split(text)):
            if j % 2:
                out.append(seg)
            elif seg:
                out.extend(self.PIECE.findall(seg))
        return out

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids per text as lengths, all ids concatenated) for a batch of marked texts.

        Marker-free texts without surrounding whitespace are split by one regex pass over the whole batch joined
        with SEP: between two such texts SEP is a piece of its own, so the split is the same as text by text.
        """
        n = len(texts)
        unsafe = self.UNSAFE.search
        joined: list[int] = []
        single: list[int] = []
        slow: list[int] = []
        for i, t in enumerate(texts):
            if unsafe(t) is not None:
                slow.append(i)
            elif t and "\ue000" not in t and not t[0].isspace() and not t[-1].isspace():
                joined.append(i)
            else:
                single.append(i)
        lens = np.zeros(n, dtype=np.int64)
        parts: list[tuple[np.ndarray, np.ndarray]] = []  # (text indices, ids of those texts in order)
        fast = joined + single
        if fast:
            sep = self.SEP
            pieces = self.PIECE.findall(sep.join([texts[i] for i in joined])) if joined else []
            for k, i in enumerate(single):
                if joined or k:
                    pieces.append(sep)
                pieces.extend(self._pieces(texts[i]))
            rows = np.fromiter(map(self.index.get, pieces, repeat(-1)), dtype=np.int64, count=len(pieces))
            miss = np.flatnonzero(rows < 0)
            if miss.size:
                new = list(dict.fromkeys(pieces[k] for k in miss.tolist()))
                if len(self.index) + len(new) > self.MAX_PIECES:
                    self._reset()
                    new = [w for w in dict.fromkeys(pieces) if w not in self.index]
                    miss = np.arange(len(pieces))
                self._add(new, [e.ids for e in self.tok.encode_batch(new, add_special_tokens=False)])
                get = self.index.__getitem__
                rows[miss] = np.fromiter((get(pieces[k]) for k in miss.tolist()), dtype=np.int64, count=miss.size)
            del pieces
            seps = np.flatnonzero(rows == self.sep_row)
            assert seps.size == len(fast) - 1
            wl = self.w_len[rows]
            cum = np.concatenate([[0], np.cumsum(wl)])
            lens[np.asarray(fast, dtype=np.int64)] = (cum[np.append(seps, len(rows))]
                                                       - cum[np.concatenate([[0], seps + 1])])
            total = int(cum[-1])
            gather = np.repeat(self.w_off[rows] - cum[:-1], wl) + np.arange(total, dtype=np.int64)
            parts.append((np.asarray(fast, dtype=np.int64), self.w_tok[gather]))
        if slow:
            encs = encode_texts(self.tok, [texts[i] for i in slow])
            idx = np.asarray(slow, dtype=np.int64)
            lens[idx] = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
            parts.append((idx, np.fromiter(chain.from_iterable(encs), dtype=np.int64, count=int(lens[idx].sum()))))
        if len(parts) == 1 and np.array_equal(parts[0][0], np.arange(n)):
            return lens, parts[0][1]
        flat = np.empty(int(lens.sum()), dtype=np.int64)
        dest_start = np.cumsum(lens) - lens
        for idx, ids in parts:
            ln = lens[idx]
            src_start = np.cumsum(ln) - ln
            flat[np.repeat(dest_start[idx] - src_start, ln) + np.arange(len(ids), dtype=np.int64)] = ids
        return lens, flat


@dataclass
class _Chunk:
    """Up to CHUNK_TURNS consecutive turns of a split: their texts and per-turn layout facts."""

    texts: list[str]
    first: np.ndarray  # bool: the turn opens its session (gets <|bos|>)
    spk: np.ndarray  # int: pseudonym number, -1 = system turn (no speaker token)
    elig: np.ndarray  # bool: an eligible target turn (loss on its text and <|eot|>)
    sess_first: np.ndarray  # int: split-wide index of the first turn of the turn's session


def _plan(sessions: Iterable[conv.Session], target: int | None, pcfg: PreprocessConfig) -> Iterator[_Chunk]:
    """Chunks of whole sessions, made lazily (one chunk's texts in memory at a time)."""
    chunks: list[_Chunk] = []  # 0 or 1 chunk waiting to be yielded
    texts: list[str] = []
    spk: list[int] = []
    first: list[bool] = []
    elig: list[bool] = []
    sess_first: list[int] = []
    n = 0

    def cut() -> None:
        chunks.append(_Chunk(list(texts), np.array(first, dtype=bool), np.array(spk, dtype=np.int64),
                             np.array(elig, dtype=bool), np.array(sess_first, dtype=np.int64)))
        for lst in (texts, spk, first, elig, sess_first):
            lst.clear()

    for session in sessions:
        base = n
        for i, turn in enumerate(session.turns):
            texts.append(turn.text)
            spk.append(turn.speaker)
            first.append(i == 0)
            elig.append(conv.is_target(turn, i, target, pcfg))
            sess_first.append(base)
            n += 1
        if len(texts) >= CHUNK_TURNS:
            cut()
            yield chunks.pop()
    if texts:
        cut()
        yield chunks.pop()


class _Windows:
    """A split's window starts, written chunk by chunk: every ``sample_stride``-th eligible target turn of the
    split (numbered split-wide) gives a window starting ``context_turns`` turns before it, but not before its
    session's first turn (a session never spans two chunks, so both are in the same chunk)."""

    def __init__(self, pcfg: PreprocessConfig, out: _TempOut) -> None:
        self.stride, self.context, self.out = pcfg.sample_stride, pcfg.context_turns, out
        self.turns = self.targets = self.windows = 0  # so far in the split

    def add(self, chunk: _Chunk, turn_offsets: np.ndarray) -> None:
        """``turn_offsets``: split-wide token offset of each of the chunk's turns (its BOS for a first turn)."""
        eligible = np.flatnonzero(chunk.elig)
        picked = eligible[(self.targets + np.arange(eligible.size)) % self.stride == 0]
        start_turn = np.maximum(chunk.sess_first[picked] - self.turns, picked - self.context)
        starts = np.unique(turn_offsets[start_turn]).astype(np.uint64)
        self.out.write(starts)
        self.windows += int(starts.size)
        self.targets += int(eligible.size)
        self.turns += len(chunk.first)


def _encode_split(split: str, sessions: Sequence[conv.Session], tok, encode_chunks, target: int | None,
                  pcfg: PreprocessConfig, dtype, out_dir: Path) -> _SplitOut:
    """Stream one split into temp ``.bin`` files chunk by chunk (numpy arrays; never a Python list of all tokens).

    Layout per session: ``<|bos|>`` then per turn ``<|spk:Sn|> text <|eot|>`` (a system turn has no speaker
    token). Mask 1 on the text and ``<|eot|>`` of eligible target turns, 0 elsewhere. ``encode_chunks`` maps a
    list of text lists to ``(lengths, ids)`` pairs in order (in this process or in worker processes).
    """
    res = _SplitOut(sessions=len(sessions))
    bos, eot = special_id(tok, BOS), special_id(tok, EOT)
    spk_ids = np.array([special_id(tok, speaker_token(conv.pseudonym(i))) for i in range(MAX_SPEAKERS + 1)],
                       dtype=np.int64)
    outs = {kind: _TempOut(out_dir, f"{split}{kind}") for kind in (".bin", "_loss_mask.bin", "_starts.bin")}
    try:
        waiting: deque[_Chunk] = deque()  # chunks handed to the encoder, in order, until their ids come back

        def texts_of_chunks() -> Iterator[list[str]]:
            for c in _plan(sessions, target, pcfg):
                waiting.append(c)
                yield c.texts

        offset = 0  # tokens written so far
        windows = _Windows(pcfg, outs["_starts.bin"])
        for lens, flat in encode_chunks(texts_of_chunks()):
            chunk = waiting.popleft()
            chunk.texts = []  # release as we go
            lens = lens.astype(np.int64, copy=False)
            n_body = int(flat.size)
            f, s, e = chunk.first, chunk.spk, chunk.elig
            has_spk = s >= 0
            pre = f.astype(np.int64) + has_spk
            tot = pre + lens + 1
            ends = np.cumsum(tot)
            starts = ends - tot
            toks = np.empty(int(ends[-1]), dtype=np.int64)
            toks[starts[f]] = bos
            spk_pos = (starts + f)[has_spk]
            toks[spk_pos] = spk_ids[s[has_spk]]
            if n_body:
                body_cum = np.cumsum(lens) - lens
                toks[np.repeat(starts + pre - body_cum, lens) + np.arange(n_body)] = flat
            toks[ends - 1] = eot
            mask = np.repeat(e.astype(np.uint8), tot)
            mask[starts[f]] = 0
            mask[spk_pos] = 0
            if pcfg.learn_turn_taking:  # who speaks next: the speaker token of every turn after another turn
                mask[(starts + f)[has_spk & ~f]] = 1
            outs[".bin"].write(toks.astype(dtype))
            outs["_loss_mask.bin"].write(mask)
            res.target_tokens += int(mask.sum(dtype=np.int64))
            windows.add(chunk, starts + offset)
            offset += int(ends[-1])
        res.tokens = offset
        res.turns, res.target_turns, res.windows = windows.turns, windows.targets, windows.windows
        for kind, out in outs.items():
            res.files[f"{split}{kind}"] = out.close()
    except BaseException:
        _discard(outs.values())
        raise
    return res


def _discard(outs) -> None:
    """Close and remove the temp outputs of a split that failed half-way (the previous outputs stay intact)."""
    for out in outs:
        with contextlib.suppress(Exception):
            out.fh.close()
        with contextlib.suppress(FileNotFoundError):
            out.path.unlink()


def _encode_split_base(split: str, sessions: Sequence[conv.Session], layout, target: int | None,
                       pcfg: PreprocessConfig, dtype, out_dir: Path) -> _SplitOut:
    """:func:`_encode_split` for a pretrained base: the layout of :mod:`chatbot.base.layout`, i.e. per session
    ``[bos]`` (when the tokenizer has one), per turn ``enc("Sn: ") + enc(text) + [eos]`` (a system event has no
    prefix); mask 1 on ``enc(text) + [eos]`` of eligible target turns. Texts are encoded by the tokenizer's
    (multi-threaded) batch encoder, pieces joined with numpy."""
    from ..base.layout import render

    res = _SplitOut(sessions=len(sessions))
    start = layout.session_start()
    prefixes = [layout.prefix(conv.pseudonym(i)) for i in range(MAX_SPEAKERS + 1)] + [layout.prefix(None)]
    eos = [layout.eos_id]
    outs = {kind: _TempOut(out_dir, f"{split}{kind}") for kind in (".bin", "_loss_mask.bin", "_starts.bin")}
    try:
        offset = 0
        windows = _Windows(pcfg, outs["_starts.bin"])
        for chunk in _plan(sessions, target, pcfg):
            bodies = layout.enc_batch([render(t) for t in chunk.texts])
            pres = [(start if f else []) + prefixes[sp] for f, sp in zip(chunk.first.tolist(), chunk.spk.tolist())]
            pre_len = np.fromiter(map(len, pres), dtype=np.int64, count=len(pres))
            body_len = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies)) + 1
            pieces = chain.from_iterable(chain.from_iterable(zip(pres, bodies, repeat(eos))))
            toks = np.fromiter(pieces, dtype=np.int64, count=int(pre_len.sum() + body_len.sum()))
            lengths = np.stack([pre_len, body_len], axis=1).reshape(-1)
            flags = np.stack([np.zeros_like(chunk.elig), chunk.elig], axis=1).reshape(-1).astype(np.uint8)
            mask = np.repeat(flags, lengths)
            outs[".bin"].write(toks.astype(dtype))
            outs["_loss_mask.bin"].write(mask)
            res.target_tokens += int(mask.sum(dtype=np.int64))
            tot = pre_len + body_len
            windows.add(chunk, np.cumsum(tot) - tot + offset)
            offset += int(tot.sum())
            chunk.texts = []
        res.tokens = offset
        res.turns, res.target_turns, res.windows = windows.turns, windows.targets, windows.windows
        for kind, out in outs.items():
            res.files[f"{split}{kind}"] = out.close()
    except BaseException:
        _discard(outs.values())
        raise
    return res


# ------------------------------------------------------------------------------------------ parallel encoding
_WORKER: FastEncoder | None = None


def _worker_init(tok_json: str) -> None:
    """Runs in each worker (module-level and with a str argument, so a spawned worker can receive it)."""
    global _WORKER
    import signal

    from tokenizers import Tokenizer

    # Ctrl+C / Ctrl+Break reach every process of the console: the parent alone handles them (and ends the pool)
    for name in ("SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)

    _WORKER = FastEncoder(Tokenizer.from_str(tok_json))


def _worker_encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lens, flat = _WORKER.encode(texts)  # type: ignore[union-attr]
    return lens.astype(np.int32), flat.astype(np.int32)


@contextlib.contextmanager
def _chunk_encoder(tok, n_turns: int) -> Iterator:
    """``encode_chunks`` for :func:`_encode_split`: worker processes (one per CPU) for a big corpus — encoding is
    the longest step and pure CPU — else this process. Both give identical ids (tests compare them).

    Workers are forked on Linux (no re-import of ``__main__``) and spawned elsewhere (Windows has no fork, macOS
    forks unsafely): the initialiser and its argument (the tokenizer as JSON text) are picklable module-level
    objects, so both start methods run the same code. The tokenizer library turns its own thread pool off in a
    forked child; TOKENIZERS_PARALLELISM=false is set around the start only to silence its warning about that.
    """
    import multiprocessing

    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or n_turns < PARALLEL_MIN_TURNS:
        encoder = FastEncoder(tok)
        yield lambda chunks: map(encoder.encode, chunks)
        return
    method = pool_start_method()
    _log(f"encoding {n_turns} turns in {workers} worker processes ({method})")
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context(method).Pool(workers, _worker_init, (tok.to_str(),))
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old
    with pool:
        yield lambda chunks: _bounded_imap(pool, _worker_encode, chunks, 2 * workers)


def _bounded_imap(pool, fn, items: Iterable, ahead: int) -> Iterator:
    """``pool.imap(fn, items)`` that takes at most ``ahead`` items from ``items`` before their results are
    consumed (``imap`` would read the whole iterable into its task queue: every chunk's texts at once)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ----------------------------------------------------------------------------------------------------- preview
def _preview(tok, temps: dict[str, Path], dtype, results: dict[str, _SplitOut], *, eot: int | None = None,
             decode_fn=None) -> dict:
    """A few windows per split, decoded, with the loss-carrying spans wrapped in ⟦ ⟧ (``eot``/``decode_fn``: the
    turn end and decoder of a base model's layout)."""
    if decode_fn is None:
        def decode_fn(ids):
            return decode(tok, ids)
    samples = []
    for split, n in PREVIEW_WINDOWS.items():
        if results[split].tokens == 0 or results[split].windows == 0:
            continue
        toks = np.memmap(temps[f"{split}.bin"], dtype=dtype, mode="r")
        mask = np.memmap(temps[f"{split}_loss_mask.bin"], dtype=np.uint8, mode="r")
        starts = np.fromfile(temps[f"{split}_starts.bin"], dtype=np.uint64)
        picks = sorted({int(starts[int(i)]) for i in np.linspace(0, len(starts) - 1, num=min(n, len(starts)))})
        if eot is None:
            eot = special_id(tok, EOT)
        for s in picks:
            end = min(len(toks), s + PREVIEW_TOKENS)
            ids = np.asarray(toks[s:end], dtype=np.int64)
            hits = np.flatnonzero(ids == eot)
            if hits.size:  # end on a turn boundary so no character is cut
                end = s + int(hits[-1]) + 1
            ids = np.asarray(toks[s:end], dtype=np.int64)
            m = np.asarray(mask[s:end], dtype=np.uint8)
            parts = []
            change = np.flatnonzero(np.diff(m)) + 1
            for a, b in zip(np.r_[0, change], np.r_[change, len(ids)]):
                text = decode_fn(ids[a:b].tolist())
                parts.append(f"⟦{text}⟧" if m[a] else text)
            samples.append({"split": split, "start": s, "tokens": int(len(ids)), "target_tokens": int(m.sum()),
                            "text": "".join(parts)})
        del toks, mask
    return {"legend": "⟦…⟧ = tokens that carry loss (a target turn's text and its <|eot|>); the rest is context",
            "samples": samples}


# ------------------------------------------------------------------------------------------ commit and recovery
def commit(out_dir: str | os.PathLike, temps: dict[str, Path]) -> None:
    """Rename the complete temp files over the outputs, ``stats.json`` last, through a journal.

    The journal is written (atomically) only once every temp file is complete and fsynced, so whatever happens
    during the renames, :func:`recover` can finish them.
    """
    out_dir = Path(out_dir)
    order = [n for n in OUTPUT_FILES if n in temps] + sorted(n for n in temps if n not in OUTPUT_FILES)
    journal = {"renames": [[temps[n].name, n] for n in order]}
    atomic_write_json(out_dir / JOURNAL, journal)
    _apply(out_dir, journal)
    (out_dir / JOURNAL).unlink()
    fsync_dir(out_dir)


def _apply(out_dir: Path, journal: dict) -> None:
    for tmp, final in journal["renames"]:
        src = out_dir / tmp
        if src.exists():
            os.replace(src, out_dir / final)
    fsync_dir(out_dir)


def recover(out_dir: str | os.PathLike) -> None:
    """Finish a commit that a crash interrupted (roll forward) and remove temp files of an interrupted build."""
    out_dir = Path(out_dir)
    journal_path = out_dir / JOURNAL
    if journal_path.exists():
        try:
            journal = read_json(journal_path)
            _apply(out_dir, journal)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable journal was never completed: nothing was renamed yet
        journal_path.unlink(missing_ok=True)
        _log("finished an interrupted commit of the previous run")
    for p in out_dir.glob(".*.tmp"):
        if any(p.name.startswith(f".{n}.") for n in (*OUTPUT_FILES, _Spill.NAME)):
            p.unlink(missing_ok=True)


def _stale_reason(out_dir: Path, fingerprint: str) -> str | None:
    problem = check_outputs(out_dir)
    if problem is not None:
        return problem
    try:
        private = read_json(out_dir / "speakers.json")
    except (OSError, ValueError):
        return "speakers.json is unreadable"
    if not isinstance(private, dict) or private.get("fingerprint") != fingerprint:
        return "exports or settings changed"
    return None


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One preprocess at a time per output folder (an OS lock: released even if the process is killed; flock on
    POSIX, msvcrt.locking on Windows — see chatbot.portable.try_lock)."""
    fd = os.open(str(out_dir / LOCK), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        if not try_lock(fd):
            raise ChatbotError(f"another preprocess is writing {out_dir}; wait for it to finish")
        yield
    finally:
        os.close(fd)
