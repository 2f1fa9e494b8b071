"""Typed configuration: ``configs/paths.yaml``, ``configs/train.yaml``, ``configs/gen.yaml``.

Each YAML file maps onto a tree of dataclasses below; the docstring of each dataclass documents its keys (the
YAML files repeat the essentials as comments). Loading validates everything before any work starts: a missing
file, an unknown key (with a "did you mean"), a wrong type or an out-of-range value raises :class:`ConfigError`
with one line naming the file and the dotted key.

String values may contain ``${VAR}`` or ``${VAR:default}``; they resolve from the process environment, then from
``.env`` in the project root. Relative paths resolve against the project root, which is the parent of the
config folder (so ``runs/demo/configs`` gives a self-contained workspace ``runs/demo``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open)}


def _printable_ascii(value: str) -> str | None:
    """A secret that HTTP clients can send unchanged in a header and a URL path: printable ASCII, no spaces
    (header values are Latin-1 on the wire and stripped of surrounding blanks). The message never shows the value."""
    if all(33 <= ord(c) <= 126 for c in value):
        return None
    return ("use printable ASCII characters only, without spaces (the value is not shown); "
            "`python -m chatbot.ops bridge-secret --replace` writes a random one into .env")


def _host_patterns(patterns: list[str]) -> str | None:
    """callback_hosts entries: a host name or IP address, "*.domain" or "*" (anything else — a URL, a port, a "*"
    elsewhere — would silently match nothing)."""
    for i, pattern in enumerate(patterns):
        if pattern == "*":
            continue
        host = pattern[2:] if pattern.startswith("*.") else pattern
        try:
            ipaddress.ip_address(host.strip("[]"))
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[^\s/:*@?#\[\]]+", host) or host.startswith("."):
            return f"entry {i + 1} is not a host name, '*.domain' or '*'"
    return None


# --------------------------------------------------------------------------------------------------- paths.yaml
@dataclass
class RawConfig:
    """Raw exports.

    inbox: folder where users drop new exports (``.txt``, ``.csv``, ``.zip``).
    root_globs: file-name patterns also collected from the project root (never README, configs, code).
    organized: where organize files each export, one folder per room.
    manifest: JSON manifest written by organize, one entry per export (a file, or one member of a zip).
    move_files: move exports out of the inbox/root instead of copying (default false: never lose a file).
    self_name: the name given to the exporter's own messages when an old mobile export wrote 회원님/you/You.
    zip_max_member_mb: a ``.txt``/``.csv`` inside a zip that expands to more than this many MiB is refused
        (zip bomb guard; declared sizes are checked first and the expanded bytes are counted while reading).
    zip_max_ratio: ... and so is one that expands more than this many times its compressed size (members under
        1 MiB are exempt; real chat text compresses 3-10 times).
    """

    inbox: str = "data/raw/inbox"
    root_globs: list[str] = field(
        default_factory=lambda: ["KakaoTalk*.txt", "KakaoTalk*.csv", "KakaoTalk*.zip", "Talk_*.txt",
                                 "*카카오톡 대화*.txt", "KakaoTalkChats*.txt"]
    )
    organized: str = "data/raw/organized"
    manifest: str = "data/raw/manifest.json"
    move_files: bool = False
    self_name: str = "나"
    zip_max_member_mb: float = field(default=1024.0, metadata=_range(1))
    zip_max_ratio: float = field(default=100.0, metadata=_range(2))


@dataclass
class PiiConfig:
    """Which classes of personal data are replaced by typed placeholder tokens (each on by default; the exact
    rules are in chatbot/data/pii.py).

    address: Korean street / lot addresses (``서울시 강남구 테헤란로 123``, ``… 101동 1203호``) → ``<|address|>``.
    A model trained before this class existed gets addresses unmasked at reply time, as it saw them in training.
    """

    phone: bool = True
    email: bool = True
    url: bool = True
    rrn: bool = True
    card: bool = True
    account: bool = True
    mention: bool = True
    address: bool = True


@dataclass
class PreprocessConfig:
    """Conversation building (see chatbot/data/preprocess.py for the precise meaning of each key).

    session_gap_minutes: a silence longer than this starts a new session.
    merge_same_speaker: merge consecutive messages of one speaker into one turn.
    merge_gap_minutes: ... only when each follows the previous within this many minutes.
    max_merged_chars: ... and only while the merged turn stays within this many characters.
    min_message_chars / max_message_chars: drop messages shorter / longer than this (after cleaning).
    min_target_chars: a turn shorter than this is context only, never a loss target.
    drop_low_signal: drop messages with no conversational content (lone placeholder, punctuation only, sender-deleted).
    media: "drop" media placeholders or keep them as typed tokens ("token").
    system: "drop" system events or keep them as a typed token ("token").
    corpus_mode: "context_windows" (sessions cut into windows of turns).
    context_turns: at most this many turns of context before each target turn in one window.
    min_context_turns: a target turn needs at least this many preceding turns in its session.
    sample_stride: start a new window every this many eligible target turns.
    target: "room" (every speaker's turns are targets) or one speaker's real name / pseudonym "S<n>" (only theirs).
    val_fraction: fraction of sessions with a target turn (the latest ones) held out for validation.
    vocab_size: BPE vocabulary size, special tokens included.
    max_speakers: speakers beyond the most active this many share one pseudonym.
    learn_turn_taking: also train on "who speaks next": loss on the speaker token of every turn that follows
    another turn (all speakers, not only targets), so gen.yaml reply_policy model can read P(the bot speaks next).
    Off = the speaker tokens stay context only, as before.
    pii: which personal-data classes to mask.
    """

    session_gap_minutes: float = field(default=60.0, metadata=_range(0, lo_open=True))
    merge_same_speaker: bool = True
    merge_gap_minutes: float = field(default=3.0, metadata=_range(0))
    max_merged_chars: int = field(default=600, metadata=_range(1))
    min_message_chars: int = field(default=1, metadata=_range(0))
    max_message_chars: int = field(default=1000, metadata=_range(1))
    min_target_chars: int = field(default=2, metadata=_range(0))
    drop_low_signal: bool = True
    media: Literal["drop", "token"] = "token"
    system: Literal["drop", "token"] = "drop"
    corpus_mode: Literal["context_windows"] = "context_windows"
    context_turns: int = field(default=8, metadata=_range(1))
    min_context_turns: int = field(default=1, metadata=_range(0))
    sample_stride: int = field(default=1, metadata=_range(1))
    target: str = "room"
    val_fraction: float = field(default=0.1, metadata=_range(0, 0.9))
    vocab_size: int = field(default=8000, metadata=_range(512, 4_000_000))
    max_speakers: int = field(default=64, metadata=_range(1, 64))
    learn_turn_taking: bool = False
    pii: PiiConfig = field(default_factory=PiiConfig)


@dataclass
class ProcessedConfig:
    """dir: output folder of preprocess (tokenizer.json, *.bin, stats.json, preview.json, speakers.json)."""

    dir: str = "data/processed"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


@dataclass
class PublishConfig:
    """source_preference: checkpoint files tried in order in checkpoints/<run_name>/.
    dtype: weights dtype in the artifact ("float32", "bfloat16", "float16").
    """

    source_preference: list[str] = field(default_factory=lambda: ["best.pt", "latest.pt"])
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass
class PathsConfig:
    """Where every stage reads and writes. Relative paths are relative to the project root."""

    raw: RawConfig = field(default_factory=RawConfig)
    processed: ProcessedConfig = field(default_factory=ProcessedConfig)
    checkpoints: str = "checkpoints"
    artifacts: str = "artifacts"
    archive: str = "data/archive"
    bridge_memory: str = "data/bridge"
    publish: PublishConfig = field(default_factory=PublishConfig)


# --------------------------------------------------------------------------------------------------- train.yaml
@dataclass
class RuntimeConfig:
    """seed: RNG seed. device: auto|cpu|cuda|cuda:N|mps. dtype: auto|float32|bfloat16|float16 (autocast).
    compile: wrap the model in torch.compile.
    gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower); for long
    contexts or big pretrained bases.
    """

    seed: int = 1337
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = False
    gradient_checkpointing: bool = False


@dataclass
class ModelShape:
    """The decoder's architecture, defined once: train.yaml's ``model:`` keys (:class:`ModelConfig`) and the
    built model's arguments (``chatbot.model.ModelArgs``, which adds the vocabulary size) both inherit these
    fields. block_size: context length in tokens. n_kv_head: key/value heads (GQA; 0 = n_head).
    bias: linear biases (HF attention_bias/mlp_bias). tie_embeddings: share input and output embeddings.
    ffn_hidden: SwiGLU hidden size (0 = LLaMA rule: 8/3·n_embd rounded up to multiple_of).
    """

    block_size: int = field(default=256, metadata=_range(8))
    n_layer: int = field(default=0, metadata=_range(0))
    n_head: int = field(default=0, metadata=_range(0))
    n_kv_head: int = field(default=0, metadata=_range(0))
    n_embd: int = field(default=0, metadata=_range(0))
    ffn_hidden: int = field(default=0, metadata=_range(0))
    multiple_of: int = field(default=64, metadata=_range(1))
    dropout: float = field(default=0.0, metadata=_range(0, 1))
    bias: bool = False
    tie_embeddings: bool = True
    rope_theta: float = field(default=10000.0, metadata=_range(1))
    norm_eps: float = field(default=1e-5, metadata=_range(0, 1, lo_open=True))


@dataclass
class _ModelSource:
    size: Literal["auto", "custom"] = "auto"
    base: str = ""
    base_revision: str = ""


@dataclass
class ModelConfig(ModelShape, _ModelSource):  # fields: size, base, base_revision, then the ModelShape ones
    """LLaMA-style decoder: the architecture keys of :class:`ModelShape`, and where the weights start.
    size: "auto" = n_layer / n_head / n_kv_head / n_embd left at 0 are picked from the training token count and
    the device (chatbot/train/autosize.py, docs/MODEL_SIZE.md); a non-zero value always wins. "custom" = all explicit.
    base: "" = train from scratch with the keys above. Else fine-tune a pretrained model: a Hugging Face model id
    ("Qwen/Qwen2.5-1.5B-Instruct") or a local folder with config.json + *.safetensors + tokenizer files; the
    architecture keys above are then ignored (block_size still bounds the training window).
    base_revision: commit hash, branch or tag of a hub id ("" = the default branch).
    """


_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class AdapterConfig:
    """How a pretrained base (``model.base``) is fine-tuned; ignored when ``model.base`` is "".

    kind: lora (train low-rank adapters, the base stays frozen) | full (train every weight).
    r: LoRA rank. alpha: LoRA scaling numerator (scale = alpha / r). dropout: dropout on the LoRA input.
    target_modules: names of the linear layers that get adapters (the defaults fit Llama/Qwen/Mistral/EXAONE-style
    models).
    quantize: none | 4bit (QLoRA: the frozen base in 4-bit NF4; CUDA + bitsandbytes only, lora only).
    """

    kind: Literal["lora", "full"] = "lora"
    r: int = field(default=16, metadata=_range(1, 4096))
    alpha: float = field(default=32.0, metadata=_range(0, lo_open=True))
    dropout: float = field(default=0.05, metadata=_range(0, 1))
    target_modules: list[str] = field(default_factory=lambda: list(_LORA_TARGETS))
    quantize: Literal["none", "4bit"] = "none"


@dataclass
class OptimizationConfig:
    """batch_size: micro-batch (windows). grad_accum_steps: micro-batches per optimizer step.
    max_steps: optimizer steps to run (0 = auto: about an hour on a 2-core CPU, 5000 on a GPU, at most 10 passes
    over the data; chatbot/train/autosize.py). learning_rate: peak rate (0 = auto: the auto size's rate).
    min_lr: final rate (0 with an auto learning_rate = a tenth of it). warmup_steps: linear warm-up (0 = auto:
    5 % of max_steps, at most 200). lr_schedule: cosine|linear|constant; decays over lr_decay_steps
    (0 = max_steps) to min_lr.
    """

    batch_size: int = field(default=16, metadata=_range(1))
    grad_accum_steps: int = field(default=2, metadata=_range(1))
    max_steps: int = field(default=0, metadata=_range(0))
    learning_rate: float = field(default=0.0, metadata=_range(0))
    min_lr: float = field(default=0.0, metadata=_range(0))
    warmup_steps: int = field(default=0, metadata=_range(0))
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    lr_decay_steps: int = field(default=0, metadata=_range(0))
    weight_decay: float = field(default=0.1, metadata=_range(0))
    beta1: float = field(default=0.9, metadata=_range(0, 1))
    beta2: float = field(default=0.95, metadata=_range(0, 1))
    grad_clip: float = field(default=1.0, metadata=_range(0))


@dataclass
class ObjectiveConfig:
    """loss_mode: response_only (loss on mask=1 tokens only) or all (plain language modelling)."""

    loss_mode: Literal["response_only", "all"] = "response_only"


@dataclass
class LoggingConfig:
    """Intervals are in optimizer steps. eval_interval: 0 = auto (a tenth of max_steps). eval_iters: validation
    batches per eval (0 = whole val split). save_interval: 0 = eval_interval.
    eval_replies: validation replies generated and scored (chrF, distinct-2, top-5 share; chatbot/eval) at each
    evaluation and logged to metrics.jsonl (0 = off; each costs about a reply's latency).
    """

    log_interval: int = field(default=10, metadata=_range(1))
    eval_interval: int = field(default=0, metadata=_range(0))
    eval_iters: int = field(default=10, metadata=_range(0))
    save_interval: int = field(default=0, metadata=_range(0))
    eval_replies: int = field(default=0, metadata=_range(0))
    keep_last_n_snapshots: int = field(default=3, metadata=_range(0))
    sample_prompts: list[str] = field(default_factory=lambda: ["안녕 뭐해?", "오늘 저녁 뭐 먹을까"])


@dataclass
class TrainConfig:
    """run_name: folder under checkpoints/. auto_resume: continue from latest.pt. resume_path: explicit checkpoint
    to resume from ("" = none). stop_file_name: create this file in the run folder to stop gracefully.
    init_from: start a *new* run from the weights of this checkpoint (e.g. ``checkpoints/stage1/best.pt``):
    weights only — step, optimizer and sampler start fresh (the two-stage recipe: loss_mode all, then
    response_only). Ignored once the run has its own latest.pt ("" = none).
    adapter: how a pretrained base is fine-tuned (see AdapterConfig).
    """

    run_name: str = "default"
    auto_resume: bool = True
    resume_path: str = ""
    init_from: str = ""
    stop_file_name: str = "STOP"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ----------------------------------------------------------------------------------------------------- gen.yaml
@dataclass
class SamplingConfig:
    """temperature 0 = greedy. top_k 0 = off. top_p 1 = off. min_p 0 = off. repetition_penalty 1 = off, applied to
    tokens among the last repetition_window generated+context tokens. seed: fixed seed for reproducible replies.
    """

    temperature: float = field(default=0.8, metadata=_range(0))
    top_k: int = field(default=50, metadata=_range(0))
    top_p: float = field(default=0.95, metadata=_range(0, 1, lo_open=True))
    min_p: float = field(default=0.0, metadata=_range(0, 1))
    repetition_penalty: float = field(default=1.1, metadata=_range(1))
    repetition_window: int = field(default=64, metadata=_range(0))
    max_new_tokens: int = field(default=64, metadata=_range(1))
    seed: int = 1234
    stop_on_next_turn: bool = True


@dataclass
class ChatConfig:
    """Labels shown in the anonymous two-person chat, and whether replies stream token by token."""

    user_label: str = "나"
    bot_label: str = "상대"
    stream: bool = True


@dataclass
class SmokeConfig:
    """prompts: the user turns of the smoke conversation. max_latency_s: fail when one reply takes longer."""

    prompts: list[str] = field(default_factory=lambda: ["안녕 뭐해?", "오늘 저녁 뭐 먹을까?", "주말에 뭐 할 거야?"])
    max_latency_s: float = field(default=20.0, metadata=_range(0, lo_open=True))


@dataclass
class EvalConfig:
    """The eval verb. items: validation turns of the bot speaker answered by the model and the retrieval bot
    (chosen with sampling.seed; --limit overrides). add_k: add-k smoothing of the unigram/bigram baselines (0 = the
    best of a small grid on the validation split: the strongest baseline). retrieval_context_turns: context turns
    the retrieval bot compares.
    """

    items: int = field(default=200, metadata=_range(0))
    add_k: float = field(default=0.0, metadata=_range(0))
    retrieval_context_turns: int = field(default=2, metadata=_range(1))


@dataclass
class BridgeConfig:
    """Messenger bridge. transport: kakao-skill | relay | jsonl. host/port: HTTP listen address.
    workers: generation threads. queue_limit: waiting requests before 503. callback_after_s: answer with
    useCallback when generation may exceed this (Kakao's budget is 5 s). max_body_bytes: larger bodies get 413.
    request_read_timeout_s: total time a client has to send one request (request line + headers + body), counted
    from its first byte; a slower client gets 408 and is disconnected (a per-read timeout alone lets a client
    that sends one byte every few seconds hold a connection forever).
    max_connections: open HTTP connections in total (more get an immediate 503).
    max_connections_per_client: open connections from one client address (more get an immediate 503; 0 = no
    per-address cap). Behind a reverse proxy or tunnel every client has the proxy's address: raise it or use 0.
    shared_secret: value required in the X-Bridge-Secret header or as the last path segment (POST /skill/<secret>,
    /relay/<secret>); "" = off, but --send on an HTTP transport refuses to start without one
    (`python -m chatbot.ops bridge-secret` writes a random one into .env). Printable ASCII without spaces only.
    allowed_rooms: room names/ids allowed ([] = all). rate_limit_per_minute: replies per room per minute (0 = off).
    dry_reply: text answered in --dry mode ("" = empty template). bot_names: sender names treated as the bot itself.
    memory_turns: recent turns kept per room as context. memory_max_turns: turns kept on disk before archiving.
    memory_archive: move trimmed turns to data/bridge/archive/ (false = drop them).
    dedupe_window_s: a message without id or timestamp repeated (same room, sender, text) within this many seconds
    is a re-delivery, not answered again (0 = only ids/timestamps deduplicate).
    callback_hosts: hosts a Kakao callbackUrl may point at: exact names, "*.example.com" (any subdomain) or "*"
    (any host). Default: Kakao's callback hosts ("*.kakao.com"; Kakao i Open Builder sends
    https://bot-api.kakao.com/... URLs).
    callback_allow_private: also POST callbacks to loopback, private, link-local, multicast and reserved addresses
    (checked after DNS resolution; false = refused). Only for testing against a local server.
    callback_timeout_s: total time for one callback POST (DNS, connect, send, response), at most 60 s (a callback
    URL is valid for one minute): a server that answers byte by byte cannot hold a worker longer.
    jsonl_path: jsonl transport input: "" = standard input, else a file followed like `tail -f`.
    log_text: log message text (debug only).
    """

    transport: Literal["kakao-skill", "relay", "jsonl"] = "kakao-skill"
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_range(0, 65535))
    workers: int = field(default=2, metadata=_range(1, 64))
    queue_limit: int = field(default=16, metadata=_range(0))
    callback_after_s: float = field(default=3.5, metadata=_range(0))
    request_timeout_s: float = field(default=4.5, metadata=_range(0, lo_open=True))
    max_body_bytes: int = field(default=65536, metadata=_range(256))
    request_read_timeout_s: float = field(default=5.0, metadata=_range(0, 120, lo_open=True))
    max_connections: int = field(default=128, metadata=_range(1, 4096))
    max_connections_per_client: int = field(default=32, metadata=_range(0, 4096))
    max_reply_chars: int = field(default=1000, metadata=_range(1))
    shared_secret: str = field(default="", metadata={"check": _printable_ascii})
    allowed_rooms: list[str] = field(default_factory=list)
    rate_limit_per_minute: int = field(default=0, metadata=_range(0))
    dry_reply: str = ""
    bot_names: list[str] = field(default_factory=list)
    memory_turns: int = field(default=12, metadata=_range(0))
    memory_max_turns: int = field(default=500, metadata=_range(1))
    memory_archive: bool = True
    dedupe_window_s: float = field(default=5.0, metadata=_range(0))
    callback_hosts: list[str] = field(default_factory=lambda: ["*.kakao.com"], metadata={"check": _host_patterns})
    callback_allow_private: bool = False
    callback_timeout_s: float = field(default=10.0, metadata=_range(0, 60, lo_open=True))
    jsonl_path: str = ""
    log_text: bool = False


@dataclass
class ServeConfig:
    """OpenAI-compatible API and web chat page (``python -m chatbot.ops serve``; chatbot/serve/).
    host/port: listen address (``--host``/``--port`` override them); anything but a loopback host needs an API key
    (CHATBOT_API_KEY_HASH in .env, made by ``python -m chatbot.ops api-key``).
    workers: generation threads. queue_limit: requests waiting for a worker before 503 + Retry-After.
    max_connections: open connections before 503. request_timeout_s: a reply is cut off (finish_reason "length")
    after this many seconds, waiting in the queue included. header_timeout_s / body_timeout_s: a client must send
    its request headers / body within this many seconds (slow clients cannot hold a connection).
    keepalive_timeout_s: idle keep-alive connections are closed after this. max_body_bytes: larger bodies get 413.
    shutdown_timeout_s: on Ctrl+C / SIGTERM in-flight replies get this long to finish.
    memory: keep each conversation's context on the server in <paths.bridge_memory>/serve/ (like the bridge's rooms)
    for requests with an X-Conversation-Id header, so a client sends only the new message (false = stateless: the
    client sends the whole conversation, and the web page keeps it in the browser's localStorage).
    memory_turns: turns of a stored conversation used as context. memory_max_turns: turns kept before archiving.
    """

    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata=_range(0, 65535))
    workers: int = field(default=2, metadata=_range(1, 64))
    queue_limit: int = field(default=16, metadata=_range(0))
    max_connections: int = field(default=64, metadata=_range(1))
    request_timeout_s: float = field(default=120.0, metadata=_range(0, lo_open=True))
    header_timeout_s: float = field(default=10.0, metadata=_range(0, lo_open=True))
    body_timeout_s: float = field(default=10.0, metadata=_range(0, lo_open=True))
    keepalive_timeout_s: float = field(default=5.0, metadata=_range(0, lo_open=True))
    max_body_bytes: int = field(default=262144, metadata=_range(256))
    shutdown_timeout_s: float = field(default=30.0, metadata=_range(0))
    memory: bool = False
    memory_turns: int = field(default=12, metadata=_range(0))
    memory_max_turns: int = field(default=500, metadata=_range(1))


@dataclass
class GenConfig:
    """model_preference: sources tried in order: artifact paths (relative to the project root) or the words
    "best"/"latest" for checkpoints/<train.run_name>/{best,latest}.pt.
    bot_speaker / user_speaker: pseudonyms ("S1", …) the bot and the user speak as; "auto" = the trained persona
    (or the most active speaker) for the bot, the next most active speaker for the user.
    max_context_tokens: history longer than this is cut from the left at turn boundaries (0 = model block size).
    max_chars: replies are trimmed to this many characters.
    device: auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps.
    decode_threads: torch CPU threads while decoding one token at a time (the prompt still uses all of torch's
    threads). 1 is fastest for small models and stays fast when the CPU is busy (e.g. training alongside);
    0 = torch's default.
    reply_policy: when the bot speaks in a room (bridge relay/jsonl, chat, reply): always = every message;
    addressed = only when a message names the bot (``bridge.bot_names``, also as an @mention) or the room has
    one other person; model = when addressed, or when the model's probability that the bot's speaker comes next
    (read from the same forward pass that starts the reply) is at least ``speak_threshold``. kakao-skill
    always answers (a channel chat is a direct message to the bot).
    speak_threshold: the probability cut for reply_policy model (0 < t ≤ 1; chosen with bench/bench_speak.py).
    """

    model_preference: list[str] = field(
        default_factory=lambda: ["artifacts/model_latest.enc", "artifacts/model_latest.pt", "best", "latest"]
    )
    bot_speaker: str = "auto"
    user_speaker: str = "auto"
    max_context_tokens: int = field(default=0, metadata=_range(0))
    max_chars: int = field(default=300, metadata=_range(1))
    device: str = "auto"
    decode_threads: int = field(default=1, metadata=_range(0))
    reply_policy: Literal["always", "addressed", "model"] = "always"
    speak_threshold: float = field(default=0.5, metadata=_range(0, 1, lo_open=True))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


# ---------------------------------------------------------------------------------------------------- loading
FILES = {"paths": ("paths.yaml", PathsConfig), "train": ("train.yaml", TrainConfig), "gen": ("gen.yaml", GenConfig)}


@dataclass
class Config:
    """Everything a command needs: the three files, the project root, and the environment (.env merged)."""

    paths: PathsConfig
    train: TrainConfig
    gen: GenConfig
    root: Path
    config_dir: Path
    env: dict[str, str]

    def path(self, rel: str | os.PathLike) -> Path:
        """A configured path resolved against the project root."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def run_dir(self) -> Path:
        return self.path(self.paths.checkpoints) / self.train.run_name

    @property
    def processed_dir(self) -> Path:
        return self.path(self.paths.processed.dir)

    def secret(self, name: str) -> str | None:
        """A variable from the environment or .env ("" counts as unset)."""
        value = os.environ.get(name) or self.env.get(name)
        return value or None


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


def _resolve_vars(value: str, env: dict[str, str], where: str) -> str:
    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name, env.get(name))
        if got is None:
            if default is None:
                raise ConfigError(f"{where}: ${{{name}}} is not set in the environment or .env "
                                  f"(set it, or write ${{{name}:default}})")
            return default
        return got

    return _VAR.sub(sub, value)


def _shown(value: Any, source: str | None) -> str:
    """``value`` for an error message, or — when it came from a ``${VAR}`` substitution, which may be a secret
    (a key, a password, a bridge secret in the wrong place) — only where it came from."""
    if source is None:
        return repr(value)
    names = ", ".join(f"${{{m.group(1)}}}" for m in _VAR.finditer(source)) or "a ${VAR} substitution"
    return f"the value of {names} (not shown)"


def _substitution(value: Any) -> str | None:
    """The raw text when ``value`` is a string that uses ``${VAR}``, else None."""
    return value if isinstance(value, str) and _VAR.search(value) else None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str, env: dict[str, str], source: str | None = None) -> Any:
    """``value`` checked and converted to ``tp``. ``source``: the raw ``${VAR}`` text the value came from (then
    error messages name the variable and never print the value)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {type(value).__name__}")
        return _build(tp, value, where, env)
    source = source or _substitution(value)
    if isinstance(value, str) and tp is not str and "${" in value:
        resolved = _resolve_vars(value, env, where)
        try:
            value = yaml.safe_load(resolved)
        except yaml.YAMLError:
            value = resolved  # not YAML: the type check below reports it (without the value)
    if origin is Literal:
        if isinstance(value, str):
            value = _resolve_vars(value, env, where)
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {_shown(value, source)} is not allowed; expected {_type_name(tp)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]", env, source) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where, env, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_shown(value, source)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {_shown(value, source)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_shown(value, source)}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {_shown(value, source)}")
        return _resolve_vars(str(value), env, where)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - schema bug


def _build(cls: type, data: dict, where: str, env: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if not where.endswith(":") else f"{where} {key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
            raise ConfigError(f"{dotted}: unknown key{hint}")
        converted = _convert(value, hints[key], dotted, env)
        rng = fields[key].metadata.get("range")
        if rng is not None:
            lo, hi, lo_open = rng
            if (lo is not None and (converted < lo or (lo_open and converted == lo))) or (
                hi is not None and converted > hi
            ):
                bound = f"{'>' if lo_open else '>='} {lo}" if hi is None else f"between {lo} and {hi}"
                raise ConfigError(f"{dotted}: {_shown(converted, _substitution(value))} is out of range "
                                  f"(must be {bound})")
        check = fields[key].metadata.get("check")
        problem = check(converted) if check is not None else None
        if problem:
            raise ConfigError(f"{dotted}: {problem}")
        kwargs[key] = converted
    return cls(**kwargs)


def load_env_file(root: Path) -> dict[str, str]:
    """Variables from ``<root>/.env`` (not exported to os.environ, so secrets stay scoped to this process's config)."""
    path = root / ".env"
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _load_file(path: Path, cls: type, env: dict[str, str]) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (copy it from the project's configs/ folder)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path.name}{at}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping of keys at the top level")
    return _build(cls, data, f"{path.name}:", env)


def _check_train(tc: TrainConfig) -> None:
    """Rules that span several keys of train.yaml."""
    ad = tc.adapter
    if ad.quantize == "4bit" and ad.kind != "lora":
        raise ConfigError("train.yaml: adapter.quantize: 4bit works with adapter.kind: lora only (QLoRA); "
                          "set adapter.quantize: none for a full fine-tune")
    if tc.model.base and ad.kind == "lora" and not ad.target_modules:
        raise ConfigError("train.yaml: adapter.target_modules: empty; list the layers that get LoRA adapters "
                          "(e.g. [q_proj, k_proj, v_proj, o_proj])")


def load_config(config_dir: str | os.PathLike = "configs") -> Config:
    """Load and validate all three files. Raises ConfigError with one line naming the file and key."""
    config_dir = Path(config_dir).expanduser().resolve()
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir}: config folder not found (run from the project folder or pass --config-dir)")
    root = config_dir.parent
    env = load_env_file(root)
    loaded = {name: _load_file(config_dir / fname, cls, env) for name, (fname, cls) in FILES.items()}
    _check_train(loaded["train"])
    return Config(root=root, config_dir=config_dir, env=env, **loaded)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain Python values (for checkpoints, stats and hashes)."""
    return dataclasses.asdict(obj)


def config_hash(obj: Any) -> str:
    """Stable short hash of a config section (decides whether outputs are stale)."""
    blob = json.dumps(to_dict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
