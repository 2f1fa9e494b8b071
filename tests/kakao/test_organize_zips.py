"""organize and hostile or unusual zips: members beyond the size / ratio limits are refused (declared sizes and
while streaming) and the zip is left alone; a zip holding several exports gives one manifest entry per export."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime

import pytest

from chatbot.errors import ChatbotError
from chatbot.fsio import sha256_file
from chatbot.kakao import text as ktext
from chatbot.kakao.organize import load_manifest, organize, room_records
from tests.support.kakao import conversation, render, snapshot, write
from tests.support.workspace import make_workspace

EVENTS = conversation(datetime(2019, 3, 2, 20, 0), 60, ["김하늘", "박바다"], seed=5)
OTHER = conversation(datetime(2019, 3, 9, 21, 0), 50, ["최구름", "정노을"], seed=6)


def _zip(path, members: dict[str, bytes | str]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


def _refused(cfg, capsys) -> str:
    with pytest.raises(ChatbotError) as info:
        organize(cfg)
    assert info.value.exit_code == 1
    return capsys.readouterr().err


def test_zip_bomb_is_refused_and_left_in_place_while_the_rest_is_organized(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    inbox = cfg.path(cfg.paths.raw.inbox)
    good = render("windows_ko", "등산 모임", EVENTS, datetime(2019, 4, 1))
    # a real export header on top of 40 MB of one repeated line: deflate packs it ~1000x
    bomb = good + "[김하늘] [오후 9:00] ㅋ\n" * 1_500_000
    data = _zip(inbox / "KakaoTalk_bomb.zip", {"KakaoTalkChats.txt": bomb})
    assert len(data) < 400_000 and len(bomb.encode()) > 30 << 20
    write(inbox / "KakaoTalk_ok.txt", good)
    err = _refused(cfg, capsys)
    (line,) = [x for x in err.splitlines() if "KakaoTalk_bomb.zip" in x]
    assert "ratio" in line and "zip_max_ratio" in line and "ㅋ" not in err
    assert (inbox / "KakaoTalk_bomb.zip").read_bytes() == data  # left exactly where it was
    (entry,) = load_manifest(cfg)
    assert entry["source"] == "KakaoTalk_ok.txt"
    _refused(cfg, capsys)  # refused again on the next run, never half-organized


def test_member_over_the_size_limit_is_refused(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    cfg.paths.raw.zip_max_member_mb = 1
    lines = render("windows_ko", "큰 방", conversation(datetime(2019, 1, 1), 25_000, ["가람", "나래"], seed=1),
                   datetime(2019, 6, 1))
    assert len(lines.encode()) > 1 << 20
    data = _zip(cfg.path(cfg.paths.raw.inbox) / "big.zip", {"KakaoTalkChats.txt": lines})
    err = _refused(cfg, capsys)
    assert "big.zip" in err and "1 MB limit" in err
    assert (cfg.path(cfg.paths.raw.inbox) / "big.zip").read_bytes() == data and load_manifest(cfg) == []
    cfg.paths.raw.zip_max_member_mb = 8  # a raised limit lets the same file in
    organize(cfg)
    assert len(load_manifest(cfg)) == 1


def test_only_stored_and_deflate_members_are_expanded(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    z = cfg.path(cfg.paths.raw.inbox) / "KakaoTalk_bz.zip"
    z.parent.mkdir(parents=True)
    with zipfile.ZipFile(z, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("KakaoTalkChats.txt", render("android_ko", "방", EVENTS, datetime(2019, 4, 1)))
    assert "compression method" in _refused(cfg, capsys)


def test_declared_sizes_that_lie_do_not_get_past_the_bound(tmp_path):
    """The expanded bytes are counted while streaming: a member stream that produces more than its bound stops
    with the refusal, whatever the zip declared."""

    class Endless(io.RawIOBase):
        def readable(self):
            return True

        def read(self, n=-1):
            return b"x" * (n if n and n > 0 else 1 << 16)

    zf = zipfile.ZipFile(io.BytesIO(_zip(tmp_path / "a.zip", {"a.txt": "x"})))
    member = io.BufferedReader(ktext._ZipMember(Endless(), zf, "a.txt", 3 << 20), 1 << 20)
    with pytest.raises(ktext.ArchiveLimitError, match="expands beyond"):
        while member.read(1 << 20):
            pass
    # and a zip whose central directory under-states the size is caught by the CRC / size check, not expanded
    raw = bytearray(_zip(tmp_path / "b.zip", {"KakaoTalkChats.txt": "가" * 3_000_000}))
    zf = zipfile.ZipFile(io.BytesIO(bytes(raw)))
    info = zf.infolist()[0]
    cd = raw.rindex(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (1000).to_bytes(4, "little")  # uncompressed size: 1000 bytes
    lie = tmp_path / "lie.zip"
    lie.write_bytes(bytes(raw))
    srcs = ktext.sources(lie)
    assert info.file_size == 9_000_000
    with pytest.raises(ktext.FormatError):
        with srcs[0].open_bytes() as fh:
            assert len(fh.read()) <= 1000


def test_member_ratio_is_measured_by_the_bytes_it_really_has(tmp_path):
    """A member that declares a large compressed size while only a few bytes lie before the next header (how
    overlapping-member bombs hide their ratio) is judged by those few bytes."""
    raw = bytearray(_zip(tmp_path / "c.zip", {"x.txt": "가나다" * 1000, "y.txt": "b", "z.txt": "c"}))
    limits = ktext.ZipLimits(max_member_bytes=64 << 20, max_ratio=100)
    ktext.zip_members(tmp_path / "c.zip", limits)  # honest sizes pass
    y = raw.index(b"PK\x01\x02" + bytes(raw[raw.index(b"PK\x01\x02") + 4:][:0]))  # first central record (x)
    y = raw.index(b"PK\x01\x02", y + 4)  # y's central record
    raw[y + 20:y + 28] = (50 << 20).to_bytes(4, "little") + (9 << 20).to_bytes(4, "little")  # 50 MB -> 9 MB
    (tmp_path / "d.zip").write_bytes(bytes(raw))
    with pytest.raises(ktext.ArchiveLimitError, match="y.txt would expand"):
        ktext.zip_members(tmp_path / "d.zip", limits)


def test_a_zip_with_several_exports_gives_one_entry_per_export(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    inbox = cfg.path(cfg.paths.raw.inbox)
    z = inbox / "KakaoTalk_all.zip"
    _zip(z, {"roomA/KakaoTalkChats.txt": render("android_ko", "등산 모임", EVENTS, datetime(2019, 4, 1)),
             "roomB/KakaoTalkChats.txt": render("android_ko", "독서 모임", OTHER, datetime(2019, 4, 2)),
             "readme.txt": "how to read these files\n"})
    organize(cfg)
    out = capsys.readouterr().out
    assert "readme.txt inside the zip is no KakaoTalk export" in out
    entries = load_manifest(cfg)
    assert sorted((e["member"], e["room"]) for e in entries) == [("roomA/KakaoTalkChats.txt", "등산 모임"),
                                                                 ("roomB/KakaoTalkChats.txt", "독서 모임")]
    assert {e["sha256"] for e in entries} == {sha256_file(z)}
    for e, n in zip(sorted(entries, key=lambda e: e["member"]), (60, 50)):
        assert cfg.path(e["path"]).is_file() and e["messages"] == n
        assert len([r for r in room_records(cfg, e["room"]) if r.is_user_message]) == n
    before = snapshot(tmp_path)
    organize(cfg)  # idempotent: nothing new, nothing changes
    assert snapshot(tmp_path) == before
    assert "nothing new to organize" in capsys.readouterr().out


def test_an_export_missed_by_an_older_organize_is_picked_up(tmp_path):
    """Manifests written before several-export zips were understood hold only the first member: the next run
    adds the others (the zip's hash alone no longer marks it as done)."""
    cfg = make_workspace(tmp_path)
    z = cfg.path(cfg.paths.raw.inbox) / "KakaoTalk_all.zip"
    _zip(z, {"a/KakaoTalkChats.txt": render("android_ko", "등산 모임", EVENTS, datetime(2019, 4, 1)),
             "b/KakaoTalkChats.txt": render("android_ko", "독서 모임", OTHER, datetime(2019, 4, 2))})
    organize(cfg)
    path = cfg.path(cfg.paths.raw.manifest)
    entries = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps([e for e in entries if e["member"].startswith("a/")]), encoding="utf-8")
    organize(cfg)
    assert sorted(e["member"] for e in load_manifest(cfg)) == ["a/KakaoTalkChats.txt", "b/KakaoTalkChats.txt"]


def test_two_exports_of_one_room_in_one_zip_share_its_folder(tmp_path):
    cfg = make_workspace(tmp_path)
    cfg.paths.raw.move_files = True
    z = cfg.path(cfg.paths.raw.inbox) / "KakaoTalk_two.zip"
    _zip(z, {"old/KakaoTalkChats.txt": render("android_ko", "등산 모임", EVENTS[:40], datetime(2019, 4, 1)),
             "new/KakaoTalkChats.txt": render("android_ko", "등산 모임", EVENTS[20:], datetime(2019, 5, 1))})
    organize(cfg)
    entries = load_manifest(cfg)
    assert len(entries) == 2 and len({e["path"] for e in entries}) == 1 and not z.exists()
    assert len([r for r in room_records(cfg, "등산 모임") if r.is_user_message]) == 60
