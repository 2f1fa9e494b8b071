"""chatbot/formats/processed.py and manifest.py: the folder preprocess writes reads back through one reader, and
every broken file is refused with one line that says what to do. All chat text here is invented."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from chatbot.config import PreprocessConfig
from chatbot.data.dataset import open_split
from chatbot.data.preprocess import build
from chatbot.errors import ChatbotError
from chatbot.formats import manifest, processed
from chatbot.records import Kind, Record

_LINES = ("오늘 점심 뭐 먹을까", "김밥 어때", "좋아 ㅋㅋ", "내일 비 온대", "우산 챙겨", "알았어 고마워", "주말에 산책 갈래",
          "그래 몇 시에", "열 시 어때")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A processed folder made by preprocess itself from an invented two-person room."""
    start, records = datetime(2024, 3, 1, 9), []
    for day in range(12):
        for i, text in enumerate(_LINES):
            records.append(Record(start + timedelta(days=day, minutes=i), ("가나", "나")[i % 2], text, Kind.MESSAGE))
    out = tmp_path_factory.mktemp("processed")
    build([records], replace(PreprocessConfig(), vocab_size=300, val_fraction=0.2), out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_read_gives_the_contract_of_a_preprocess_folder(built):
    data = processed.read(built)
    stats = json.loads((built / processed.STATS).read_text(encoding="utf-8"))
    assert (data.dtype, data.vocab_size, data.tokenizer_hash) == (stats["dtype"], stats["vocab_size"],
                                                                   stats["tokenizer_hash"])
    assert data.persona == stats["persona"] and data.base is None and data.stats == stats
    data.check_tokenizer()
    assert processed.check_outputs(built, full=True) is None
    for split in processed.SPLITS:  # the names and dtypes the reader uses are the ones preprocess wrote
        tokens = np.fromfile(data.split_path(split, processed.TOKENS), dtype=data.token_dtype)
        assert len(tokens) == stats["tokens"][split]
        assert open_split(built, split, data.dtype, data.vocab_size).n_windows == stats["windows"][split]


def test_write_is_byte_identical_to_preprocess_and_round_trips(built, tmp_path):
    stats = json.loads((built / processed.STATS).read_text(encoding="utf-8"))
    folder = _copy(built, tmp_path / "copy")
    (folder / processed.STATS).unlink()
    processed.write(folder, stats)
    assert (folder / processed.STATS).read_bytes() == (built / processed.STATS).read_bytes()
    assert processed.read(folder).stats == stats
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _edit_stats(fn):
    def apply(folder: Path) -> None:
        stats = json.loads((folder / processed.STATS).read_text(encoding="utf-8"))
        (folder / processed.STATS).write_text(json.dumps(fn(stats)), encoding="utf-8")
    return apply


@pytest.mark.parametrize("breakage, message", [
    (lambda f: (f / processed.STATS).unlink(), "no processed data in"),
    (lambda f: (f / processed.TOKENIZER).unlink(), "no processed data in"),
    (lambda f: (f / processed.STATS).write_text("{not json", encoding="utf-8"), "not valid JSON"),
    (lambda f: (f / processed.STATS).write_bytes(b"\xff\xfe"), "not valid JSON"),
    (lambda f: (f / processed.STATS).write_text("[1, 2]", encoding="utf-8"), "is not a stats object"),
    (_edit_stats(lambda s: {k: v for k, v in s.items() if k != "dtype"}), "lacks 'dtype'"),
    (_edit_stats(lambda s: {k: v for k, v in s.items() if k != "vocab_size"}), "lacks 'vocab_size'"),
    (_edit_stats(lambda s: {k: v for k, v in s.items() if k != "tokenizer_hash"}), "lacks 'tokenizer_hash'"),
    (_edit_stats(lambda s: {**s, "dtype": "float32"}), "unknown token dtype 'float32'"),
    (_edit_stats(lambda s: {**s, "vocab_size": "300"}), "vocab_size '300' is not a positive integer"),
    (_edit_stats(lambda s: {**s, "vocab_size": True}), "vocab_size True is not a positive integer"),
    (_edit_stats(lambda s: {**s, "vocab_size": 0}), "vocab_size 0 is not a positive integer"),
    (_edit_stats(lambda s: {**s, "tokenizer_hash": 5}), "tokenizer_hash is not a string"),
])
def test_every_broken_stats_is_one_line(built, tmp_path, breakage, message):
    folder = _copy(built, tmp_path / "broken")
    breakage(folder)
    with pytest.raises(ChatbotError, match=message) as info:
        processed.read(folder)
    assert "\n" not in str(info.value) and "chatbot.ops preprocess" in str(info.value)


def test_load_stats_is_lenient_but_names_the_file(built, tmp_path):
    folder = _copy(built, tmp_path / "lenient")
    (folder / processed.STATS).write_text(json.dumps({"persona": {"target": "S1"}}), encoding="utf-8")
    assert processed.load_stats(folder) == {"persona": {"target": "S1"}}  # publish/inference need only some keys
    (folder / processed.STATS).unlink()
    with pytest.raises(ChatbotError, match=r"^data/processed/stats.json is missing") as info:
        processed.load_stats(folder, show=lambda p: f"data/processed/{p.name}")
    assert "\n" not in str(info.value)


def test_a_tokenizer_from_another_run_and_damaged_outputs_are_caught(built, tmp_path):
    folder = _copy(built, tmp_path / "mixed")
    with open(folder / processed.TOKENIZER, "a", encoding="utf-8") as fh:
        fh.write(" ")
    with pytest.raises(ChatbotError, match="does not match the tokenizer_hash in stats.json") as info:
        processed.read(folder).check_tokenizer()
    assert "\n" not in str(info.value)
    assert processed.check_outputs(folder) == "tokenizer.json is missing or does not match stats.json"
    folder = _copy(built, tmp_path / "flipped")
    data = bytearray((folder / "val.bin").read_bytes())
    data[0] ^= 1
    (folder / "val.bin").write_bytes(bytes(data))
    assert processed.check_outputs(folder) is None  # sizes only: cheap enough for every status call
    assert processed.check_outputs(folder, full=True) == "val.bin does not match stats.json"
    (folder / processed.JOURNAL).write_text("{}", encoding="utf-8")
    assert processed.check_outputs(folder) == "an interrupted commit is pending"
    assert processed.check_outputs(tmp_path / "nothing") == "no previous outputs"


def test_token_dtype_widens_only_past_16_bits():
    assert processed.token_dtype(65536) == np.uint16 and processed.token_dtype(65537) == np.uint32


def test_manifest_round_trip_and_one_line_errors(tmp_path):
    path = tmp_path / "raw" / "manifest.json"
    assert manifest.read(path) == []  # organize has not run yet
    entries = [{"path": "data/raw/organized/방/a.txt", "room": "방", "messages": 3, "extra": [1]}]
    manifest.write(path, entries)
    assert manifest.read(path) == entries
    assert path.read_text(encoding="utf-8") == json.dumps(entries, ensure_ascii=False, indent=2) + "\n"
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o600
    path.write_text(json.dumps({"files": entries}), encoding="utf-8")  # the shape of early versions
    assert manifest.read(path) == entries
    for bad, message in (("{oops", "unreadable manifest"), ('[{"room": "x"}]', "not a manifest written by organize"),
                         ('{"files": 3}', "not a manifest written by organize")):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(ChatbotError, match=message) as info:
            manifest.read(path)
        assert "\n" not in str(info.value) and "run organize again" in str(info.value)
