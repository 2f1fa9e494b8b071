"""``publish --format hf``: write ``artifacts/hf/`` that ``transformers`` loads as ``LlamaForCausalLM`` +
``PreTrainedTokenizerFast``.

Our parameter names already equal LlamaForCausalLM's (chatbot/model.py), so the weights are copied unchanged;
only a tied ``lm_head.weight`` is left out (safetensors refuses shared tensors; transformers re-ties it from
``tie_word_embeddings``). The JSON files are written by hand rather than through ``save_pretrained`` so their
content does not drift with the installed transformers version: ``config.json`` carries both the 4.x keys
(``rope_theta``, ``torch_dtype``) and the 5.x ones (``rope_parameters``, ``dtype``).

A run fine-tuned from a pretrained base (:func:`export_base_hf`) gets the base's own config.json and tokenizer files
and its merged weights in safetensors shards with an index, written one tensor at a time (no full copy in memory).

Writing the folder needs only ``safetensors``; ``transformers`` is needed to *use* it (both in the ``hf`` extra,
imported nowhere else).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..config import Config
from ..data.tokenizer import load_tokenizer, special_id
from ..errors import ChatbotError
from ..formats.artifact import Artifact
from ..fsio import fsync_dir, make_private, private_mkdir, private_open
from ..model import ModelArgs
from ..tokens import BOS, EOT, PAD, speaker_token

_MISSING = "the Hugging Face export needs the safetensors package: pip install -e .[hf]"


def check_available() -> None:
    """One clear line instead of an ImportError traceback when the ``hf`` extra is not installed."""
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        raise ChatbotError(_MISSING) from None


def _speakers(cfg: Config, persona: dict) -> tuple[str, str]:
    """(bot, user) pseudonyms for the chat template: the same choice reply/chat make (gen.yaml, else persona)."""
    from ..infer.persona import resolve_speakers

    user, bot = resolve_speakers(persona, cfg.gen)
    return bot, user


def hf_files(cfg: Config, artifact: Artifact) -> dict[str, dict]:
    """The JSON documents of the export (file name → content); model.safetensors is written separately."""
    args = ModelArgs.from_dict(dict(artifact.model_args))
    tok = load_tokenizer(artifact.tokenizer_json, is_json=True)
    bos, eot, pad = special_id(tok, BOS), special_id(tok, EOT), special_id(tok, PAD)
    dtype = cfg.paths.publish.dtype
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": args.vocab_size,
        "hidden_size": args.n_embd,
        "intermediate_size": args.ffn_hidden,
        "num_hidden_layers": args.n_layer,
        "num_attention_heads": args.n_head,
        "num_key_value_heads": args.n_kv_head,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": args.block_size,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": args.rope_theta},
        "attention_bias": args.bias,
        "mlp_bias": args.bias,
        "attention_dropout": 0.0,
        "tie_word_embeddings": args.tie_embeddings,
        "bos_token_id": bos,
        "eos_token_id": eot,
        "pad_token_id": pad,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }
    bot, user = _speakers(cfg, artifact.persona)
    bot_tok, user_tok = speaker_token(bot), speaker_token(user)
    chat_template = (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] != 'system' %}"
        f"{{% if message['role'] == 'assistant' %}}{bot_tok}{{% else %}}{user_tok}{{% endif %}}"
        "{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
        f"{{% if add_generation_prompt %}}{bot_tok}{{% endif %}}"
    )
    special = {"bos_token": BOS, "eos_token": EOT, "pad_token": PAD}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": args.block_size,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    }
    s = cfg.gen.sampling
    generation = {"bos_token_id": bos, "eos_token_id": eot, "pad_token_id": pad, "max_new_tokens": s.max_new_tokens}
    if s.temperature > 0:
        generation.update(do_sample=True, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
        if s.min_p > 0:
            generation["min_p"] = s.min_p
    else:
        generation["do_sample"] = False
    if s.repetition_penalty != 1.0:
        generation["repetition_penalty"] = s.repetition_penalty
    return {
        "config.json": config,
        "generation_config.json": generation,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": special,
    }


def hf_state(artifact: Artifact) -> dict:
    """Contiguous tensors for safetensors; the tied ``lm_head.weight`` dropped (transformers re-ties it)."""
    tied = bool(artifact.model_args.get("tie_embeddings", True))
    return {k: v.contiguous() for k, v in artifact.model.items() if not (tied and k == "lm_head.weight")}


def export_hf(cfg: Config, artifact: Artifact, target: Path) -> None:
    """Write the folder next to ``target`` under a temp name, then swap it in (a reader never sees half a folder)."""
    check_available()
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        for name, doc in hf_files(cfg, artifact).items():
            _write(tmp / name, (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
        _write(tmp / "tokenizer.json", artifact.tokenizer_json.encode("utf-8"))
        save_file(hf_state(artifact), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        make_private(tmp / "model.safetensors")  # safetensors creates it with the umask's mode
        _fsync(tmp / "model.safetensors")

    _swap_in(target, fill)


# ------------------------------------------------------------------------------------------ pretrained base runs
SHARD_BYTES = 2 << 30  # transformers' own default shard size is of this order; tests make it small


def shard_plan(entries: list, shard_bytes: int) -> list[list]:
    """Consecutive entries grouped into shards of at most ``shard_bytes`` (a bigger tensor gets its own)."""
    shards: list[list] = [[]]
    size = 0
    for entry in entries:
        _, dtype, shape = entry
        n = torch.empty((), dtype=dtype).element_size()
        for d in shape:
            n *= int(d)
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += n
    return shards


def export_base_hf(plan, target: Path) -> None:
    """A merged base-run model as a Hugging Face folder: the base's config.json (dtype updated) and tokenizer files,
    the merged weights in safetensors shards (+ index), written one tensor at a time."""
    check_available()
    from ..formats.hf_artifact import ContainerWriter

    entries = plan.merged_entries()
    shards = shard_plan(entries, SHARD_BYTES)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    config = dict(plan.config)
    config["torch_dtype"] = config["dtype"] = plan.cfg.paths.publish.dtype

    def fill(tmp: Path) -> None:
        _write(tmp / "config.json", (json.dumps(config, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
        for name, text in plan.tok_files.items():
            _write(tmp / name, text.encode("utf-8"))
        tensors = plan.merged_tensors()
        weight_map, total = {}, 0
        for shard, fname in zip(shards, names):
            with private_open(tmp / fname, "wb") as fh:
                writer = ContainerWriter(fh, shard, {"format": "pt"})
                for entry in shard:
                    name, t = next(tensors)
                    writer.add(name, t)
                    weight_map[name] = fname
                    total += t.numel() * t.element_size()
                    del t
                writer.done()
                fh.flush()
                os.fsync(fh.fileno())
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            _write(tmp / "model.safetensors.index.json",
                   (json.dumps(index, indent=2) + "\n").encode("utf-8"))

    _swap_in(target, fill)


def _swap_in(target: Path, fill) -> None:
    """``fill(tmp)`` writes the folder's files into a temp folder next to ``target``, which then replaces it."""
    target = Path(target)
    private_mkdir(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent)))
    old = None
    try:
        fill(tmp)
        fsync_dir(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous export back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    with private_open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
