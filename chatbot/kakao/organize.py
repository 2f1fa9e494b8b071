"""``organize``: collect new exports, file them per room, and write ``data/raw/manifest.json``.

Where exports come from: every ``.txt`` / ``.csv`` / ``.zip`` under ``paths.raw.inbox`` (recursively, hidden files
skipped), plus files in the project root matching ``paths.raw.root_globs`` (never README, configs, code — only the
three export suffixes are considered, and a denylist of project file names is applied on top of the globs).

What happens to each file:

1. its sha256 is computed; a file whose content is already in the manifest is skipped (so running twice changes
   nothing; the same export dropped twice is organized once). A ``.zip`` may hold several exports (one folder
   per room, e.g. ``roomA/KakaoTalkChats.txt``, ``roomB/KakaoTalkChats.txt``): every ``.txt``/``.csv`` member
   that is an export becomes its own entry (identity = zip sha256 + member), members that are no export are
   skipped with a note, and a zip is done only when each of its exports is in the manifest. A zip member beyond
   ``paths.raw.zip_max_member_mb`` / ``zip_max_ratio`` (a zip bomb) gets the whole zip refused with one line and
   left where it was (see :mod:`chatbot.kakao.text`);
2. it is parsed in one streaming pass (bounded memory whatever its size): counts, speakers, first/last message,
   and a small fingerprint of its messages (sampled ``(minute, text)`` hashes) for room matching;
3. exports of one room are grouped: same room name (from the title; for CSV from KakaoTalk's file name
   ``KakaoTalk_Chat_<room>_<stamp>.csv``) unless their contents contradict it, or overlapping content (the
   fingerprints share most messages where their time ranges overlap — this catches iPhone ``Talk_…`` files
   that name no room and exports of one room from different platforms whose titles differ). A file matching
   nothing gets its own room, named after its title or, without one, after its speakers. Same speakers alone
   are not enough (two rooms of the same people are common);
4. it is **copied** (``paths.raw.move_files: true`` moves it instead, after the manifest is written) to
   ``<organized>/<room folder>/<file name>`` — a file already organized never moves again, so a room keeps its
   folder across runs; a zip whose exports belong to several rooms is copied into each of their folders;
5. the manifest is rewritten atomically, one entry per export (a file, or a member of a zip).

A file that is no KakaoTalk export is reported in one line and left exactly where it was; the other files are
still organized, and the command then exits with status 1 so scripts notice. ``--dry`` prints the plan and
changes nothing (no folder, no copy, no manifest).

Manifest entry keys: ``path`` (organized copy, relative to the project root), ``sha256``, ``format``, ``room``
(the room's name = its folder), ``room_id`` (stable folder name), ``title_room`` (the room named by this file's
own title, "" if none), ``saved_at``, ``messages`` (user messages: text, media, sender-deleted), ``system``
(system events), ``speakers`` (sorted distinct senders of messages), ``first`` / ``last`` (ISO time of the
first / last user message), ``kinds`` (count per record kind), ``encoding``, ``source`` (original file name),
``member`` (the export inside a zip, or null; ``(sha256, member)`` identifies an entry), ``members`` (member count in the title or null), ``segments``
(concatenated exports found in the file), ``size``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ChatbotError, FormatError
from ..formats import manifest
from ..fsio import (PRIVATE_DIR_MODE, atomic_open, fsync_dir, make_private, private_mkdir, relative_path,
                    sha256_file)
from ..portable import cut_bytes, name_key, safe_name
from ..records import SYSTEM_KINDS, Kind, Record
from .merge import merge_timelines, norm_text
from .parse import EXPECTED, ExportInfo, iter_records, parse_file
from .text import ArchiveLimitError, ZipLimits, zip_members

EXPORT_SUFFIXES = {".txt", ".csv", ".zip"}
# project files never collected from the root, whatever the globs say
_ROOT_DENY = re.compile(r"^(readme|license|licence|changelog|requirements|contributing|notice|copying)([._-].*)?$",
                        re.I)
SKETCH_CAP = 20_000  # fingerprint entries kept per file (sampling rate halves beyond this)


# ------------------------------------------------------------------------------------------------ fingerprints
@dataclass
class Sketch:
    """A consistent sample of a file's messages: hash of (minute, normalised text) -> (minute number, minute hash).

    Whole minutes are sampled: a message is kept when its minute's hash has ``level`` low zero bits, so two
    files sampled at the same level keep the same minutes (and the text of a skipped minute is never even
    normalised — this keeps organize fast on huge exports). When the sample outgrows SKETCH_CAP the level rises
    and the sample is thinned."""

    level: int = 0
    items: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, stamp: datetime, text: str) -> None:
        minute = stamp if not stamp.second else stamp - timedelta(seconds=stamp.second)
        minute_hash = hash(minute)
        if minute_hash & ((1 << self.level) - 1):
            return
        norm = norm_text(text)
        if len(norm) < 2:
            return
        minute_number = minute.toordinal() * 1440 + minute.hour * 60 + minute.minute
        self.items[hash((minute_hash, norm))] = (minute_number, minute_hash)
        if len(self.items) > SKETCH_CAP:
            self.thin()

    def thin(self) -> None:
        self.level += 1
        mask = (1 << self.level) - 1
        self.items = {key: value for key, value in self.items.items() if not value[1] & mask}

    def at(self, level: int) -> dict[int, int]:
        """key -> minute number of the samples a sketch at ``level`` would keep."""
        mask = (1 << level) - 1
        return {key: value[0] for key, value in self.items.items() if not value[1] & mask}


def overlap(first: Sketch, second: Sketch) -> tuple[int, int]:
    """(shared samples, samples of the smaller side) within the time window both files cover."""
    if not first.items or not second.items:
        return 0, 0
    level = max(first.level, second.level)  # compare at the coarser sampling: both then hold the same minutes
    first_at, second_at = first.at(level), second.at(level)
    if not first_at or not second_at:
        return 0, 0
    start = max(min(first_at.values()), min(second_at.values()))
    end = min(max(first_at.values()), max(second_at.values()))
    if start > end:
        return 0, 0
    n_first = sum(start <= minute <= end for minute in first_at.values())
    n_second = sum(start <= minute <= end for minute in second_at.values())
    shared = sum(1 for key in first_at.keys() & second_at.keys() if start <= first_at[key] <= end)
    return shared, min(n_first, n_second)


def same_content(first: Sketch, second: Sketch) -> bool:
    """Overlapping exports of one room share (nearly) every message where their time ranges overlap."""
    shared, small = overlap(first, second)
    return small > 0 and shared >= min(3, small) and shared >= 0.5 * small


def different_content(first: Sketch, second: Sketch) -> bool:
    """Both cover a common period with plenty of messages and share almost none (a "ㅋㅋ" in the same minute
    happens in unrelated rooms): two rooms with one name."""
    shared, small = overlap(first, second)
    return small >= 10 and shared < 0.2 * small


# ------------------------------------------------------------------------------------------------ one file
@dataclass
class FileStats:
    """What one streaming pass over an export yields for the manifest and for room matching."""

    path: Path
    sha256: str
    size: int
    info: ExportInfo
    messages: int = 0
    system: int = 0
    speakers: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    kinds: Counter = field(default_factory=Counter)
    sketch: Sketch = field(default_factory=Sketch)


def scan_file(path: Path, self_name: str, sha: str | None = None, *, member: str | None = None,
              limits: ZipLimits | None = None) -> FileStats:
    """Parse ``path`` (or its zip ``member``) in one streaming pass and collect its statistics. Raises
    FormatError (ArchiveLimitError for a zip member beyond ``limits``)."""
    info, records = iter_records(path, self_name, member=member, limits=limits)
    scanned = FileStats(path=path, sha256=sha or sha256_file(path), size=path.stat().st_size, info=info)
    system_kinds, message = SYSTEM_KINDS, Kind.MESSAGE
    kinds: dict[Kind, int] = {}
    speakers = scanned.speakers
    first = last = None
    messages = system = 0
    sketch = scanned.sketch
    mask = 0
    for record in records:
        kind = record.kind
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind in system_kinds:
            system += 1
            continue
        messages += 1
        speakers.add(record.speaker)
        stamp = record.timestamp
        if first is None or stamp < first:
            first = stamp
        if last is None or stamp > last:
            last = stamp
        if kind is message:
            # Sketch.add inlined: the minute-hash test rejects most messages of a big file cheaply
            minute = stamp if not stamp.second else stamp - timedelta(seconds=stamp.second)
            minute_hash = hash(minute)
            if minute_hash & mask:
                continue
            sketch.add(minute, record.text)
            mask = (1 << sketch.level) - 1
    scanned.messages, scanned.system, scanned.first, scanned.last = messages, system, first, last
    scanned.kinds = Counter({kind.value: count for kind, count in kinds.items()})
    return scanned


def _iso(stamp: datetime | None) -> str | None:
    return stamp.isoformat() if stamp is not None else None


def manifest_entry(scanned: FileStats, rel_path: str, room: str) -> dict[str, Any]:
    info = scanned.info
    return {
        "path": rel_path,
        "sha256": scanned.sha256,
        "format": info.format,
        "room": room,
        "room_id": room,
        "title_room": info.room,
        "saved_at": _iso(info.saved_at),
        "messages": scanned.messages,
        "system": scanned.system,
        "speakers": sorted(scanned.speakers),
        "first": _iso(scanned.first),
        "last": _iso(scanned.last),
        "kinds": dict(sorted(scanned.kinds.items())),
        "encoding": info.encoding,
        "source": scanned.path.name,
        "member": info.member,
        "members": info.members,
        "segments": len(info.segments),
        "size": scanned.size,
    }


# ------------------------------------------------------------------------------------------------ collecting
def _is_hidden(path: Path, base: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(base).parts)


def collect(cfg: Config) -> list[Path]:
    """Candidate export files: inbox (recursive) + project-root files matching ``raw.root_globs``."""
    found: dict[Path, None] = {}
    inbox = cfg.path(cfg.paths.raw.inbox)
    organized = cfg.path(cfg.paths.raw.organized).resolve()
    if inbox.is_dir():
        for path in sorted(inbox.rglob("*")):
            if (path.is_file() and not path.is_symlink() and path.suffix.lower() in EXPORT_SUFFIXES
                    and not _is_hidden(path, inbox) and organized not in path.resolve().parents):
                found[path] = None
    root = cfg.root
    for pattern in cfg.paths.raw.root_globs:
        if "/" in pattern or "\\" in pattern or pattern.startswith(".."):
            continue  # only the root folder itself
        for path in sorted(root.glob(pattern)):
            if (path.is_file() and not path.is_symlink() and path.suffix.lower() in EXPORT_SUFFIXES
                    and not path.name.startswith(".") and not _ROOT_DENY.match(path.name)):
                found[path] = None
    return list(found)


# ------------------------------------------------------------------------------------------------ rooms
FOLDER_MAX_BYTES = 120  # UTF-8 bytes of a room folder name (40 Hangul syllables, 30 emoji)
FILE_MAX_BYTES = 150  # UTF-8 bytes of an organized file name (temp names add ~15; file systems allow 255)


def folder_name(name: str) -> str:
    """A folder name for a room that every file system accepts (see chatbot.portable.safe_name): no characters
    Windows forbids, no trailing dots/spaces, no reserved device name, at most FOLDER_MAX_BYTES bytes."""
    return safe_name(name, FOLDER_MAX_BYTES, fallback="room")


def file_name(name: str) -> str:
    """The organized copy's file name: the source's, made safe like :func:`folder_name`, its suffix kept."""
    suffix = Path(name).suffix if Path(name).suffix.lower() in EXPORT_SUFFIXES else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    return safe_name(stem, FILE_MAX_BYTES - len(suffix.encode("utf-8")), fallback="export") + suffix.lower()


def numbered(base: str, number: int, suffix: str = "", max_bytes: int = FOLDER_MAX_BYTES) -> str:
    """``base (k)suffix`` (``base`` cut so the whole stays within ``max_bytes``); k == 1 gives ``base suffix``."""
    mark = "" if number == 1 else f" ({number})"
    return cut_bytes(base, max_bytes - len((mark + suffix).encode("utf-8"))).rstrip(" .") + mark + suffix


def title_key(room: str) -> str:
    """Room names compare without spaces/case; member lists compare as sets (truncation marks dropped)."""
    if "," in room:
        parts = sorted(part.strip() for part in room.split(",") if part.strip() and part.strip() not in ("...", "…"))
        return "members:" + ",".join(re.sub(r"\s+", "", part).lower() for part in parts)
    return re.sub(r"\s+", "", room).lower()


def _people(scanned: FileStats, self_name: str) -> frozenset[str]:
    return frozenset(speaker for speaker in scanned.speakers if speaker and speaker != self_name)


def _fallback_name(scanned: FileStats, self_name: str) -> str:
    people = sorted(_people(scanned, self_name))
    if people:
        name = ", ".join(people[:3])
        return name + (f" 외 {len(people) - 3}명" if len(people) > 3 else "")
    return Path(scanned.info.source).stem


class _Groups:
    """Union-find over file indices."""

    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def union(self, first: int, second: int) -> None:
        root_first, root_second = self.find(first), self.find(second)
        if root_first != root_second:
            self.parent[max(root_first, root_second)] = min(root_first, root_second)


def group_rooms(stats: list[FileStats], self_name: str) -> list[int]:
    """Group files of the same room; returns a group id per file (see module doc for the rules).

    The rules are pairwise, but only few pairs can match, so candidates come from two indexes instead of every
    pair (which made 1,000 exports take minutes): files with the same title key, and files sharing at least one
    fingerprint sample (``same_content`` needs a shared sample: the comparison level keeps a subset of both
    files' samples, and a sample's key does not depend on the level). A pair already in one group is not
    compared again. The groups are the connected components of the same matching pairs as comparing every pair,
    so the result is identical."""
    groups = _Groups(len(stats))
    by_title: dict[str, list[int]] = {}
    by_sample: dict[int, list[int]] = {}
    for index, scanned in enumerate(stats):
        title = scanned.info.room
        key_a = title_key(title) if title else None
        same_title = by_title.setdefault(key_a, []) if key_a is not None else []
        for other in same_title:
            if groups.find(index) != groups.find(other) and not different_content(scanned.sketch, stats[other].sketch):
                groups.union(index, other)
        candidates: set[int] = set()
        for key in scanned.sketch.items:
            holders = by_sample.get(key)
            if holders is None:
                by_sample[key] = [index]
            else:
                candidates.update(holders)
                holders.append(index)
        for other in sorted(candidates):
            other_title = stats[other].info.room
            if key_a is not None and other_title and title_key(other_title) == key_a:
                continue  # same title: decided by the title rule above
            if groups.find(index) != groups.find(other) and same_content(scanned.sketch, stats[other].sketch):
                groups.union(index, other)
        same_title.append(index)
    return [groups.find(index) for index in range(len(stats))]


# ------------------------------------------------------------------------------------------------ manifest
def manifest_path(cfg: Config) -> Path:
    return cfg.path(cfg.paths.raw.manifest)


def load_manifest(cfg: Config) -> list[dict]:
    """The manifest's entries ([] when organize has not run yet). Raises ChatbotError if it is unreadable."""
    return manifest.read(manifest_path(cfg))


