"""Inference of a model fine-tuned from a pretrained base: decode speed vs transformers, and publish/load memory.

    python bench/bench_generate_base.py                 # both parts
    python bench/bench_generate_base.py --part speed --repeats 5
    python bench/bench_generate_base.py --part memory --hidden 1024 --layers 12

speed — a tiny random Qwen2-shaped model (no download), greedy, ``--context`` prompt tokens, ``--new`` tokens
without a stop token, so both paths do the same work:
* reply's loop — ``chatbot.infer.decode.generate`` (what ``Responder.reply`` runs for a base model: transformers
  forward with a DynamicCache, one token per step, logits of the last position only, gen.yaml decode_threads)
* transformers — ``model.generate()`` (greedy, its default cache) on the very same weights
TTFT = prompt in → first token out; decode tok/s = (new - 1) / time after the first token. Best and median of
``--repeats`` round-robin rounds after a warm-up; the greedy tokens are checked equal. Target: ratio >= 1.0.

memory — a larger random Qwen2-shaped base (``--hidden``/``--layers``) saved as safetensors + a LoRA checkpoint
(peft) in a temp project; then, each in a fresh child process: ``publish --encrypt`` (merge + stream-encrypt) and
``load_bundle`` (decrypt in memory + build the model). Each child prints its peak RSS above what it had after
imports (sampled every few ms; the key derivation included); the targets are publish << 1x the merged size (one tensor at a time) and load ≈ 1x (the weights are
views of the decrypted buffer). The temp project is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures import REPO, copy_configs  # bench/fixtures.py

sys.path.insert(0, str(REPO))

import torch  # noqa: E402

KEY = "bench-model-key-" + "z" * 24  # a throw-away key for the temp project


def _config(hidden: int, layers: int, vocab: int, context: int):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 16 * 16,
                       num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
                       num_key_value_heads=max(1, hidden // 256), max_position_embeddings=max(512, context * 2),
                       tie_word_embeddings=False, eos_token_id=None, bos_token_id=None, pad_token_id=0)


class PeakRss:
    """Highest resident memory of this process while the block runs, sampled every few milliseconds.

    (Not ``ru_maxrss``: on Linux a child started from a big parent inherits the parent's peak across exec.)"""

    def __enter__(self):
        import threading

        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.before = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(0.003)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


# ------------------------------------------------------------------------------------------------------ speed
def time_ours(model, prompt, new, sampling, threads):
    from chatbot.infer.decode import generate

    t0 = time.perf_counter()
    out = generate(model, prompt, sampling, max_new_tokens=new, decode_threads=threads)
    total = time.perf_counter() - t0
    assert len(out.tokens) == new, out.stop_reason
    return out.first_token_s, total, out.tokens


@torch.inference_mode()
def time_hf(model, prompt, new):
    ids = torch.tensor([prompt])
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0, eos_token_id=None)
    t0 = time.perf_counter()
    model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
    ttft = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
    return ttft, time.perf_counter() - t0, out[0, len(prompt):].tolist()


def speed(a) -> None:
    from transformers import AutoModelForCausalLM

    from chatbot.config import SamplingConfig, load_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(a.hidden_small, a.layers_small, a.vocab, a.context)).eval()
    n = sum(p.numel() for p in model.parameters())
    threads = load_config(REPO / "configs").gen.decode_threads
    greedy = SamplingConfig(temperature=0.0, repetition_penalty=1.0, stop_on_next_turn=False)
    prompt = torch.randint(1, a.vocab, (a.context,), generator=torch.Generator().manual_seed(1)).tolist()
    print(f"\n[speed] Qwen2-shaped, hidden {a.hidden_small}, {a.layers_small} layers, vocab {a.vocab}, "
          f"{n / 1e6:.1f}M params; context {a.context}, {a.new} new tokens, decode_threads {threads}")
    paths = {"reply's loop": lambda: time_ours(model, prompt, a.new, greedy, threads),
             "transformers": lambda: time_hf(model, prompt, a.new)}
    for fn in paths.values():
        fn()  # warm-up
    runs = {k: [] for k in paths}
    for _ in range(a.repeats):
        for k, fn in paths.items():
            runs[k].append(fn())
    res = {}
    for k, rs in runs.items():
        dec = [r[1] - r[0] for r in rs]
        res[k] = {"ttft": min(r[0] for r in rs), "ttft_med": statistics.median(r[0] for r in rs),
                  "tps": (a.new - 1) / min(dec), "tps_med": (a.new - 1) / statistics.median(dec), "tokens": rs[0][2]}
        print(f"  {k:<14} TTFT {res[k]['ttft'] * 1000:7.1f} ms (median {res[k]['ttft_med'] * 1000:7.1f})   "
              f"decode {res[k]['tps']:7.1f} tok/s (median {res[k]['tps_med']:7.1f})")
    o, t = res["reply's loop"], res["transformers"]
    if o["tokens"] != t["tokens"]:
        print("  note: greedy tokens differ (float near-ties)")
    print(f"  decode ours / transformers: {o['tps'] / t['tps']:.2f}x best, {o['tps_med'] / t['tps_med']:.2f}x median "
          f"(target >= 1.0x); TTFT transformers / ours: {t['ttft'] / o['ttft']:.2f}x")


