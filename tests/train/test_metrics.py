"""metrics.jsonl: reading never rewrites the file; the trainer's explicit repair step cuts it back on resume."""

from __future__ import annotations

import json

from chatbot.train.report import append_metrics, load_metrics, repair_metrics


def _write(path, lines: list[str]) -> bytes:
    path.write_text("".join(lines), encoding="utf-8")
    return path.read_bytes()


def test_load_metrics_only_reads_and_repair_cuts_back_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in (2, 4, 6)]
    before = _write(path, [json.dumps(r) + "\n" for r in recs] + ['{"kind": "train", "st'])  # killed mid-line
    assert load_metrics(path, 4) == recs[:2]
    assert path.read_bytes() == before  # reading leaves the file alone
    assert repair_metrics(path, 4) is True
    assert [json.loads(x) for x in path.read_text().splitlines()] == recs[:2]
    append_metrics(path, recs[2])
    assert load_metrics(path, 10) == recs  # the next record starts on its own line


def test_repair_leaves_a_clean_file_untouched_and_ends_a_glued_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert repair_metrics(path, 5) is False and not path.exists()
    clean = _write(path, ['{"kind": "train", "step": 1}\n', '{"kind": "eval", "step": 2}\n'])
    mtime = path.stat().st_mtime_ns
    assert repair_metrics(path, 2) is False
    assert path.read_bytes() == clean and path.stat().st_mtime_ns == mtime
    _write(path, ['{"kind": "train", "step": 1}\n', '{"kind": "train", "step": 2}'])  # complete, but no newline
    assert repair_metrics(path, 2) is True
    assert path.read_text().endswith("\n") and len(load_metrics(path, 2)) == 2


def test_a_resumed_run_repairs_the_log_a_killed_run_left(tmp_path):
    from chatbot.train.loop import EXIT_DONE, EXIT_STOPPED, train
    from tests.support.train import make_train_project

    cfg = make_train_project(tmp_path)  # 8 steps, a train record every 2, eval/save every 4

    def stop_at_6(step):
        if step == 6:
            (cfg.run_dir / cfg.train.stop_file_name).touch()

    assert train(cfg, on_step=stop_at_6) == EXIT_STOPPED
    path = cfg.run_dir / "metrics.jsonl"
    # as if the process had logged past latest.pt and died in the middle of a line
    path.write_text(path.read_text() + json.dumps({"kind": "train", "step": 7}) + "\n" + '{"kind": "tr')
    assert train(cfg) == EXIT_DONE
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6, 8]