def room_records(cfg: Config, room: str) -> list[Record]:
    """All records of one room (by ``room`` or ``room_id``): its organized files parsed, concatenated exports
    split, and everything merged into one timeline without duplicates (see chatbot.kakao.merge)."""
    entries = [entry for entry in load_manifest(cfg) if room in (entry.get("room"), entry.get("room_id"))]
    if not entries:
        raise ChatbotError(f"no room '{room}' in {manifest_path(cfg)}; run organize, or pick a room listed there")
    self_name = cfg.paths.raw.self_name
    exports: list[list[Record]] = []
    for entry in entries:
        path = cfg.path(entry["path"])
        if not path.exists():
            raise ChatbotError(f"{entry['path']} is listed in the manifest but missing; run organize again")
        exports.extend(parse_file(path, self_name, member=entry.get("member"),
                                  limits=ZipLimits.from_raw(cfg.paths.raw)).segment_records())
    return merge_timelines(exports, self_name)


# ------------------------------------------------------------------------------------------------ organize
def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temp file + fsync + rename (a crash never leaves a partial copy)."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    source_stat = src.stat()  # the times only: the copy stays 0600 (copystat would give it the source's 0644)
    os.utime(dst, ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))


def _target(folder: Path, name: str, sha: str, taken: dict[str, str]) -> Path:
    """``folder/name``, or ``name (2)`` … when a different file already has that name (names compare as the file
    system would: without case on Windows/macOS — ``taken`` maps :func:`name_key` of planned paths to their
    sha256; the same bytes share one copy: two exports inside one zip that belong to one room)."""
    safe = file_name(name)
    stem, suffix = safe[: len(safe) - len(Path(safe).suffix)], Path(safe).suffix
    number = 1
    while True:
        cand = folder / numbered(stem, number, suffix, FILE_MAX_BYTES)
        key = name_key(str(cand))
        if taken.get(key, sha) == sha and (key in taken or not cand.exists() or sha256_file(cand) == sha):
            return cand
        number += 1


