"""organize: collect, group by room, copy, manifest; idempotent; --dry changes nothing; refusals leave files."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import datetime

import pytest

from chatbot.config import load_config
from chatbot.errors import ChatbotError
from chatbot.fsio import sha256_file
from chatbot.kakao import parse_file
from chatbot.kakao.organize import load_manifest, organize, room_records
from chatbot.ops import main
from tests.support.kakao import FIXTURES, conversation, render, snapshot, write
from tests.support.workspace import make_workspace

PEOPLE = ["이도현(Leo)", "김민준", "이서연"]
EVENTS = conversation(datetime(2018, 4, 7, 23, 40), 200, PEOPLE, seed=11)
KEYS = {"path", "sha256", "format", "room", "room_id", "saved_at", "messages", "system", "speakers", "first", "last"}


def drop_exports(cfg):
    """Three exports of one room from three platforms (overlapping), an iPhone Talk_ file of the same room,
    another room, and a file that is no export."""
    inbox = cfg.path(cfg.paths.raw.inbox)
    room = "스터디 모임"
    write(inbox / "KakaoTalk_20180601_1000_00_000_group.txt",
          render("windows_ko", room, EVENTS[:120], datetime(2018, 6, 1), self_name="이도현(Leo)"))
    write(inbox / "phone" / "KakaoTalkChats.txt",
          render("android_en", room, EVENTS[80:170], datetime(2018, 7, 1), self_name="이도현(Leo)"))
    write(inbox / f"KakaoTalk_Chat_{room}_2018-08-01-10-00-00.csv",
          render("csv", room, EVENTS[100:], datetime(2018, 8, 1)))
    write(inbox / "Talk_2018.8.2 10:00-1.txt",
          render("ios_ko", room, EVENTS[150:], datetime(2018, 8, 2), self_name="이도현(Leo)", talk_name=True))
    shutil.copy(FIXTURES / "android_ko_2025.txt", inbox / "other_room.txt")
    write(inbox / "notes.txt", "shopping list\n- milk\n")
    return inbox


def run(cfg, dry=False):
    """organize; returns True when it finished with the 'some files refused' error (exit status 1)."""
    try:
        organize(cfg, dry=dry)
    except ChatbotError as exc:
        assert exc.exit_code == 1 and "\n" not in str(exc)
        return True
    return False


def test_organize_groups_rooms_and_writes_the_manifest(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    inbox = drop_exports(cfg)
    notes = (inbox / "notes.txt").read_bytes()
    assert run(cfg)  # notes.txt is refused -> exit status 1, the rest organized
    err = capsys.readouterr().err
    assert "notes.txt" in err and "milk" not in err
    assert (inbox / "notes.txt").read_bytes() == notes  # left exactly where it was

    entries = load_manifest(cfg)
    raw = json.loads(cfg.path(cfg.paths.raw.manifest).read_text(encoding="utf-8"))
    assert raw == entries and len(entries) == 5
    by_source = {e["source"]: e for e in entries}
    for e in entries:
        assert KEYS <= set(e)
        copy = cfg.path(e["path"])
        assert copy.is_file() and sha256_file(copy) == e["sha256"]
        assert copy.parent.parent == cfg.path(cfg.paths.raw.organized)
        # the manifest counts are exactly what the parser sees in that file
        p = parse_file(copy)
        users = [r for r in p.records if r.is_user_message]
        assert e["format"] == p.format and e["messages"] == len(users)
        assert e["system"] == sum(r.is_system for r in p.records)
        assert e["speakers"] == sorted({r.speaker for r in users})
        assert e["first"] == min(r.timestamp for r in users).isoformat()
        assert e["last"] == max(r.timestamp for r in users).isoformat()
    # four exports of one room (three titles + a Talk_ file matched by content) share one folder
    study = {by_source[n]["room_id"] for n in ("KakaoTalk_20180601_1000_00_000_group.txt", "KakaoTalkChats.txt",
                                               "KakaoTalk_Chat_스터디 모임_2018-08-01-10-00-00.csv",
                                               "Talk_2018.8.2 10:00-1.txt")}
    assert study == {"스터디 모임"}
    assert by_source["other_room.txt"]["room"] == "동네 중고거래 알림방"
    assert by_source["Talk_2018.8.2 10:00-1.txt"]["title_room"] == ""
    assert {e["format"] for e in entries} == {"windows_ko", "android_en", "csv", "ios_ko", "android_ko"}
    # copy mode: the user's files are still in the inbox
    assert (inbox / "phone" / "KakaoTalkChats.txt").is_file()

    # the room's merged timeline is the original conversation, once, with one name for the exporter
    recs = [r for r in room_records(cfg, "스터디 모임") if r.is_user_message]
    assert len(recs) == len(EVENTS)
    assert [r.timestamp.replace(second=0) for r in recs] == [e.ts.replace(second=0) for e in EVENTS]
    assert {r.speaker for r in recs} == set(PEOPLE)


def test_second_run_changes_nothing(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    drop_exports(cfg)
    run(cfg)
    before = snapshot(tmp_path)
    capsys.readouterr()
    run(cfg)
    assert snapshot(tmp_path) == before
    assert "no new export organized" in capsys.readouterr().out


def test_dry_run_changes_nothing(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    drop_exports(cfg)
    before = snapshot(tmp_path)
    run(cfg, dry=True)
    assert snapshot(tmp_path) == before
    assert not cfg.path(cfg.paths.raw.organized).exists() and not cfg.path(cfg.paths.raw.manifest).exists()
    out = capsys.readouterr().out
    assert "KakaoTalkChats.txt" in out and "dry run" in out


def test_new_export_of_a_known_room_joins_its_folder(tmp_path):
    cfg = make_workspace(tmp_path)
    inbox = cfg.path(cfg.paths.raw.inbox)
    write(inbox / "a.txt", render("windows_ko", "스터디 모임", EVENTS[:100], datetime(2018, 5, 1)))
    organize(cfg)
    first = snapshot(cfg.path(cfg.paths.raw.organized))
    # months later: a re-export (Talk_ name, no room in the title) overlapping the first one
    write(inbox / "Talk_2018.9.1 10:00-1.txt",
          render("ios_ko", "스터디 모임", EVENTS[60:], datetime(2018, 9, 1), talk_name=True))
    organize(cfg)
    entries = load_manifest(cfg)
    assert [e["room_id"] for e in entries] == ["스터디 모임", "스터디 모임"]
    after = snapshot(cfg.path(cfg.paths.raw.organized))
    assert {k: after[k] for k in first} == first  # the organized file did not move or change
    assert len([r for r in room_records(cfg, "스터디 모임") if r.is_user_message]) == len(EVENTS)


def test_same_file_twice_and_root_globs(tmp_path):
    cfg = make_workspace(tmp_path)
    paths_yaml = cfg.config_dir / "paths.yaml"
    text = paths_yaml.read_text(encoding="utf-8")
    paths_yaml.write_text(text.replace('    - "KakaoTalk*.txt"', '    - "KakaoTalk*.txt"\n    - "*.txt"'),
                          encoding="utf-8")
    cfg = load_config(cfg.config_dir)
    export = render("android_ko", "가족", EVENTS[:30], datetime(2018, 5, 1))
    write(tmp_path / "KakaoTalkChats.txt", export)  # dropped in the project root
    write(cfg.path(cfg.paths.raw.inbox) / "KakaoTalkChats.txt", export)  # and the same bytes in the inbox
    write(tmp_path / "README.txt", "2018년 4월 7일 오후 9:12, 가 : 나\n")  # never collected, whatever the globs
    write(tmp_path / "requirements.txt", "numpy\n")
    organize(cfg)
    entries = load_manifest(cfg)
    assert len(entries) == 1 and entries[0]["room"] == "가족"
    assert (tmp_path / "KakaoTalkChats.txt").is_file() and (tmp_path / "README.txt").is_file()


def test_move_files_moves_only_after_the_manifest(tmp_path):
    cfg = make_workspace(tmp_path)
    paths_yaml = cfg.config_dir / "paths.yaml"
    paths_yaml.write_text(paths_yaml.read_text(encoding="utf-8").replace("move_files: false", "move_files: true"),
                          encoding="utf-8")
    cfg = load_config(cfg.config_dir)
    assert cfg.paths.raw.move_files
    src = write(cfg.path(cfg.paths.raw.inbox) / "KakaoTalkChats.txt",
                render("android_ko", "가족", EVENTS[:30], datetime(2018, 5, 1)))
    data = src.read_bytes()
    organize(cfg)
    assert not src.exists()
    (entry,) = load_manifest(cfg)
    assert cfg.path(entry["path"]).read_bytes() == data


def test_zip_in_the_inbox(tmp_path):
    cfg = make_workspace(tmp_path)
    z = cfg.path(cfg.paths.raw.inbox) / "KakaoTalk_가족.zip"
    z.parent.mkdir(parents=True)
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("KakaoTalkChats.txt", render("android_en", "가족", EVENTS[:40], datetime(2018, 5, 1)))
    organize(cfg)
    (entry,) = load_manifest(cfg)
    assert entry["format"] == "android_en" and entry["member"] == "KakaoTalkChats.txt"
    assert entry["path"].endswith(".zip") and entry["messages"] == 40


def test_cli_exit_codes(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    write(cfg.path(cfg.paths.raw.inbox) / "a.txt", render("windows_ko", "가족", EVENTS[:10], datetime(2018, 5, 1)))
    assert main(["organize", "--config-dir", str(cfg.config_dir), "--dry"]) == 0
    assert main(["organize", "--config-dir", str(cfg.config_dir)]) == 0
    write(cfg.path(cfg.paths.raw.inbox) / "b.csv", "not,a,kakao\nexport,at,all\n")
    assert main(["organize", "--config-dir", str(cfg.config_dir)]) == 1
    assert "b.csv" in capsys.readouterr().err


def test_room_records_unknown_room(tmp_path):
    cfg = make_workspace(tmp_path)
    with pytest.raises(ChatbotError, match="no room"):
        room_records(cfg, "없는 방")
    assert load_manifest(cfg) == []


def test_content_fingerprints_at_different_sampling_levels(tmp_path, monkeypatch):
    """Overlapping exports match by content even when one is big enough to be sampled coarsely; a different
    conversation in the same period does not."""
    import chatbot.kakao.organize as org

    monkeypatch.setattr(org, "SKETCH_CAP", 200)  # thinned, yet enough samples for every hash seed
    big = conversation(datetime(2020, 1, 1, 9, 0), 1500, PEOPLE, seed=5)
    other = conversation(datetime(2020, 1, 1, 9, 0), 800, ["박지호", "최유나"], seed=6)
    a = org.scan_file(write(tmp_path / "a.txt", render("windows_ko", "가", big, datetime(2020, 3, 1))), "나")
    b = org.scan_file(write(tmp_path / "b.txt", render("ios_en", "나", big[1000:1300], datetime(2020, 3, 1),
                                                       talk_name=True)), "나")
    c = org.scan_file(write(tmp_path / "c.txt", render("android_ko", "다", other, datetime(2020, 3, 1))), "나")
    assert a.sketch.level > b.sketch.level >= 1  # both thinned, to different levels
    assert org.same_content(a.sketch, b.sketch) and org.same_content(b.sketch, a.sketch)
    assert not org.same_content(a.sketch, c.sketch) and not org.same_content(b.sketch, c.sketch)
    assert org.group_rooms([a, b, c], "나") == [0, 0, 2]


def test_two_rooms_with_one_name_stay_apart(tmp_path):
    cfg = make_workspace(tmp_path)
    inbox = cfg.path(cfg.paths.raw.inbox)
    t0 = datetime(2021, 5, 1, 10, 0)
    write(inbox / "a.txt", render("windows_ko", "가족", conversation(t0, 60, ["엄마", "아빠"], seed=1), t0))
    write(inbox / "b.txt", render("android_ko", "가족", conversation(t0, 60, ["할머니", "삼촌"], seed=2), t0))
    organize(cfg)
    assert sorted(e["room_id"] for e in load_manifest(cfg)) == ["가족", "가족 (2)"]


def test_interrupted_run_is_completed_without_duplicates(tmp_path, monkeypatch):
    """A run killed after copying but before writing the manifest: the next run reuses the copy."""
    import chatbot.kakao.organize as org

    cfg = make_workspace(tmp_path)
    write(cfg.path(cfg.paths.raw.inbox) / "a.txt", render("windows_ko", "가족", EVENTS[:20], datetime(2018, 5, 1)))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(org.manifest, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        organize(cfg)
    assert not cfg.path(cfg.paths.raw.manifest).exists()
    monkeypatch.undo()
    organize(cfg)
    (entry,) = load_manifest(cfg)
    files = [p for p in cfg.path(cfg.paths.raw.organized).rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [entry["path"]] == ["data/raw/organized/가족/a.txt"]


# ------------------------------------------------------------------------------------------------ folder names
def test_room_title_longer_than_a_file_name_is_cut_by_bytes_and_kept_apart(tmp_path, capsys):
    """90 emoji (360 bytes) used to crash with 'File name too long' after copying some files; two such rooms whose
    titles differ only after the cut still get two folders."""
    cfg = make_workspace(tmp_path)
    inbox = cfg.path(cfg.paths.raw.inbox)
    t0 = datetime(2021, 5, 1, 10, 0)
    long_a, long_b = "🎉" * 90 + "A", "🎉" * 90 + "B"
    write(inbox / "a.txt", render("windows_ko", long_a, conversation(t0, 40, ["가", "나"], seed=1), t0))
    write(inbox / "b.txt", render("windows_ko", long_b, conversation(t0, 40, ["다", "라"], seed=2), t0))
    organize(cfg)
    entries = load_manifest(cfg)
    folders = sorted(e["room_id"] for e in entries)
    assert len(set(folders)) == 2
    for e in entries:
        assert len(e["room_id"].encode("utf-8")) <= 120
        assert cfg.path(e["path"]).is_file() and cfg.path(e["path"]).parent.name == e["room_id"]
    assert set(folders) == {"🎉" * 30, "🎉" * 29 + " (2)"}  # 120 bytes each, the number kept


@pytest.mark.parametrize("title, folder", [
    ('우리 "방": 1/2 <최고>?*|', "우리 _방_ 1_2 _최고_"),
    ("CON", "CON_"),
    ("nul.txt", "nul_.txt"),
    ("  주말 모임...  ", "주말 모임"),
    ("...", "room"),
])
def test_folder_names_avoid_what_windows_forbids(title, folder):
    from chatbot.kakao.organize import folder_name

    assert folder_name(title) == folder


def test_names_that_differ_only_in_case_get_two_folders(tmp_path):
    """Windows and macOS ignore case: 'Family' and 'family' would be one folder there."""
    cfg = make_workspace(tmp_path)
    inbox = cfg.path(cfg.paths.raw.inbox)
    t0 = datetime(2021, 5, 1, 10, 0)
    write(inbox / "a.txt", render("windows_en", "Family", conversation(t0, 60, ["Mom", "Dad"], seed=1), t0))
    write(inbox / "b.txt", render("android_en", "FAMILY ", conversation(t0, 60, ["Gran", "Tom"], seed=2), t0))
    organize(cfg)
    folders = sorted(e["room_id"] for e in load_manifest(cfg))
    assert len({f.casefold() for f in folders}) == 2, folders


def test_a_failed_copy_leaves_no_half_done_organize(tmp_path, monkeypatch):
    """The second copy fails (disk full): the first copy and the new folders are removed again, no manifest is
    written, one line says so; the next run organizes everything."""
    import chatbot.kakao.organize as org

    cfg = make_workspace(tmp_path)
    inbox = cfg.path(cfg.paths.raw.inbox)
    t0 = datetime(2021, 5, 1, 10, 0)
    write(inbox / "a.txt", render("windows_ko", "가족", conversation(t0, 30, ["엄마", "아빠"], seed=1), t0))
    write(inbox / "b.txt", render("windows_ko", "친구", conversation(t0, 30, ["철수", "영희"], seed=2), t0))
    real, calls = org._copy_atomic, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(org, "_copy_atomic", flaky)
    with pytest.raises(ChatbotError) as err:
        organize(cfg)
    assert "No space left" in str(err.value) and "\n" not in str(err.value)
    assert "가족" not in str(err.value) and "친구" not in str(err.value)
    assert not cfg.path(cfg.paths.raw.manifest).exists()
    organized = cfg.path(cfg.paths.raw.organized)
    assert not organized.exists() or not any(organized.rglob("*"))
    monkeypatch.undo()
    organize(cfg)
    assert len(load_manifest(cfg)) == 2
