"""LoRA fine-tuning throughput and memory: this trainer vs a plain transformers + peft loop, on CPU, in one run.

    python bench/bench_finetune.py                       # Qwen2-shaped tiny base, 4 timed steps x 2 repeats
    python bench/bench_finetune.py --steps 6 --repeats 3 --hidden 384 --layers 6

A random Qwen2-shaped model (biased q/k/v, GQA, tied embeddings, a 32k vocabulary so the output projection weighs
as it does in a real base) is saved with ``save_pretrained`` next to a small byte-level BPE tokenizer; a processed
folder with random ids, a turn structure and ~60 % target tokens is synthesised for it. Then, each in its own
process (so peak RSS is that variant's alone), alternating and keeping the best of ``--repeats``:

* trainer:   ``chatbot.train.loop.train`` with ``model.base`` = that folder, ``adapter.kind: lora`` (its own per-step
  tokens/s from metrics.jsonl; the first step is a warm-up and not counted);
* reference: ``AutoModelForCausalLM`` + ``peft.get_peft_model`` with the same LoraConfig, random windows,
  ``model(input_ids, labels=…)`` (transformers' own loss: full logits, -100 on context tokens), plain AdamW over
  the trainable parameters, gradient clipping; same batch, window, threads.

Prints tokens/s of both, the ratio (target ≥ 1.0) and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures import REPO, copy_configs  # bench/fixtures.py

sys.path.insert(0, str(REPO))

SENTENCES = ["안녕 뭐해? 오늘 저녁 뭐 먹을까", "주말에 영화 보러 갈래?", "hello there, how are you doing today?",
             "배고파 치킨 시켜 먹자", "The quick brown fox jumps over the lazy dog 123 456"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# shapes of recommended bases (config.json on the Hugging Face hub): layers, hidden, intermediate, q width, kv width,
# vocabulary, tied embeddings, published parameter count. kanana-nano's attention widths are inferred from its size.
BASES = {
    "Qwen/Qwen2.5-0.5B-Instruct": (24, 896, 4864, 896, 128, 151936, True, 0.49e9),
    "Qwen/Qwen2.5-1.5B-Instruct": (28, 1536, 8960, 1536, 256, 151936, True, 1.54e9),
    "Qwen/Qwen2.5-3B-Instruct": (36, 2048, 11008, 2048, 256, 151936, True, 3.09e9),
    "kakaocorp/kanana-nano-2.1b-instruct": (32, 1792, 8064, 1792, 1024, 128256, False, 2.09e9),
    "LGAI-EXAONE/EXAONE-4.0-1.2B": (30, 2048, 4096, 2048, 512, 102400, True, 1.28e9),
}


def memory_table(batch: int = 8, block: int = 256, target_frac: float = 0.6, r: int = 16) -> str:
    """COMPUTED (not measured) GPU memory of a LoRA / QLoRA fine-tune with this trainer, gradient checkpointing
    on: weights + LoRA weights/grads/AdamW (16 B per adapter weight) + checkpointed activations (each layer's input,
    plus one layer recomputed) + logits of the target tokens only (bf16 logits, fp32 softmax and its gradient) +
    ~0.6 GB CUDA context and allocator slack."""
    gib = 2**30
    rows = ["| base | parameters | weights bf16 | weights 4-bit | LoRA r=16 weights | LoRA bf16 training | "
            "QLoRA 4-bit training |", "|---|---|---|---|---|---|---|"]
    tokens = batch * block
    for name, (layers, h, inter, q, kv, vocab, tied, n) in BASES.items():
        embed = vocab * h * (1 if tied else 2)
        lora = layers * r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h))
        linear = n - embed
        w16, w4 = 2 * n, 0.53 * linear + 2 * embed  # bitsandbytes keeps embeddings and lm_head in bf16
        act = tokens * 2 * (layers * h + 10 * h + 3 * inter + 2 * q)
        logits = int(tokens * target_frac) * vocab * 10
        rest = 16 * lora + act + logits + 0.6 * gib
        rows.append(f"| {name} | {n / 1e9:.2f} B | {w16 / gib:.1f} GiB | {w4 / gib:.1f} GiB | {lora / 1e6:.0f} M | "
                    f"{(w16 + rest) / gib:.1f} GiB | {(w4 + rest) / gib:.1f} GiB |")
    return "\n".join(rows) + (f"\n\n(computed for batch {batch} × {block} tokens, {target_frac:.0%} target tokens, "
                              f"gradient checkpointing on; not measured)")


def peak_rss_mb() -> float:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2**20
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20


def make_base(folder: Path, hidden: int, layers: int, vocab: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.save_pretrained(str(folder))
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                      num_attention_heads=max(2, hidden // 64), num_key_value_heads=max(1, hidden // 256),
                      max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=hf.eos_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(str(folder))


def make_project(root: Path, base: Path, block: int, batch: int, steps: int) -> None:
    import hashlib

    import numpy as np
    import yaml
    from transformers import AutoTokenizer

    copy_configs(root)
    path = root / "configs" / "train.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["model"].update(base=str(base), block_size=block)
    data["adapter"] = {"kind": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": TARGETS,
                       "quantize": "none"}
    data["runtime"].update(device="cpu", dtype="float32")
    data["optimization"].update(batch_size=batch, grad_accum_steps=1, max_steps=steps, learning_rate=2e-4,
                                warmup_steps=0)
    data["logging"].update(log_interval=1, eval_interval=10**6, save_interval=10**6, eval_iters=1, sample_prompts=[])
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(str(base))
    tok_json = tok.backend_tokenizer.to_str()
    out = root / "data" / "processed"
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    rng = np.random.default_rng(0)
    for split, n in (("train", 300_000), ("val", 8192)):
        ids = rng.integers(3, len(tok), size=n).astype(np.uint16)
        mask = np.zeros(n, dtype=np.uint8)
        starts, pos, turn = [], 0, 0
        while pos < n:
            length = int(rng.integers(6, 40))
            if turn % 5 and rng.random() < 0.75:
                mask[pos + 3 : pos + length] = 1  # the text of a target turn (its "S1: " prefix is context)
            if turn % 3 == 0:
                starts.append(pos)
            pos += length
            turn += 1
        ids.tofile(out / f"{split}.bin")
        mask.tofile(out / f"{split}_loss_mask.bin")
        np.asarray(starts, dtype=np.uint64).tofile(out / f"{split}_starts.bin")
    stats = {"dtype": "uint16", "vocab_size": len(tok), "persona": {"target": "room", "self": None, "speakers": {}},
             "tokenizer_hash": hashlib.sha256(tok_json.encode()).hexdigest(),
             "base": {"id": str(base), "revision": "", "tokenizer_hash": hashlib.sha256(tok_json.encode()).hexdigest()}}
    (out / "stats.json").write_text(json.dumps(stats), encoding="utf-8")


def child_trainer(root: Path, steps: int) -> dict:
    import contextlib
    import io

    from chatbot.config import load_config
    from chatbot.train.loop import train

    cfg = load_config(root / "configs")
    cfg.train.optimization.max_steps = steps + 1
    with contextlib.redirect_stdout(io.StringIO()):
        assert train(cfg) == 0
    recs = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"tok_s": [r["tokens_per_s"] for r in recs if r["kind"] == "train" and r["step"] > 1]}


def child_reference(root: Path, steps: int) -> dict:
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from chatbot.config import load_config

    cfg = load_config(root / "configs")
    tc = cfg.train
    o, T, B = tc.optimization, tc.model.block_size, tc.optimization.batch_size
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tc.model.base, dtype=torch.float32)
    a = tc.adapter
    model = get_peft_model(model, LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout,
                                             target_modules=list(a.target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.learning_rate, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    data = np.memmap(cfg.processed_dir / "train.bin", dtype=np.uint16, mode="r")
    mask = np.memmap(cfg.processed_dir / "train_loss_mask.bin", dtype=np.uint8, mode="r")
    out = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        ix = torch.randint(len(data) - T - 1, (B,)).tolist()
        x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix])
        m = torch.stack([torch.from_numpy(mask[i : i + T].astype(np.int64)) for i in ix])
        labels = torch.where(m > 0, x, torch.full_like(x, -100))
        loss = model(input_ids=x, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:  # the first step is a warm-up, as for the trainer
            out.append(B * T / (time.perf_counter() - t0))
    return {"tok_s": out}


def run_child(kind: str, root: Path, a) -> dict:
    """One variant in a fresh process. The parent never imports torch: Linux keeps a process's peak RSS across
    fork + exec, so a heavy parent would inflate every child's figure."""
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONPATH=str(REPO))
    args = ["--child", kind, "--work", str(root), "--steps", str(a.steps), "--hidden", str(a.hidden), "--layers",
            str(a.layers), "--vocab", str(a.vocab), "--block", str(a.block), "--batch", str(a.batch)]
    got = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if got.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", choices=["trainer", "reference", "make-base"])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--memory-table", action="store_true", help="print the computed GPU memory table and exit")
    a = ap.parse_args()
    if a.memory_table:
        print(memory_table())
        return
    if a.child == "make-base":
        import torch
        from transformers import AutoConfig

        make_base(a.work, a.hidden, a.layers, a.vocab)
        c = AutoConfig.from_pretrained(str(a.work))
        print(json.dumps({"about": f"Qwen2-shaped base: hidden {c.hidden_size}, {c.num_hidden_layers} layers, "
                                   f"{c.num_attention_heads} heads ({c.num_key_value_heads} kv), vocab {c.vocab_size}, "
                                   f"tied; LoRA r=16 on {len(TARGETS)} modules; batch {a.batch} x {a.block} tokens, "
                                   f"CPU {torch.get_num_threads()} thread(s), torch {torch.__version__}"}))
        return
    if a.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        make_project(a.work, a.work.parent / "base", a.block, a.batch, a.steps)
        res = (child_trainer if a.child == "trainer" else child_reference)(a.work, a.steps)
        res["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(res))
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    print(run_child("make-base", tmp / "base", a)["about"], flush=True)
    best = {"trainer": None, "reference": None}
    rss = {"trainer": 0.0, "reference": 0.0}
    for r in range(a.repeats):  # interleaved: this machine is shared and its speed drifts
        for kind in ("reference", "trainer"):
            res = run_child(kind, tmp / f"{kind}-{r}", a)
            med = sorted(res["tok_s"])[len(res["tok_s"]) // 2]
            best[kind] = max(best[kind] or 0.0, med)
            rss[kind] = max(rss[kind], res["peak_rss_mb"])
            print(f"  repeat {r + 1} {kind:9s}: median {med:8.0f} tok/s over {len(res['tok_s'])} steps, "
                  f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    ratio = best["trainer"] / best["reference"]
    print(f"trainer   {best['trainer']:8.0f} tok/s   peak RSS {rss['trainer']:6.0f} MB")
    print(f"reference {best['reference']:8.0f} tok/s   peak RSS {rss['reference']:6.0f} MB   (transformers + peft loop)")
    print(f"ratio trainer/reference: {ratio:.2f}x tokens/s (target >= 1.0), "
          f"{rss['trainer'] / rss['reference']:.2f}x peak RSS")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
