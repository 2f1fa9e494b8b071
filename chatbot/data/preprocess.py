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
an even sample of ≤ TOKENIZER_SAMPLE_CHARS characters of the train split; encoding uses :class:`.encode.FastEncoder`
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
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..config import Config, PreprocessConfig, config_hash, to_dict
from ..errors import ChatbotError
from ..formats import processed
from ..formats.processed import FORMAT, JOURNAL, OUTPUT_FILES, SPLITS, VERSION, check_outputs
from ..fsio import private_mkdir, read_json, sha256_file
from ..records import Record
from ..tokens import MAX_SPEAKERS
from . import conversation as conv
from .encode import FastEncoder, SplitOut, base_chunks, encode_texts, scratch_chunks, tokenizer_corpus, write_split
from .outputs import LOCK, commit, exclusive, recover, write_temp
from .parallel import chunk_encoder
from .pii import PII_CLASSES, PiiMasker
from .preview import preview
from .spill import Spill, SpilledSplit
from .tokenizer import train_tokenizer

# The interface of this module (the CLI, status, tests and benches use these names from here).
__all__ = ["preprocess", "stale_reason", "build", "BaseTokenizer", "load_room", "stats_tok_hash", "check_outputs",
           "recover", "commit", "OUTPUT_FILES", "LOCK", "FastEncoder", "encode_texts"]

# Module-level names (not bound at import by the stages) so a test can stand in for a step: a crash while
# writing temp files or while building the preview.
_write_temp = write_temp
_preview = preview


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
    with exclusive(out_dir):
        if recover(out_dir):
            _log("finished an interrupted commit of the previous run")
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
    for entry in entries:
        room, sha = entry.get("room_id") or entry.get("room"), entry.get("sha256")
        if room not in rooms:
            rooms.append(room)
        shas.append(str(sha))
        ids.append(f"{sha}\t{room}")
    inputs_hash = hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()
    input_id = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return sorted(rooms, key=lambda key: str(key)), len(entries), inputs_hash, input_id


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

    def __call__(self, room: int, last: bool) -> list[Record]:
        kept, self.kept = self.kept, None
        if kept is not None and kept[0] == room:
            records = kept[1]
        else:
            del kept  # free the previous room before parsing the next one
            records = load_room(self.cfg, self.rooms[room])
        if not last:
            self.kept = (room, records)
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
    model = cfg.train.model
    return {"id": model.base, "revision": model.base_revision} if model.base else None


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

    def load(room: int, last: bool) -> list[Record]:
        records = rooms[room]
        if last:
            rooms[room] = []  # release the records as we go
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
    with Spill(Path(out_dir)) as spill:
        return _build_spilled(spill, load, n_rooms, pcfg, out_dir, self_name=self_name, fingerprint=fingerprint,
                              inputs=inputs, base=base)


@dataclass
class _Corpus:
    """Who is in the exports and what happened to their messages; filled by the two passes over the rooms."""

    speakers: dict[str, int]  # name -> pseudonym number, most active first (0 = beyond max_speakers)
    target: int | None  # the target speaker's number, None = the whole room
    masker: PiiMasker
    messages_in: int
    kept_by_speaker: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return sum(self.kept_by_speaker.values())


@dataclass
class _Tokenizer:
    """The tokenizer the ids are in: a BPE trained here (``layout`` None) or a pretrained base's."""

    tok: object
    json: str
    vocab: int
    layout: object | None = None  # chatbot.base.layout.BaseLayout for a base


def _build_spilled(spill: "Spill", load, n_rooms: int, pcfg: PreprocessConfig, out_dir, *, self_name: str,
                   fingerprint: str, inputs: dict | None, base: BaseTokenizer | None) -> dict:
    """The stages of a build: rank speakers, spill filtered sessions, split, tokenizer, encode + write, commit."""
    started = time.perf_counter()
    clock = _Phases()
    out_dir = Path(out_dir)
    private_mkdir(out_dir)
    corpus = _rank_speakers(load, n_rooms, pcfg)
    _spill_sessions(spill, load, n_rooms, pcfg, corpus)
    clock("sessions")
    train, val = spill.split(pcfg.val_fraction)
    tokenizer = _make_tokenizer(train, pcfg, base)
    clock("tokenizer")
    stats = _write_outputs(out_dir, corpus, tokenizer, train, val, pcfg, spill.total_turns, clock,
                           self_name=self_name, fingerprint=fingerprint, inputs=inputs or {}, n_rooms=n_rooms,
                           base=base, started=started)
    _log(f"{corpus.messages_in} messages in {stats['rooms']} room(s) → kept {corpus.kept}, dropped "
         f"{sum(corpus.dropped.values())}; {stats['speakers']} speakers, target {stats['persona']['target']}; train "
         f"{stats['tokens']['train']} tokens ({stats['windows']['train']} windows), val {stats['tokens']['val']} "
         f"tokens; vocab {tokenizer.vocab}; {stats['seconds']}s ({clock})")
    return stats


