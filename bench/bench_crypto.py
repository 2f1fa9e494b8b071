"""Memory and speed of encrypted publishing and loading on a generated model.

    python bench/bench_crypto.py                # ~1 GB float32 model (the issue's target size)
    python bench/bench_crypto.py --mb 256       # smaller, when 1 GB is too slow on this machine

Each phase runs in its own child process so its peak RSS (``ru_maxrss``) is its own; "extra" is the peak minus the
RSS right after the phase's imports and inputs were ready, and the ratios are peak / model size. Phases:

1. publish --encrypt from a real checkpoint (weights + AdamW state = 3x the model on disk, mmap-loaded)
2. formats.artifact.load(.enc) — decrypt in memory + torch.load (what reply/chat do)
3. the same for the plaintext .pt artifact (baseline: torch.load alone)
4. raw throughput of the container: EncryptingWriter to a file, decrypt_to_bytes back (256 MiB; the one-off
   scrypt key derivation is reported apart)

Targets (issue 6): peak while encrypting / decrypting ≤ ~2x the model size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fixtures import REPO, copy_configs, peak_mb, reset_peak, rss_mb  # bench/fixtures.py

KEY = "Vb3x-Qm7tZ1pK9sW2rN8yL4cF6hJ0dGe5aUo"  # invented; a repeated-letter key is refused as weak (security.model_key)


def _model_args(mb: int):
    from chatbot.model import ModelArgs

    # n_embd 1024, vocab 8192: ~12.6M params per layer + 8.4M embedding (tied), fp32
    per_layer = 4 * (1024 * 1024) + 3 * 1024 * 2816 + 2 * 1024
    n_layer = max(1, round((mb * 1e6 / 4 - 8192 * 1024) / per_layer))
    return ModelArgs(vocab_size=8192, block_size=256, n_layer=n_layer, n_head=16, n_kv_head=16, n_embd=1024,
                     ffn_hidden=2816)


def make_workspace(ws: Path, mb: int) -> dict:
    """configs + data/processed (tokenizer, stats) + checkpoints/default/best.pt with optimizer state."""
    import torch

    from chatbot.data.tokenizer import tokenizer_hash, train_tokenizer
    from chatbot.formats import checkpoint as checkpoint_format
    from chatbot.model import Transformer

    copy_configs(ws)
    tok = train_tokenizer(["안녕 뭐해? 오늘 저녁 뭐 먹을까", "hello world, this is a benchmark"] * 50, 600)
    processed = ws / "data" / "processed"
    processed.mkdir(parents=True)
    tok_json = tok.to_str()
    (processed / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    h = tokenizer_hash(tok_json)
    (processed / "stats.json").write_text(json.dumps({"tokenizer_hash": h, "persona": {
        "target": "room", "self": None, "speakers": {"S1": 2, "S2": 1}}}), encoding="utf-8")
    args = _model_args(mb)
    with torch.device("meta"):
        meta = Transformer(args)
    # random weights without running the (slow) init of a full nn.Module
    state = {}
    for k, v in meta.state_dict().items():
        if k == "lm_head.weight" and args.tie_embeddings:
            state[k] = state["model.embed_tokens.weight"]
        else:
            state[k] = torch.randn(v.shape) * 0.02
    n_bytes = sum(t.numel() * 4 for k, t in state.items() if not (k == "lm_head.weight" and args.tie_embeddings))
    params = [t for k, t in state.items() if not (k == "lm_head.weight" and args.tie_embeddings)]
    opt_state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                 for i, p in enumerate(params)}
    ckpt = {"format": checkpoint_format.FORMAT, "model": state, "model_args": args.to_dict(),
            "optimizer": {"state": opt_state, "param_groups": [{"params": list(range(len(params)))}]},
            "step": 1000, "best_val_loss": 2.5, "val_loss": 2.5, "tokenizer_hash": h, "vocab_size": args.vocab_size}
    run = ws / "checkpoints" / "default"
    run.mkdir(parents=True)
    torch.save(ckpt, run / "best.pt")
    return {"model_bytes": n_bytes, "ckpt_bytes": (run / "best.pt").stat().st_size}


# ------------------------------------------------------------------------------------------------- phases
def phase_publish(ws: str, encrypt: bool) -> dict:
    import chatbot.artifact.publish as publish_mod
    from chatbot.config import load_config

    os.environ["CHATBOT_MODEL_KEY"] = KEY
    cfg = load_config(Path(ws) / "configs")
    base = reset_peak()
    t = time.perf_counter()
    publish_mod.publish(cfg, encrypt=encrypt, fmt="pt", dry=False)
    return {"seconds": time.perf_counter() - t, "base_mb": base, "peak_mb": peak_mb()}


def phase_load(ws: str, name: str) -> dict:
    import torch  # noqa: F401  (imported before the baseline)

    from chatbot.formats import artifact as artifact_format

    path = Path(ws) / "artifacts" / name
    base = reset_peak()
    t = time.perf_counter()
    art = artifact_format.load(path, KEY if name.endswith(".enc") else None)
    secs = time.perf_counter() - t
    assert art.to_dict()["format"] == artifact_format.FORMAT
    return {"seconds": secs, "base_mb": base, "peak_mb": peak_mb(), "after_mb": rss_mb()}


def phase_raw(ws: str) -> dict:
    from chatbot import crypto

    t = time.perf_counter()
    crypto._derive(KEY, b"s" * 16, crypto.DEFAULT_LOG2N, crypto.DEFAULT_R, crypto.DEFAULT_P)
    kdf = time.perf_counter() - t
    data = os.urandom(256 << 20)
    path = Path(ws) / "raw.enc"
    t = time.perf_counter()
    with crypto.EncryptingWriter(path, KEY) as w:
        w.write(data)
    t_enc = time.perf_counter() - t - kdf
    t = time.perf_counter()
    back = crypto.decrypt_to_bytes(path, KEY)
    t_dec = time.perf_counter() - t - kdf
    assert back == data
    mb = 256 * 1.048576
    return {"kdf_s": kdf, "enc_mb_s": mb / t_enc, "dec_mb_s": mb / t_dec}


def _child(*argv: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *argv], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        sys.exit(f"phase {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024, help="model size in MB (float32 weights)")
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.phase:
        kind, *rest = a.phase
        res = {"publish": lambda: phase_publish(rest[0], rest[1] == "enc"), "load": lambda: phase_load(*rest),
               "raw": lambda: phase_raw(rest[0])}[kind]()
        print(json.dumps(res))
        return

    ws = Path(tempfile.mkdtemp(prefix="bench-crypto-"))  # random weights only, nothing private
    try:
        t = time.perf_counter()
        sizes = make_workspace(ws, a.mb)
        model_mb = sizes["model_bytes"] / 1e6
        print(f"model: {model_mb:.0f} MB float32 weights; checkpoint with AdamW state {sizes['ckpt_bytes'] / 1e6:.0f} MB "
              f"(built in {time.perf_counter() - t:.0f} s)")

        def report(label: str, r: dict, mb: float) -> None:
            extra = r["peak_mb"] - r["base_mb"]
            print(f"{label:<34} {r['seconds']:6.1f} s  {mb / r['seconds']:7.0f} MB/s  peak RSS {r['peak_mb']:7.0f} MB "
                  f"(extra {extra:6.0f} MB = {extra / model_mb:4.2f}x model; peak/model {r['peak_mb'] / model_mb:4.2f}x)")

        report("publish --encrypt (ckpt → .enc)", _child("publish", str(ws), "enc"), model_mb)
        report("publish (ckpt → .pt, baseline)", _child("publish", str(ws), "pt"), model_mb)
        report("load_artifact(.enc) decrypt+load", _child("load", str(ws), "model_latest.enc"), model_mb)
        report("load_artifact(.pt) baseline", _child("load", str(ws), "model_latest.pt"), model_mb)
        raw = _child("raw", str(ws))
        print(f"container file → memory (256 MiB, key derivation excluded, incl. fsync): encrypt {raw['enc_mb_s']:.0f} MB/s, "
              f"decrypt {raw['dec_mb_s']:.0f} MB/s; scrypt key derivation {raw['kdf_s']:.2f} s per file")
    finally:
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
