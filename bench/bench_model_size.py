"""The measurements behind ``model.size: auto``: corpus size × model size × training minutes → eval figures.

    python bench/bench_model_size.py train --work /tmp/sizegrid [--max-minutes 8] [--only xp:tiny:600,xp:small:200]
    python bench/bench_model_size.py eval  --work /tmp/sizegrid [--limit 100]

``train`` builds up to three corpora in the shape of real KakaoTalk exports (Windows PC, Korean UI) in their own
workspaces under ``--work`` and trains each listed model size for a fixed wall-clock budget on the CPU:

* ``demo`` — the shipped demo room (data/demo, 95 XPersona dialogues);
* ``xp``   — every XPersona Korean dialogue (valid + test, ~600 dialogues), needs ``../shared/data/xpersona_ko``;
* ``xpcd`` — ``xp`` plus the ChatbotData Q/A pairs (one two-turn chat each), interleaved at random in time,
  needs ``../shared/data/chatbot_data``.

Each job ``corpus:size:steps`` trains that many optimizer steps of 8 windows × 128 tokens (cosine schedule to a
tenth, warm-up 5 %, four evaluations; a STOP file ends it after ``--max-minutes`` of wall-clock time). ``eval``
then runs ``python -m chatbot.ops eval --json`` on the best checkpoint of every run and prints the rows that
docs/MODEL_SIZE.md quotes. The box is shared, so wall-clock time varies several-fold between runs: steps and
tokens are the reproducible measure, and the median tokens/s of each run is printed with it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path


from fixtures import REPO, write_configs  # bench/fixtures.py

sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

SIZES = {  # name -> (layers, heads, kv heads, width, learning rate, batch)
    "tiny": (2, 4, 2, 128, 3e-3, 8),
    "small": (4, 4, 2, 256, 1.5e-3, 8),
    "base": (6, 6, 2, 384, 6e-4, 8),
}
VOCAB = {"demo": 2000, "xp": 4000, "xpcd": 8000}


# ------------------------------------------------------------------------------------------------- corpora
def _windows_export(sessions: list[list[tuple[str, str]]], seed: int) -> bytes:
    """Sessions of (speaker, text) as one Windows-PC Korean export; sessions are a day apart, turns minutes."""
    rng = random.Random(seed)
    t = datetime(2021, 1, 4, 20, 0)
    lines = ["콩떡 님과 카카오톡 대화\r\n", "저장한 날짜 : 2024-01-01 00:00:00\r\n", "\r\n"]
    day = None
    for sess in sessions:
        t += timedelta(hours=rng.randint(3, 30))
        for who, text in sess:
            t += timedelta(minutes=rng.choice((0, 1, 1, 2)))
            if t.date() != day:
                day = t.date()
                lines.append(f"--------------- {t.year}년 {t.month}월 {t.day}일 {'월화수목금토일'[t.weekday()]}요일 "
                             f"---------------\r\n")
            ampm = f"{'오전' if t.hour < 12 else '오후'} {t.hour % 12 or 12}:{t.minute:02d}"
            lines.append(f"[{who}] [{ampm}] {' '.join(text.split())}\r\n")
    return "".join(lines).encode("utf-8")


def _xpersona() -> list[list[tuple[str, str]]]:
    out = []
    for name in ("Ko_persona_split_valid_human_annotated.json", "Ko_persona_split_test_human_annotated.json"):
        for d in json.loads((SHARED / "xpersona_ko" / name).read_text(encoding="utf-8")):
            utt = [u.strip() for pair in d["dialogue"] for u in pair if u.strip()]
            out.append([("나" if i % 2 == 0 else "콩떡", u) for i, u in enumerate(utt)])
    return out


def _chatbot_data() -> list[list[tuple[str, str]]]:
    with open(SHARED / "chatbot_data" / "ChatbotData.csv", encoding="utf-8") as fh:
        return [[("나", r["Q"].strip()), ("콩떡", r["A"].strip())] for r in csv.DictReader(fh) if r["Q"].strip()]


def make_corpus(name: str, inbox: Path) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    if name == "demo":
        for p in (REPO / "data" / "demo").iterdir():
            if p.suffix in (".txt", ".csv", ".zip"):
                shutil.copy(p, inbox / p.name)
        return
    sessions = _xpersona()
    if name == "xpcd":
        sessions += _chatbot_data()
        random.Random(5).shuffle(sessions)
    (inbox / f"KakaoTalk_{name}_20240101.txt").write_bytes(_windows_export(sessions, seed=11))


def workspace(work: Path, corpus: str, size: str | None = None) -> Path:
    ws = work / corpus
    over = {
        "paths.yaml": {"processed": {"preprocess": {"vocab_size": VOCAB[corpus]}}},
        "train.yaml": {"runtime": {"device": "cpu", "dtype": "float32"}},
        "gen.yaml": {"model_preference": ["best", "latest"], "device": "cpu"},
    }
    if size is not None:
        L, H, K, C, lr, B = SIZES[size]
        over["train.yaml"] = {
            "run_name": size, "runtime": {"device": "cpu", "dtype": "float32"},
            "model": {"size": "custom", "block_size": 128, "n_layer": L, "n_head": H, "n_kv_head": K, "n_embd": C},
            "optimization": {"batch_size": B, "grad_accum_steps": 1, "max_steps": 100000, "learning_rate": lr,
                             "min_lr": lr / 10, "warmup_steps": 10, "lr_decay_steps": 100000},
            "logging": {"log_interval": 20, "eval_interval": 100000, "eval_iters": 16, "save_interval": 100000,
                        "keep_last_n_snapshots": 2, "sample_prompts": []},
        }
    else:
        over["train.yaml"]["model"] = {"size": "custom"}
    ws.mkdir(parents=True, exist_ok=True)
    (ws / ".env").write_text("CHATBOT_PASSWORD=grid\n", encoding="utf-8")  # eval's password gate
    return write_configs(ws / "configs", over)


# ------------------------------------------------------------------------------------------------ training
def train_one(work: Path, corpus: str, size: str, steps: int, max_minutes: float) -> dict:
    """``steps`` optimizer steps (cosine to 0.1×, warm-up 5 %, 4 evaluations); stopped early by a STOP file
    after ``max_minutes`` of wall-clock time (the box is shared: throughput varies several-fold)."""
    from chatbot.config import load_config
    from chatbot.train.loop import train

    cfg = load_config(workspace(work, corpus, size))
    o, lg = cfg.train.optimization, cfg.train.logging
    o.max_steps = o.lr_decay_steps = steps
    o.warmup_steps = max(1, steps // 20)
    lg.eval_interval = max(1, steps // 4)
    lg.save_interval = max(1, steps // 4)
    start = time.perf_counter()

    def on_step(step: int) -> None:
        if time.perf_counter() - start > 60 * max_minutes:
            (cfg.run_dir / cfg.train.stop_file_name).touch()

    code = train(cfg, on_step=on_step)
    return {"corpus": corpus, "size": size, "code": code, "minutes": (time.perf_counter() - start) / 60,
            "steps": steps}


def cmd_train(args) -> None:
    from chatbot.config import load_config
    from chatbot.data.preprocess import preprocess
    from chatbot.kakao.organize import organize

    jobs = [j.split(":") for j in args.only.split(",")]
    done = []
    for corpus in dict.fromkeys(c for c, *_ in jobs):
        ws = args.work / corpus
        if not (ws / "data" / "processed" / "stats.json").is_file():
            make_corpus(corpus, ws / "data" / "raw" / "inbox")
            cfg = load_config(workspace(args.work, corpus))
            organize(cfg, dry=False)
            preprocess(cfg, force=False)
    for corpus, size, steps in jobs:
        res = train_one(args.work, corpus, size, int(steps), args.max_minutes)
        done.append(res)
        print("[grid]", json.dumps(res), flush=True)
    (args.work / "train_runs.json").write_text(json.dumps(done, indent=1))


# -------------------------------------------------------------------------------------------------- eval
def cmd_eval(args) -> None:
    rows = []
    for stats_path in sorted(args.work.glob("*/data/processed/stats.json")):
        corpus = stats_path.parents[2].name
        stats = json.loads(stats_path.read_text())
        for run in sorted((args.work / corpus / "checkpoints").glob("*")):
            conf = workspace(args.work, corpus, run.name)
            metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
            trains = [m for m in metrics if m.get("kind") == "train"]
            minutes = (trains[-1]["time"] - trains[0]["time"]) / 60 if len(trains) > 1 else 0.0
            tok_s = sorted(m["tokens_per_s"] for m in trains)[len(trains) // 2] if trains else 0.0
            sources = [("best", run / "best.pt")]
            for label, src in sources:
                out = subprocess.run(
                    [sys.executable, "-m", "chatbot.ops", "eval", "-c", str(conf), "--source", str(src),
                     "--limit", str(args.limit), "--json"],
                    capture_output=True, text=True, env={**os.environ, "CHATBOT_ACCESS_PASSWORD": "grid"},
                )
                if out.returncode != 0:
                    print(f"[grid] eval failed for {corpus}/{run.name}/{label}: {out.stderr.strip()[-300:]}")
                    continue
                e = json.loads(out.stdout)
                rows.append({
                    "corpus": corpus, "train_tokens": stats["tokens"]["train"] if isinstance(stats.get("tokens"), dict)
                    else stats.get("train_tokens"), "size": run.name, "source": label, "step": e["model"]["step"],
                    "train_minutes": round(minutes, 1), "tok_s": round(tok_s), "val_loss": e["loss"]["model"]["nats"],
                    "bigram": e["loss"]["bigram"]["nats"], "unigram": e["loss"]["unigram"]["nats"],
                    "chrf": e["replies"]["model"]["chrf"], "retrieval_chrf": e["replies"]["retrieval"]["chrf"],
                    "distinct2": e["replies"]["model"]["distinct_2"], "top5": e["replies"]["model"]["top5_share"],
                    "eval_s": e["seconds"],
                })
                print("[grid]", json.dumps(rows[-1]), flush=True)
    (args.work / "eval_rows.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("train", "eval"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/sizegrid"))
    ap.add_argument("--max-minutes", type=float, default=7.0)
    ap.add_argument("--only", default="xp:tiny:240,xpcd:tiny:240,xp:small:80")
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    (cmd_train if args.what == "train" else cmd_eval)(args)


if __name__ == "__main__":
    main()