def _rank_speakers(load, n_rooms: int, pcfg: PreprocessConfig) -> _Corpus:
    """Pass 1 over every room: the speaker ranking, the target, and the names the PII masker must know."""
    ranking = conv.SpeakerCounts()
    names: set[str] = set()
    messages_in = 0
    for room in range(n_rooms):
        records = load(room, False)
        messages_in += len(records)
        ranking.add(room, records)
        names.update(record.speaker for record in records if record.is_system and record.speaker)
        del records
    speakers = ranking.ranking(min(pcfg.max_speakers, MAX_SPEAKERS))
    del ranking
    if not speakers:
        raise ChatbotError("the exports hold no messages from any person; check that organize found your chats")
    target = _resolve_target(pcfg, speakers)
    names.update(speakers)
    return _Corpus(speakers, target, PiiMasker(pcfg.pii, names), messages_in)


def _resolve_target(pcfg: PreprocessConfig, speakers: dict[str, int]) -> int | None:
    try:
        return conv.resolve_target(pcfg.target, speakers)
    except ValueError as exc:
        if str(exc) == "overflow":
            raise ChatbotError(
                f"processed.preprocess.target names a speaker outside the {pcfg.max_speakers} most active ones "
                f"(they share S0); raise processed.preprocess.max_speakers or choose `room`") from None
        raise ChatbotError(
            "processed.preprocess.target in paths.yaml names no speaker of your exports; write the name exactly "
            "as the export shows it, or use `room`") from None


def _spill_sessions(spill: "Spill", load, n_rooms: int, pcfg: PreprocessConfig, corpus: _Corpus) -> None:
    """Pass 2: each room filtered, masked and cut into sessions, written to the spill (the room still in memory
    from pass 1 first, so a one-room corpus is parsed once)."""
    def useful(session: conv.Session) -> bool:
        return any(conv.is_target(turn, index, corpus.target, pcfg) for index, turn in enumerate(session.turns))

    for room in ([n_rooms - 1, *range(n_rooms - 1)] if n_rooms else []):
        records = sorted(load(room, True), key=lambda record: record.timestamp)
        msgs = conv.filter_records(records, pcfg, corpus.speakers, corpus.masker, corpus.dropped)
        del records
        corpus.kept_by_speaker.update(message.speaker for message in msgs)
        for session in conv.build_sessions(msgs, pcfg, room=room):
            spill.add(session, useful(session))
        del msgs
    spill.finish()
    assert corpus.kept + sum(corpus.dropped.values()) == corpus.messages_in
    if not spill.sessions:
        raise ChatbotError("no messages are left after filtering; check processed.preprocess filters in paths.yaml")


def _make_tokenizer(train: "SpilledSplit", pcfg: PreprocessConfig, base: BaseTokenizer | None) -> _Tokenizer:
    if base is None:
        tok = train_tokenizer(tokenizer_corpus(train), pcfg.vocab_size)
        return _Tokenizer(tok, tok.to_str(), tok.get_vocab_size())
    from ..base.layout import BaseLayout

    layout = BaseLayout(base.tokenizer)
    return _Tokenizer(layout, base.tokenizer.backend_tokenizer.to_str(), layout.vocab_size, layout)


def _write_outputs(out_dir: Path, corpus: _Corpus, tokenizer: _Tokenizer, train, val, pcfg: PreprocessConfig,
                   n_turns: int, clock: "_Phases", *, self_name: str, fingerprint: str, inputs: dict, n_rooms: int,
                   base: BaseTokenizer | None, started: float) -> dict:
    """Every output to a temp file, then the commit; on any failure before the commit the temp files go."""
    dtype = processed.token_dtype(tokenizer.vocab)
    temps: dict[str, Path] = {}
    try:
        temps[processed.TOKENIZER] = _write_temp(out_dir, processed.TOKENIZER, tokenizer.json.encode("utf-8"))
        results = _encode_splits({"train": train, "val": val}, tokenizer, corpus.target, pcfg, dtype, out_dir,
                                 n_turns, temps)
        persona = _persona(corpus, pcfg, self_name)
        clock("encode")
        layout = tokenizer.layout
        preview = (_preview(tokenizer.tok, temps, dtype, results) if layout is None else
                   _preview(tokenizer.tok, temps, dtype, results, eot=layout.eos_id, decode_fn=layout.decode))
        temps[processed.PREVIEW] = _write_temp(out_dir, processed.PREVIEW, _json_bytes(preview))
        temps[processed.SPEAKERS] = _write_temp(out_dir, processed.SPEAKERS,
                                                _json_bytes(_private_speakers(corpus, persona, fingerprint)))
        stats = _stats(corpus, tokenizer, pcfg, persona, results, temps, dtype=dtype, inputs=inputs,
                       n_rooms=n_rooms, base=base, started=started)
        temps[processed.STATS] = _write_temp(out_dir, processed.STATS, processed.stats_bytes(stats))
        commit(out_dir, temps)
        clock("write")
    except BaseException:
        if not (out_dir / JOURNAL).exists():  # once the journal exists, recover() finishes the commit
            for path in temps.values():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        raise
    return stats


