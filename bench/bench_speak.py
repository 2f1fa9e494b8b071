"""Speak or stay silent: precision / recall / F1 of reply_policy always vs addressed vs model, and the threshold curve.

    python bench/bench_speak.py                      # demo room + invented 5-person room, fresh tiny models
    python bench/bench_speak.py --rooms group --steps 400 --workspace runs/bench-speak

For each room a tiny model is trained as `demo` trains its own, with ``learn_turn_taking: true`` (organize → preprocess → train, demo-sized
settings, CPU) in its own workspace. Then, on the room's validation split, after every turn of someone other than
the bot the model's probability that the bot's speaker token comes next is read (chatbot/eval/speak.py; the same
number the Responder reads in the forward pass that starts a reply) and compared with what really happened:

* always     — the bot answers every message (today's behaviour)
* addressed  — only when the turn names the bot, or the room has one other person
* model      — addressed, or P(bot next) ≥ threshold (what reply_policy: model does)
* model_only — P(bot next) ≥ threshold alone (the curve that picks speak_threshold)

Rooms: ``demo`` = the shipped demo room (two people: turn-taking, so always/addressed are right by construction);
``group`` = an invented five-person room (chatbot/eval/speak.py) in which the bot's person (하늘) answers when
called by name and chimes in now and then. Printed: the threshold curve, the best-F1 threshold, the policies'
scores there and bot turns per 100 messages vs the real rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402


def _workspace(root: Path, room: str, steps: int) -> Path:
    from chatbot.demo import OVERRIDES, _copy_exports, project_yaml
    from chatbot.fsio import atomic_write_text
    from chatbot.eval.speak import BOT_NAME, group_room_export

    ws = root / room
    (ws / "configs").mkdir(parents=True, exist_ok=True)
    extra = {"train.yaml": {"run_name": f"speak-{room}", "optimization": {"max_steps": steps, "lr_decay_steps": steps}},
             "gen.yaml": {"model_preference": ["best"]}}
    # learn_turn_taking: the speaker token after each turn is trained on (else P(bot next) means nothing)
    extra["paths.yaml"] = {"processed": {"preprocess": {"learn_turn_taking": True}}}
    if room == "group":  # the bot is 하늘; names stay text so "addressed" can be read back from the tokens
        extra["paths.yaml"] = {"processed": {"preprocess": {"learn_turn_taking": True, "target": BOT_NAME,
                                                            "pii": {"mention": False}}}}
        inbox = ws / "data" / "raw" / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        atomic_write_text(inbox / "KakaoTalk_20230601_2200_00_000_group.txt", group_room_export(160, seed=7))
    else:
        _copy_exports(ws)
    for name, over in OVERRIDES.items():
        data = project_yaml(name, over, extra.get(name, {}))
        (ws / "configs" / name).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return ws


def _train(ws: Path) -> None:
    from chatbot.config import load_config
    from chatbot.data.preprocess import preprocess
    from chatbot.kakao.organize import organize
    from chatbot.train.loop import train

    cfg = load_config(ws / "configs")
    organize(cfg, dry=False)
    preprocess(cfg, force=False)
    code = train(cfg)
    if code != 0:
        raise SystemExit(f"training stopped with exit code {code}")


def _points(ws: Path, room: str):
    from chatbot.config import load_config
    from chatbot.data.tokenizer import decode
    from chatbot.infer.prompt import TokenIds, resolve_speakers
    from chatbot.infer.loading import load_bundle
    from chatbot.eval.speak import BOT_NAME, speak_points

    cfg = load_config(ws / "configs")
    bundle = load_bundle(cfg)
    model = bundle.model.eval()
    ids = TokenIds.from_tokenizer(bundle.tokenizer)
    _, bot = resolve_speakers(bundle.persona, cfg.gen)
    stats = json.loads((cfg.processed_dir / "stats.json").read_text(encoding="utf-8"))
    tokens = np.fromfile(cfg.processed_dir / "val.bin", dtype=stats["dtype"]).astype(np.int64).tolist()
    people = sum(1 for n in stats["persona"]["speakers"].values() if n > 0)

    def named(turn: list[int]) -> bool:
        return BOT_NAME in decode(bundle.tokenizer, turn)

    pts = speak_points(model, tokens, eot=ids.eot, bos=ids.bos, bot=ids.speakers[bot],
                       speakers=set(ids.speakers.values()), block=model.args.block_size, addressed=named)
    return pts, people <= 2, bundle.step


def _fmt(s: dict) -> str:
    return (f"P {s['precision']:.3f}  R {s['recall']:.3f}  F1 {s['f1']:.3f}  "
            f"bot turns/100 msgs {s['bot_per_100']:5.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", default="demo,group")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workspace", default="", help="reuse/keep the workspaces here (default: a temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    from chatbot.eval.speak import best_threshold, policy_scores

    tmp = None if args.workspace else tempfile.TemporaryDirectory(prefix="bench-speak-")
    root = Path(args.workspace or tmp.name).resolve()
    for room in [r.strip() for r in args.rooms.split(",") if r.strip()]:
        t0 = time.perf_counter()
        ws = _workspace(root, room, args.steps)
        _train(ws)
        pts, two_person, step = _points(ws, room)
        best, curve = best_threshold(pts)
        print(f"\n=== room {room}: {len(pts)} validation turns of others, model step {step}, "
              f"{'two people' if two_person else 'group'}  ({time.perf_counter() - t0:.0f}s)")
        print("threshold curve (model_only = P(bot next) >= t):")
        for t, _ in curve:
            s = policy_scores(pts, t, two_person)["model_only"]
            print(f"  t={t:.2f}  {_fmt(s)}")
        scores = policy_scores(pts, best, two_person)
        print(f"best-F1 threshold for model: {best:.2f}")
        for name in ("always", "addressed", "model", "model_only"):
            print(f"  {name:<10} {_fmt(scores[name])}")
        print(f"  real       bot turns/100 msgs {scores['real']['bot_per_100']:5.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