# ----------------------------------------------------------------------------------------------------- memory
def _project(root: Path, hidden: int, layers: int, vocab: int) -> int:
    """configs + .env + a random base folder + a LoRA checkpoint; returns the merged weight bytes (fp32)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from chatbot.base import base_weight_hash, tokenizer_hash

    copy_configs(root)
    (root / ".env").write_text(f"CHATBOT_MODEL_KEY={KEY}\n", encoding="utf-8")
    base = root / "base"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["안녕 뭐해 오늘 저녁 뭐 먹을까", "hello there how are you"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = _config(hidden, layers, vocab, 256)
    config.eos_token_id = hf_tok.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(base))
    hf_tok.save_pretrained(str(base))
    nbytes = sum(p.numel() * 4 for p in model.parameters())
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    del peft_model, model
    from chatbot.base.load import load_tokenizer
    from chatbot.formats import checkpoint as checkpoint_format

    th = tokenizer_hash(load_tokenizer(base))  # as training hashes it: the tokenizer loaded from the folder
    ckpt = {"format": checkpoint_format.FORMAT, "model": state, "model_args": None, "optimizer": {}, "step": 1,
            "val_loss": 1.0, "best_val_loss": 1.0, "tokenizer_hash": th,
            "base": {"id": str(base), "revision": "", "weight_hash": base_weight_hash(base), "tokenizer_hash": th,
                     "adapter": {"kind": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": targets,
                                 "quantize": "none"}}}
    (root / "checkpoints" / "default").mkdir(parents=True)
    torch.save(ckpt, root / "checkpoints" / "default" / "best.pt")
    (root / "data" / "processed").mkdir(parents=True)
    (root / "data" / "processed" / "stats.json").write_text(json.dumps({"tokenizer_hash": th}), encoding="utf-8")
    return nbytes


def child(mode: str, root: Path) -> None:
    """Run one stage in this (fresh) process and print JSON: peak RSS after imports and after the work."""
    import transformers  # noqa: F401  (imports counted in the baseline)

    from chatbot.config import load_config
    from chatbot.infer.loading import load_bundle
    from chatbot.artifact.publish import publish

    import peft  # noqa: F401  (imported by both stages; counted in the baseline)

    cfg = load_config(root / "configs")
    t0 = time.perf_counter()
    with PeakRss() as rss:
        if mode == "publish":
            publish(cfg, encrypt=True, fmt="pt", dry=False)
        else:
            bundle = load_bundle(cfg)
            assert bundle.weights == "merged"
    print(json.dumps({"before_mb": rss.before / 2**20, "peak_mb": rss.peak / 2**20, "s": time.perf_counter() - t0}))


def memory(a) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        nbytes = _project(root, a.hidden, a.layers, a.vocab)
        print(f"\n[memory] Qwen2-shaped base, hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}: "
              f"{nbytes / 2**20:.0f} MiB of fp32 weights (made in {time.perf_counter() - t0:.0f} s)")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for mode in ("publish", "load"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--root", str(root)], env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            extra = r["peak_mb"] - r["before_mb"]
            print(f"  {mode:<8} {r['s']:6.1f} s   peak RSS {r['peak_mb']:7.0f} MiB = {r['before_mb']:6.0f} after imports "
                  f"+ {extra:6.0f} MiB = {extra / (nbytes / 2**20):.2f}x the weights (key derivation included)")
        enc = root / "artifacts" / "model_latest.enc"
        print(f"  model_latest.enc {enc.stat().st_size / 2**20:.0f} MiB; plaintext files under the project: "
              f"{[p.name for p in (root / 'artifacts').iterdir() if p.suffix not in ('.enc', '.json')] or 'none'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", default="speed,memory")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden-small", type=int, default=128)
    p.add_argument("--layers-small", type=int, default=2)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--root", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child, Path(a.root))
    if a.threads:
        torch.set_num_threads(a.threads)
    import transformers

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus, load average {load:.2f}")
    if "speed" in a.part:
        speed(a)
    if "memory" in a.part:
        memory(a)


if __name__ == "__main__":
    main()
