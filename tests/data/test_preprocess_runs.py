"""preprocess(cfg) as the CLI runs it: manifest, up-to-date no-op, rebuilds, interruption and recovery."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from chatbot.config import load_config
from chatbot.data import dataset, outputs
from chatbot.data import preprocess as pp
from chatbot.errors import ChatbotError
from chatbot.portable import try_lock

from tests.support.preprocess import output_bytes, read_outputs, rec
from tests.support.workspace import REPO



def _mtimes(d):
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir() if not p.name.startswith(".")}


def test_second_run_is_a_noop_and_changes_rebuild(exports, capsys):
    cfg, state = exports
    out = cfg.processed_dir
    pp.preprocess(cfg)
    first = json.loads((out / "stats.json").read_text())
    assert first["rooms"] == 2 and first["files"] == 2
    before = _mtimes(out)
    capsys.readouterr()
    assert pp.stale_reason(cfg) is None
    pp.preprocess(cfg)
    assert "up to date" in capsys.readouterr().out
    assert _mtimes(out) == before
    # a changed setting rebuilds
    cfg.paths.processed.preprocess.min_target_chars = 4
    assert pp.stale_reason(cfg) == "exports or settings changed"
    pp.preprocess(cfg)
    assert "settings changed" in capsys.readouterr().out
    changed = json.loads((out / "stats.json").read_text())
    assert changed["config_hash"] != first["config_hash"]
    # a new export rebuilds
    state["room-c"] = ("c" * 64, [rec(50_000 + i, ("가람", "나")[i % 2], f"새 방 이야기 {i}") for i in range(10)])
    pp.preprocess(cfg)
    grown = json.loads((out / "stats.json").read_text())
    assert grown["messages"]["in"] == changed["messages"]["in"] + 10 and grown["rooms"] == 3
    assert grown["inputs_hash"] != changed["inputs_hash"]
    # --force rebuilds unchanged inputs
    before = _mtimes(out)
    pp.preprocess(cfg, force=True)
    assert "--force" in capsys.readouterr().out
    assert _mtimes(out)["stats.json"] != before["stats.json"]


def _readable(out):
    stats = dataset.read_stats(out)
    for split in ("train", "val"):
        dataset.open_split(out, split, stats["dtype"], stats["vocab_size"])
    assert pp.check_outputs(out, full=True) is None
    return stats


def test_interrupted_build_leaves_previous_outputs_intact(exports, monkeypatch):
    cfg, _ = exports
    out = cfg.processed_dir
    pp.preprocess(cfg)
    snapshot = output_bytes(out, exclude=())
    cfg.paths.processed.preprocess.context_turns = 2

    def crash(*a, **k):
        raise KeyboardInterrupt  # Ctrl+C after the new token files were written to temp files

    real_preview = pp._preview
    monkeypatch.setattr(pp, "_preview", crash)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess(cfg)
    assert output_bytes(out, exclude=()) == snapshot
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    _readable(out)
    # a killed run leaves temp files behind; the next run removes them and builds
    (out / ".train.bin.killed.tmp").write_bytes(b"partial")
    monkeypatch.setattr(pp, "_preview", real_preview)
    pp.preprocess(cfg)
    assert not (out / ".train.bin.killed.tmp").exists()
    assert _readable(out)["config_hash"] != json.loads(snapshot["stats.json"])["config_hash"]


def test_crash_during_commit_is_rolled_forward(exports, monkeypatch, capsys):
    cfg, _ = exports
    out = cfg.processed_dir
    pp.preprocess(cfg)
    old = json.loads((out / "stats.json").read_text())
    cfg.paths.processed.preprocess.sample_stride = 2
    real_apply = outputs._apply

    def apply_then_die(out_dir, journal):
        real_apply(out_dir, {"renames": journal["renames"][:3]})
        raise KeyboardInterrupt  # killed after three of the renames

    monkeypatch.setattr(outputs, "_apply", apply_then_die)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess(cfg)
    assert pp.check_outputs(out) == "an interrupted commit is pending"
    monkeypatch.setattr(outputs, "_apply", real_apply)
    capsys.readouterr()
    pp.preprocess(cfg)  # finishes the commit; the result is the new build, so there is nothing else to do
    said = capsys.readouterr().out
    assert "interrupted commit" in said and "up to date" in said
    stats = _readable(out)
    assert stats["config_hash"] != old["config_hash"]  # the new build (stride 2) is the one in force
    assert stats["windows"]["train"] < old["windows"]["train"]


def test_manifest_missing_or_empty_says_run_organize(exports):
    cfg, state = exports
    state.clear()
    with pytest.raises(ChatbotError, match="organize"):
        pp.preprocess(cfg)
    os.unlink(cfg.path(cfg.paths.raw.manifest))
    with pytest.raises(ChatbotError, match="organize"):
        pp.preprocess(cfg)


def test_one_preprocess_at_a_time(exports):
    cfg, _ = exports
    out = cfg.processed_dir
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(out / pp.LOCK), os.O_CREAT | os.O_RDWR)
    try:
        assert try_lock(fd)  # flock here, msvcrt.locking on Windows
        with pytest.raises(ChatbotError, match="another preprocess"):
            pp.preprocess(cfg)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------- end to end with the real parser
DEMO = REPO / "data" / "demo"


def _load_demo_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _invented_group_export() -> str:
    """A small Windows-Korean export of a three-person room with personal data in it (all invented)."""
    lines = ["주말 등산 모임 님과 카카오톡 대화", "저장한 날짜 : 2024-05-20 22:41:07", "",
             "--------------- 2024년 5월 18일 토요일 ---------------"]
    talk = [("한결바람", "내일 산 가는 사람?"), ("도토리묵", "@한결바람 나 갈래 ㅋㅋ"), ("한결바람", "도토리묵 내 번호 010-3456-7890"),
            ("새벽별빛", "입금은 카뱅 3333-02-9876543 로 해줘"), ("도토리묵", "메일 dotori.hill@example.net 확인해"),
            ("새벽별빛", "지도 https://map.example.com/p/xyz 여기서 보자"), ("한결바람", "새벽별빛님 몇 시 출발?"),
            ("새벽별빛", "7시 30분 출발 회비 15,000원")]
    for i, (who, text) in enumerate(talk * 3):
        lines.append(f"[{who}] [오전 {8 + i // 6}:{(i * 7) % 60:02d}] {text}")
    return "\r\n".join(lines) + "\r\n"


def test_demo_room_and_a_group_room_end_to_end(project, capsys):
    cfg = load_config(project / "configs")
    cfg.paths.processed.preprocess.vocab_size = 600
    inbox = cfg.path(cfg.paths.raw.inbox)
    inbox.mkdir(parents=True)
    for p in DEMO.iterdir():
        if p.suffix in {".txt", ".csv", ".zip"}:
            shutil.copy(p, inbox / p.name)
    (inbox / "KakaoTalk_20240520_2241_07_123_group.txt").write_bytes(_invented_group_export().encode("utf-8"))
    from chatbot.kakao.organize import organize

    organize(cfg)
    pp.preprocess(cfg)
    out = cfg.processed_dir
    stats = _readable(out)
    demo_messages = sum(len(day) for day in _load_demo_script().build_timeline(
        _load_demo_script().load_dialogues(REPO / "tests" / "fixtures" / "xpersona_ko")))
    assert stats["rooms"] == 2 and stats["files"] == 4
    assert stats["messages"]["in"] == demo_messages + 24  # the three demo exports overlap: merged, no duplicates
    assert stats["speakers"] == 5 and stats["persona"]["self"] is not None
    assert stats["pii"]["phone"] == 3 and stats["pii"]["account"] == 3 and stats["pii"]["email"] == 3
    assert stats["pii"]["url"] >= 3 and stats["pii"]["mention"] + stats["pii"]["name"] >= 9
    private = json.loads((out / "speakers.json").read_text(encoding="utf-8"))
    names = set(private["speakers"])
    assert names == {"나", "콩떡", "한결바람", "도토리묵", "새벽별빛"}
    data = read_outputs(out)
    tok = data["tok"]
    blob = "\n".join([tok.decode(data[s]["tokens"].tolist(), skip_special_tokens=False) for s in ("train", "val")]
                     + [tok.decode([i]) for i in range(tok.get_vocab_size())]
                     + [b.decode() for n, b in output_bytes(out).items() if n.endswith(".json")])
    for secret in [*(names - {"나"}), "3456-7890", "9876543", "dotori", "example.net", "map.example", "주말 등산"]:
        assert secret not in blob, secret
    assert "15,000원" in blob and "7시 30분" in blob  # ordinary numbers survive
    capsys.readouterr()
    pp.preprocess(cfg)
    assert "up to date" in capsys.readouterr().out


def test_demo_data_is_regenerated_byte_for_byte(tmp_path, monkeypatch):
    mod = _load_demo_script()
    monkeypatch.setattr(sys, "argv", ["make_demo_data.py", "--out", str(tmp_path)])
    mod.main()
    made = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    shipped = {p.name: p.read_bytes() for p in DEMO.iterdir() if p.suffix in {".txt", ".csv", ".zip"}}
    assert made == shipped
    assert sum(len(b) for b in made.values()) < 400_000


_KILL_SCRIPT = r'''
import os, signal, sys, types
sys.path.insert(0, sys.argv[4])
from tests.support.preprocess import chat_room
state = {"room-a": ("a" * 64, chat_room(8, seed=1)), "room-b": ("b" * 64, chat_room(5, seed=2, names=("민트", "나")))}
fake = types.ModuleType("chatbot.kakao.organize")
fake.load_manifest = lambda cfg: [{"path": k, "sha256": v[0], "room": k} for k, v in state.items()]
fake.room_records = lambda cfg, room: list(state[room][1])
sys.modules["chatbot.kakao.organize"] = fake
from chatbot.config import load_config
from chatbot.data import preprocess as pp
cfg = load_config(sys.argv[1])
cfg.paths.processed.preprocess.vocab_size = 600
cfg.paths.processed.preprocess.context_turns = int(sys.argv[2])
renames = []
if sys.argv[3] == "build":  # SIGKILL between two output writes (temp files stay behind, as after a real kill)
    real_write = pp._write_temp
    def write(out_dir, name, data):
        if name == "speakers.json":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(out_dir, name, data)
    pp._write_temp = write
else:  # SIGKILL after three of the commit renames
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if os.path.basename(dst) in pp.OUTPUT_FILES:
            renames.append(dst)
            if len(renames) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
pp.preprocess(cfg)
'''


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kills itself with SIGKILL (POSIX only)")
def test_sigkill_between_writes_and_during_commit(exports, tmp_path, capsys):
    cfg, _ = exports
    out = cfg.processed_dir
    pp.preprocess(cfg)  # context_turns 8 (the YAML default)
    snapshot = {n: (out / n).read_bytes() for n in pp.OUTPUT_FILES}
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT, encoding="utf-8")

    def run(mode):
        proc = subprocess.run([sys.executable, str(script), str(cfg.config_dir), "2", mode, str(REPO)],
                              capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == -signal.SIGKILL, proc.stderr

    run("build")
    assert {n: (out / n).read_bytes() for n in pp.OUTPUT_FILES} == snapshot  # the previous outputs, untouched ...
    assert [p for p in out.iterdir() if p.name.endswith(".tmp")]  # ... next to the killed run's temp files
    _readable(out)
    capsys.readouterr()
    pp.preprocess(cfg)  # same settings as the snapshot: nothing to do, leftovers removed
    assert "up to date" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    run("commit")
    assert pp.check_outputs(out) == "an interrupted commit is pending"
    cfg.paths.processed.preprocess.context_turns = 2
    pp.preprocess(cfg)  # rolls the commit forward: the killed run's complete outputs are now current
    said = capsys.readouterr().out
    assert "interrupted commit" in said and "up to date" in said
    assert _readable(out)["config_hash"] != json.loads(snapshot["stats.json"])["config_hash"]