def _encode_splits(splits: dict, tokenizer: _Tokenizer, target: int | None, pcfg: PreprocessConfig, dtype,
                   out_dir: Path, n_turns: int, temps: dict[str, Path]) -> dict[str, "SplitOut"]:
    """Both splits to temp files (their names added to ``temps`` as each is done, for the clean-up)."""
    results = {}
    if tokenizer.layout is not None:
        for name, sessions in splits.items():
            results[name] = write_split(name, sessions, base_chunks(sessions, tokenizer.layout, target, pcfg),
                                         pcfg, dtype, out_dir)
            temps.update(results[name].files)
    else:
        with chunk_encoder(tokenizer.tok, n_turns, _log) as encode_chunks:
            for name, sessions in splits.items():
                chunks = scratch_chunks(sessions, tokenizer.tok, encode_chunks, target, pcfg)
                results[name] = write_split(name, sessions, chunks, pcfg, dtype, out_dir)
                temps.update(results[name].files)
    if results["train"].target_turns == 0:
        raise ChatbotError(
            "the training split has no target turns (too few turns by the target, or they are all shorter than "
            "min_target_chars / lack min_context_turns); adjust processed.preprocess or add exports")
    if pcfg.val_fraction > 0 and results["val"].windows == 0:
        _log("warning: the validation split has no target turns (too little data); validation loss will be "
             "unavailable")
    return results


def _persona(corpus: _Corpus, pcfg: PreprocessConfig, self_name: str) -> dict:
    """stats.json's persona: pseudonyms only (target, the exporter, message counts kept per speaker)."""
    speakers, kept = corpus.speakers, corpus.kept_by_speaker
    persona = {
        "target": "room" if corpus.target is None else conv.pseudonym(corpus.target),
        "self": conv.pseudonym(speakers[self_name]) if speakers.get(self_name, 0) > 0 else None,
        "speakers": {conv.pseudonym(number): kept[number]
                     for number in sorted(kept, key=lambda number: (number == 0, number)) if number >= 0},
    }
    if pcfg.learn_turn_taking:
        persona["turn_taking"] = True  # the model can say who speaks next (status, reply_policy model)
    return persona


def _private_speakers(corpus: _Corpus, persona: dict, fingerprint: str) -> dict:
    """speakers.json: the real names behind the pseudonyms (private; never published)."""
    return {
        "_comment": "PRIVATE: real names of the chat participants. Never publish, share or commit this file.",
        "fingerprint": fingerprint,
        "speakers": {name: conv.pseudonym(number)
                     for name, number in sorted(corpus.speakers.items(), key=lambda item: item[1] or 1e9)},
        "target": persona["target"],
        "self": persona["self"],
    }


def _stats(corpus: _Corpus, tokenizer: _Tokenizer, pcfg: PreprocessConfig, persona: dict, results: dict,
           temps: dict[str, Path], *, dtype, inputs: dict, n_rooms: int, base: BaseTokenizer | None,
           started: float) -> dict:
    """stats.json's content (key order is part of the format: see chatbot/formats/processed.py)."""
    public_cfg = to_dict(pcfg)
    public_cfg["target"] = persona["target"]
    if not pcfg.learn_turn_taking:  # off = the layout of earlier versions: keep their config hash
        public_cfg.pop("learn_turn_taking", None)
    per_split = {key: {split: getattr(results[split], key) for split in SPLITS}
                 for key in ("sessions", "turns", "target_turns", "tokens", "target_tokens", "windows")}
    return {
        "format": FORMAT,
        "version": VERSION,
        "dtype": np.dtype(dtype).name,
        "vocab_size": tokenizer.vocab,
        "tokenizer_hash": stats_tok_hash(tokenizer.json),
        "config_hash": config_hash(public_cfg),
        "inputs_hash": inputs.get("inputs_hash", ""),
        "persona": persona,
        "rooms": inputs.get("rooms", n_rooms),
        "files": inputs.get("files", 0),
        "speakers": len(corpus.speakers),
        "messages": {"in": corpus.messages_in, "kept": corpus.kept,
                     "dropped": {reason: corpus.dropped[reason] for reason in conv.DROP_REASONS}},
        "pii": {kind: corpus.masker.counts[kind] for kind in (*PII_CLASSES, "name")},
        **per_split,
        **({"base": {"id": base.id, "revision": base.revision, "tokenizer_hash": stats_tok_hash(tokenizer.json),
                     "layout": "base-1"}} if base is not None else {}),
        "outputs": {name: {"bytes": path.stat().st_size, "sha256": sha256_file(path)} for name, path in temps.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }


def stats_tok_hash(tok_json: str) -> str:
    return hashlib.sha256(tok_json.encode("utf-8")).hexdigest()


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
        return ", ".join(f"{phase} {wall:.1f}s (cpu {cpu:.1f}s)" for phase, (wall, cpu) in self.spent.items())


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


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
