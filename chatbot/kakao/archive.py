"""``archive``: move processed data, checkpoints and artifacts aside so the user can start fresh. Never deletes.

Everything moves into ``<paths.archive>/<YYYYmmdd-HHMMSS>[-tag]/``, keeping its path relative to the project
root (``data/processed/…``, ``checkpoints/<run>/…``, ``artifacts/…``), so putting it back is a plain move.
Placeholder ``.gitkeep`` files stay where they are. ``--include-raw`` also moves the raw data: the organized
exports, the manifest and the inbox (the user's original files then live only in the archive — still never
deleted). An ``ARCHIVE.json`` inside the folder lists what came from where.

Refuses (LockedError) while any run under ``checkpoints/`` holds a live run lock: moving a checkpoint under a
running trainer would lose its next save. ``--dry`` prints the plan and changes nothing.
"""

from __future__ import annotations

import re
import shutil
import sys
from datetime import datetime
from pathlib import Path

from ..config import Config
from ..errors import ChatbotError, LockedError
from ..fsio import PRIVATE_DIR_MODE, atomic_write_json, fsync_dir, make_private, private_mkdir, relative_path
from ..lock import active_lock

KEEP = {".gitkeep"}
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _contents(folder: Path) -> list[Path]:
    """Entries of ``folder`` to move (placeholders stay). A missing folder has none."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.name not in KEEP)


def _check_locks(checkpoints: Path) -> None:
    runs = [path for path in sorted(checkpoints.iterdir()) if path.is_dir()] if checkpoints.is_dir() else []
    dirs = [checkpoints] + runs
    for run in dirs:
        info = active_lock(run)
        if info is not None:
            raise LockedError(f"run '{run.name}' is being trained (pid {info.pid} on {info.host}); stop it "
                              f"(create {run / 'STOP'}) or wait for it to finish, then archive")


def _items(cfg: Config, include_raw: bool) -> list[Path]:
    archive_root = cfg.path(cfg.paths.archive).resolve()
    items = _contents(cfg.processed_dir) + _contents(cfg.path(cfg.paths.checkpoints)) + \
        _contents(cfg.path(cfg.paths.artifacts))
    if include_raw:
        raw = cfg.paths.raw
        items += _contents(cfg.path(raw.organized)) + _contents(cfg.path(raw.inbox))
        manifest = cfg.path(raw.manifest)
        if manifest.is_file():
            items.append(manifest)
    # never move the archive into itself (e.g. an archive folder configured inside data/processed)
    out = []
    for item in items:
        resolved = item.resolve()
        if resolved == archive_root or archive_root in resolved.parents or resolved in archive_root.parents:
            continue
        out.append(item)
    return out


def _rel(cfg: Config, path: Path) -> Path:
    """Where ``path`` goes under the archive folder: its project-relative path, or ``external/<name>`` for an item
    outside the project (a configured folder elsewhere), so nothing is ever moved outside the archive."""
    rel = relative_path(cfg.root, path)
    return rel if rel is not None else Path("external") / path.name


def archive(cfg: Config, dry: bool = False, tag: str = "", include_raw: bool = False) -> None:
    """Move processed data, checkpoints and artifacts (and with ``include_raw`` the raw data) into a new
    timestamped folder under ``paths.archive``. See the module doc."""
    if tag and not _TAG.match(tag):
        raise ChatbotError(f"--tag '{tag}': use letters, digits, '.', '_' or '-' (at most 64 characters)")
    _check_locks(cfg.path(cfg.paths.checkpoints))
    items = _items(cfg, include_raw)
    if not items:
        print("nothing to archive (processed data, checkpoints and artifacts are already empty)")
        return
    archive_root = cfg.path(cfg.paths.archive)
    name = datetime.now().strftime("%Y%m%d-%H%M%S") + (f"-{tag}" if tag else "")
    dest = archive_root / name
    number = 2
    while dest.exists():
        dest, number = archive_root / f"{name}-{number}", number + 1
    moves = [(item, dest / _rel(cfg, item)) for item in items]
    for src, dst in moves:
        print(f"{'plan' if dry else 'move'}: {_rel(cfg, src).as_posix()} -> {_rel(cfg, dst).as_posix()}")
    if dry:
        print(f"dry run: {len(moves)} item(s) would move into {_rel(cfg, dest).as_posix()}; nothing was changed")
        return
    private_mkdir(dest.parent)
    dest.mkdir(mode=PRIVATE_DIR_MODE)  # (a new name: an existing archive folder is never reused)
    make_private(dest, PRIVATE_DIR_MODE)
    done = []
    for src, dst in moves:
        _check_locks(cfg.path(cfg.paths.checkpoints))  # a trainer may have started meanwhile
        private_mkdir(dst.parent)
        shutil.move(str(src), str(dst))  # a rename on one filesystem; copy-then-remove across filesystems
        fsync_dir(src.parent)
        done.append({"from": _rel(cfg, src).as_posix(), "to": _rel(cfg, dst).as_posix()})
    atomic_write_json(dest / "ARCHIVE.json", {"created": datetime.now().isoformat(timespec="seconds"),
                                              "tag": tag, "include_raw": include_raw, "moved": done})
    print(f"archived {len(done)} item(s) into {_rel(cfg, dest).as_posix()} (nothing was deleted)", file=sys.stdout)
