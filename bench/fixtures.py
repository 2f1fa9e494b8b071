"""What several benchmarks build the same way: a project's config folder, Korean filler words, a tiny random-weight
Responder, memory readings, and organize's old pairwise grouping (the reference its index is measured and tested
against).

The bench scripts import it as ``fixtures`` (their own folder is first on ``sys.path`` when run as
``python bench/<name>.py``, also with ``PYTHONPATH`` pointing at another checkout's ``chatbot``); tests import it
as ``bench.fixtures``. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

# Korean chat words for generated exports when ../shared/data (the XPersona dialogues) is not there
FALLBACK_WORDS = ("오늘 뭐해 점심 저녁 먹었어 영화 볼래 내일 회사 끝나고 연락해 알았어 그래 진짜 대박 주말에 산책 비와 우산 "
                  "챙겨 고마워 미안 괜찮아 어디야 지금 가는 중 도착 했어 몇 시 만나 배고파 졸려 피곤해 재밌다").split()


# ------------------------------------------------------------------------------------------------ workspaces
def copy_configs(root: Path) -> Path:
    """``root/configs`` as a copy of the project's configs/ (comments included); returns that folder."""
    shutil.copytree(REPO / "configs", root / "configs")
    return root / "configs"


def write_configs(config_dir: Path, overrides: dict[str, dict]) -> Path:
    """``config_dir/<name>.yaml`` for paths/train/gen: the project's file with ``overrides[name]`` merged in (as the
    demo workspace does, chatbot.demo.project_yaml); returns ``config_dir``."""
    from chatbot.demo import project_yaml

    config_dir.mkdir(parents=True, exist_ok=True)
    for name in ("paths.yaml", "train.yaml", "gen.yaml"):
        data = project_yaml(name, overrides.get(name, {}))
        (config_dir / name).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return config_dir


def korean_words() -> list[str]:
    """Words of the XPersona Korean dialogues (MIT) in ../shared/data when present, else FALLBACK_WORDS."""
    src = REPO.parent / "shared" / "data" / "xpersona_ko" / "Ko_persona_split_valid_human_annotated.json"
    if not src.is_file():
        return FALLBACK_WORDS
    data = json.loads(src.read_text(encoding="utf-8"))
    return [w for d in data for pair in d["dialogue"] for u in pair for w in u.split()]


# ------------------------------------------------------------------------------------------------ models
def tiny_responder(gen_cfg: Any, corpus: list[str], *, vocab_size: int, persona: dict, source: str,
                   **shape: int) -> Any:
    """A real chatbot Responder over a random-weight Transformer of ``shape`` (ModelArgs keys: block_size, n_layer,
    ...) and a BPE tokenizer trained on ``corpus``; built in memory, no files. Seeded: the same model every run."""
    import torch

    from chatbot.data.tokenizer import train_tokenizer
    from chatbot.infer.responder import Responder
    from chatbot.infer.loading import Bundle
    from chatbot.model import ModelArgs, Transformer

    torch.manual_seed(0)
    tok = train_tokenizer(corpus, vocab_size=vocab_size)
    args = ModelArgs(vocab_size=tok.get_vocab_size(with_added_tokens=True), **shape)
    bundle = Bundle(Transformer(args).eval(), tok, persona, Path(source), 0, "artifact")
    return Responder(bundle, gen_cfg)


# ------------------------------------------------------------------------------------------------ memory (Linux)
def status_mb(field: str) -> float:
    """A ``/proc/self/status`` size field (VmRSS, VmHWM, ...) in MiB; 0 where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb() -> float:
    return status_mb("VmRSS")


def peak_mb() -> float:
    """This process image's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across fork + exec)."""
    return status_mb("VmHWM")


def reset_peak() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return it (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return rss_mb()


# ------------------------------------------------------------------------------------------------ organize
def pairwise_groups(stats: list) -> list[int]:
    """organize's room grouping before its index: every pair of files compared (quadratic). The reference that
    bench_organize.py times the index against and tests/ check it gives exactly the same groups as."""
    from chatbot.kakao import organize as org

    groups = org._Groups(len(stats))
    for i, a in enumerate(stats):
        for j in range(i):
            b = stats[j]
            ta, tb = a.info.room, b.info.room
            if ta and tb and org.title_key(ta) == org.title_key(tb):
                if not org.different_content(a.sketch, b.sketch):
                    groups.union(i, j)
                continue
            if org.same_content(a.sketch, b.sketch):
                groups.union(i, j)
    return [groups.find(i) for i in range(len(stats))]