def _rel(cfg: Config, path: Path) -> str:
    """How the manifest and the messages write a path: project-relative with ``/`` (the same on every OS), or as
    given when it lies outside the project."""
    rel = relative_path(cfg.root, path)
    return rel.as_posix() if rel is not None else str(path)


def _summary(entries: list[dict], out) -> None:
    rooms: dict[str, list[dict]] = {}
    for entry in entries:
        rooms.setdefault(entry["room"], []).append(entry)
    rows = [("room", "files", "formats", "messages", "system", "speakers", "first", "last")]
    for room in sorted(rooms):
        room_entries = rooms[room]
        firsts = [entry["first"] for entry in room_entries if entry.get("first")]
        lasts = [entry["last"] for entry in room_entries if entry.get("last")]
        rows.append((
            room, str(len(room_entries)), ",".join(sorted({entry["format"] for entry in room_entries})),
            str(sum(entry["messages"] for entry in room_entries)), str(sum(entry["system"] for entry in room_entries)),
            str(len({speaker for entry in room_entries for speaker in entry["speakers"]})),
            min(firsts)[:16] if firsts else "-", max(lasts)[:16] if lasts else "-",
        ))
    widths = [max(_width(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell + " " * (width - _width(cell)) for cell, width in zip(row, widths)).rstrip(), file=out)


def _width(text: str) -> int:
    """Terminal columns of ``text`` (Hangul and other wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


@dataclass
class _Collected:
    """What the pass over the inbox found: new exports to file, files already organized, refusals."""

    new: list[FileStats] = field(default_factory=list)
    already: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def organize(cfg: Config, dry: bool = False) -> None:
    """Collect, parse, group and file new exports; rewrite the manifest. See the module doc."""
    out = sys.stdout
    raw = cfg.paths.raw
    organized = cfg.path(raw.organized)
    entries = load_manifest(cfg)
    kept = _entries_still_there(cfg, entries, out)
    found = _collect_new(cfg, kept, dry, out)
    for msg in found.failures:
        print(f"refused: {msg}", file=sys.stderr)
    if not found.new:
        if not dry and kept != entries:
            manifest.write(manifest_path(cfg), kept)
        print(f"nothing new to organize ({len(found.already)} file(s) already organized)" if not found.failures
              else "no new export organized", file=out)
        if kept:
            _summary(kept, out)
        _finish(found.failures)
        return

    plan = _plan_new_files(cfg, kept, found.new)
    verb = "move" if raw.move_files else "copy"
    for scanned, dst, entry in plan:
        what = _rel(cfg, scanned.path) + (f" ({scanned.info.member})" if scanned.info.member else "")
        print(f"{'plan' if dry else verb}: {what} -> {entry['path']}  [{entry['format']}, {entry['messages']} "
              f"messages, {entry['system']} system]", file=out)
    final = sorted(kept + [entry for _, _, entry in plan], key=lambda entry: entry["path"])
    if dry:
        print(f"dry run: {len(plan)} new file(s) would be organized; nothing was changed", file=out)
        _summary(final, out)
        _finish(found.failures)
        return

    _copy_all_or_nothing(cfg, organized, [(scanned.path, scanned.sha256, dst) for scanned, dst, _ in plan],
                         lambda: manifest.write(manifest_path(cfg), final))
    if raw.move_files:
        _remove_moved_sources(plan)
    print(f"organized {len(plan)} new file(s) into {_rel(cfg, organized)}; manifest: {_rel(cfg, manifest_path(cfg))}",
          file=out)
    _summary(final, out)
    _finish(found.failures)


def _entries_still_there(cfg: Config, entries: list[dict], out) -> list[dict]:
    """The manifest entries whose organized copy still exists (a note for each one that is gone)."""
    kept: list[dict] = []
    for entry in entries:
        if cfg.path(entry["path"]).is_file():
            kept.append(entry)
        else:
            print(f"note: {entry['path']} is gone from {cfg.paths.raw.organized}; its manifest entry is dropped",
                  file=out)
    return kept


def _collect_new(cfg: Config, kept: list[dict], dry: bool, out) -> _Collected:
    """Hash and scan every collected file; the exports not in the manifest yet are ``new``."""
    raw = cfg.paths.raw
    by_sha = {entry["sha256"]: entry for entry in kept}
    known = {(entry["sha256"], entry.get("member")) for entry in kept}
    limits = ZipLimits.from_raw(raw)
    found = _Collected()
    seen_sha: set[str] = set()
    for path in collect(cfg):
        try:
            sha = sha256_file(path)
            members = _export_members(path, limits)
        except FormatError as exc:
            found.failures.append(str(exc))
            continue
        except OSError as exc:
            found.failures.append(f"{path.name}: cannot read ({exc.strerror or type(exc).__name__}); left where it was")
            continue
        todo = [member for member in members if (sha, member) not in known]
        if todo and sha in seen_sha:
            print(f"skip: {_rel(cfg, path)} is a duplicate of a file collected above", file=out)
            continue
        got, problem = (_scan_members(path, sha, todo, len(members), raw.self_name, limits, out) if todo
                        else ([], None))
        if problem is not None:
            found.failures.append(str(problem))
            continue
        if not got:
            found.already.append(path)  # every export in it is organized (what is left are members that are no export)
            if raw.move_files and not dry and sha in by_sha:
                _finish_move(cfg, path, by_sha[sha])
            continue
        seen_sha.add(sha)
        found.new.extend(got)
    return found


def _plan_new_files(cfg: Config, kept: list[dict], new: list[FileStats]) -> list[tuple[FileStats, Path, dict]]:
    """(export, destination, manifest entry) per new export. The organized files take part in the room matching
    (re-scanned only now that something is new); ``kept`` gets their refreshed counts."""
    self_name = cfg.paths.raw.self_name
    old_stats, old_rooms = _rescan_organized(cfg, kept)
    group_of = group_rooms(old_stats + new, self_name)
    room_of_group = _name_new_rooms(kept, old_stats + new, group_of, old_rooms, self_name)
    organized = cfg.path(cfg.paths.raw.organized)
    plan: list[tuple[FileStats, Path, dict]] = []
    taken: dict[str, str] = {name_key(str(cfg.path(entry["path"]))): entry["sha256"] for entry in kept}
    for index, scanned in enumerate(new, start=len(old_stats)):
        room = room_of_group[group_of[index]]
        dst = _target(organized / room, scanned.path.name, scanned.sha256, taken)
        taken[name_key(str(dst))] = scanned.sha256
        plan.append((scanned, dst, manifest_entry(scanned, _rel(cfg, dst), room)))
    return plan


def _rescan_organized(cfg: Config, kept: list[dict]) -> tuple[list[FileStats], list[str]]:
    """(stats, room folder) of every organized export that still scans; refreshes its entry in ``kept``."""
    limits = ZipLimits.from_raw(cfg.paths.raw)
    old_stats: list[FileStats] = []
    old_rooms: list[str] = []
    for index, entry in enumerate(kept):
        try:
            scanned = scan_file(cfg.path(entry["path"]), cfg.paths.raw.self_name, entry["sha256"],
                           member=entry.get("member"), limits=limits)
        except (FormatError, OSError):
            continue
        old_stats.append(scanned)
        old_rooms.append(entry["room_id"])
        # refresh the counts with this parser (its path, room and source name never change)
        kept[index] = {**manifest_entry(scanned, entry["path"], entry["room"]), "room_id": entry["room_id"],
                       "source": entry.get("source", scanned.path.name)}
    return old_stats, old_rooms


def _name_new_rooms(kept: list[dict], stats: list[FileStats], group_of: list[int], old_rooms: list[str],
                    self_name: str) -> dict[int, str]:
    """Room folder per group: a group that holds an organized file keeps that file's folder; a new group is named
    after its newest titled export (or its people), numbered past the names already taken."""
    room_of_group: dict[int, str] = {}
    for index, room in enumerate(old_rooms):
        room_of_group.setdefault(group_of[index], room)
    # names of rooms in the manifest are taken; a folder on disk that no entry names (left by an interrupted
    # run) is reused — files in it are only reused when their bytes match (see _target)
    used = {name_key(entry["room_id"]) for entry in kept}
    files_of_group: dict[int, list[FileStats]] = {}
    for index, scanned in enumerate(stats):
        files_of_group.setdefault(group_of[index], []).append(scanned)
    for group in sorted(set(group_of[len(old_rooms):])):
        if group in room_of_group:
            continue
        members = files_of_group[group]
        titled = [member for member in members if member.info.room]
        if titled:
            name = max(titled, key=lambda member: (member.info.saved_at or datetime.min, member.messages)).info.room
        else:
            name = _fallback_name(max(members, key=lambda member: member.messages), self_name)
        base, number = folder_name(name), 1
        while name_key(cand := numbered(base, number)) in used:
            number += 1
        used.add(name_key(cand))
        room_of_group[group] = cand
    return room_of_group


def _remove_moved_sources(plan: list[tuple[FileStats, Path, dict]]) -> None:
    """``move_files``: remove each source once its copy is checked (a zip of several rooms has several copies:
    removed after the first)."""
    for scanned, dst, _ in plan:
        if (scanned.path.exists() and scanned.path.resolve() != dst.resolve() and dst.is_file()
                and sha256_file(dst) == scanned.sha256):
            os.unlink(scanned.path)
            fsync_dir(scanned.path.parent)


def _export_members(path: Path, limits: ZipLimits) -> list[str | None]:
    """[None] for a plain file; for a zip, every ``.txt``/``.csv`` member (each may be an export of its own
    room). Raises FormatError, ArchiveLimitError when a member's declared size is beyond ``limits``."""
    if path.suffix.lower() != ".zip" and not zipfile.is_zipfile(path):
        return [None]
    infos, _room = zip_members(path, limits)
    return [info.filename for info in infos]


def _scan_members(path: Path, sha: str, members: list[str | None], n_members: int, self_name: str,
                  limits: ZipLimits, out) -> tuple[list[FileStats], FormatError | None]:
    """Scan each export of a file; (stats, None), or ([], the refusal) when the file must be left alone: a zip
    member beyond the limits (the whole zip is refused), a plain file that is no export, or a zip of which no
    member is one. Members of a several-file zip that are no export are skipped with a note."""
    got: list[FileStats] = []
    skipped: list[str] = []
    for member in members:
        try:
            got.append(scan_file(path, self_name, sha, member=member, limits=limits))
        except ArchiveLimitError as exc:
            return [], exc
        except FormatError as exc:
            if n_members == 1:
                return [], exc
            why = "is no KakaoTalk export" if f"{path.name} is " in str(exc) else f"cannot be read ({exc})"
            skipped.append(f"note: {path.name}: {member} inside the zip {why}; skipped")
        except OSError as exc:
            return [], FormatError(f"{path.name}: cannot read ({exc.strerror or type(exc).__name__}); left where "
                                   "it was")
    if not got and len(members) == n_members:
        return [], FormatError(f"{path.name}: no file inside the zip is a KakaoTalk export ({EXPECTED}); the file "
                               "was left untouched")
    if got:
        for line in skipped:
            print(line, file=out)
    return got, None


def _copy_all_or_nothing(cfg: Config, organized: Path, copies: list[tuple[Path, str, Path]], commit) -> None:
    """Copy every ``(source, sha256, destination)``, then ``commit()`` (the manifest write). If anything fails
    (disk full, a name the file system refuses, Ctrl+C), the copies and folders this run made are removed again,
    so the organized folder and the manifest stay as they were before the run."""
    made_files: list[Path] = []
    made_dirs: list[Path] = []
    private_mkdir(organized.parent)
    try:
        for src, sha, dst in copies:
            if dst.exists() and sha256_file(dst) == sha:
                continue  # left by an interrupted run: reused
            for folder in reversed([dst.parent, *dst.parent.parents]):
                if folder == organized or organized in folder.parents:
                    if not folder.exists():
                        folder.mkdir(mode=PRIVATE_DIR_MODE)  # room names: not even listable by others
                        make_private(folder, PRIVATE_DIR_MODE)
                        made_dirs.append(folder)
            existed = dst.exists()
            _copy_atomic(src, dst)
            if not existed:
                made_files.append(dst)
        commit()
    except BaseException as exc:
        for made in made_files:
            with contextlib.suppress(OSError):
                made.unlink()
        for folder in reversed(made_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise ChatbotError(f"could not write into {_rel(cfg, organized)} ({exc.strerror or type(exc).__name__});"
                               " nothing was organized and no file was changed — fix that and run organize again"
                               ) from None
        raise


def _finish_move(cfg: Config, src: Path, entry: dict) -> None:
    """``move_files``: a source whose content is already organized (an earlier run copied it and was stopped
    before removing it) is removed now — only after checking the organized copy's bytes."""
    dst = cfg.path(entry["path"])
    if src.resolve() != dst.resolve() and dst.is_file() and sha256_file(dst) == entry["sha256"]:
        os.unlink(src)
        fsync_dir(src.parent)


def _finish(failures: list[str]) -> None:
    if failures:
        raise ChatbotError(f"{len(failures)} file(s) are not KakaoTalk exports or could not be read; they were left "
                           "where they were (see the lines above)", exit_code=1)
