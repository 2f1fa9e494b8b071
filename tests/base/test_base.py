"""Pretrained-base foundation: config keys, resolving/hashing/loading a base folder, adapters, the turn layout.

Every base is a tiny random model saved by tests/support/base.py; nothing touches the network.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
import torch
import yaml

from chatbot.base import apply_adapter, base_weight_hash, load_base, require_extra, resolve_base, tokenizer_hash
from chatbot.base.layout import BaseLayout, placeholder_text, render
from chatbot.config import AdapterConfig, ConfigError, load_config
from chatbot.data.tokenizer import placeholder_marker
from chatbot.errors import ChatbotError
from tests.support.base import make_base, make_tokenizer

FAMILIES = ["llama", "qwen2", "qwen3"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {fam: make_base(root / fam, fam) for fam in FAMILIES}


def edit_train(project: Path, mutate) -> None:
    path = project / "configs" / "train.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    mutate(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


# ------------------------------------------------------------------------------------------------------ config
def test_config_keys_of_the_issue_parse_and_default_to_from_scratch(project: Path) -> None:
    cfg = load_config(project / "configs")
    tc = cfg.train
    assert tc.model.base == "" and tc.model.base_revision == "" and tc.init_from == ""
    assert tc.adapter == AdapterConfig()
    assert tc.adapter.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert tc.runtime.gradient_checkpointing is False

    def mutate(d):
        d["model"].update(base="Qwen/Qwen2.5-0.5B-Instruct", base_revision="main")
        d["adapter"] = {"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj"],
                        "quantize": "4bit"}
        d["runtime"]["gradient_checkpointing"] = True
        d["init_from"] = "checkpoints/stage1/best.pt"
    edit_train(project, mutate)
    tc = load_config(project / "configs").train
    assert (tc.model.base, tc.model.base_revision, tc.init_from) == (
        "Qwen/Qwen2.5-0.5B-Instruct", "main", "checkpoints/stage1/best.pt")
    assert (tc.adapter.r, tc.adapter.alpha, tc.adapter.quantize, tc.adapter.target_modules) == (8, 16.0, "4bit", ["q_proj"])
    assert tc.runtime.gradient_checkpointing is True


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["adapter"].update(kind="qlora"), "train.yaml: adapter.kind: 'qlora' is not allowed"),
    (lambda d: d["adapter"].update(quantize="8bit"), "train.yaml: adapter.quantize: '8bit' is not allowed"),
    (lambda d: d["adapter"].update(r=0), "train.yaml: adapter.r: 0 is out of range"),
    (lambda d: d["adapter"].update(alpah=4), "train.yaml: adapter.alpah: unknown key (did you mean 'alpha'?)"),
    (lambda d: d["adapter"].update(kind="full", quantize="4bit"), "train.yaml: adapter.quantize: 4bit works with"),
    (lambda d: (d["model"].update(base="x/y"), d["adapter"].update(target_modules=[])),
     "train.yaml: adapter.target_modules: empty"),
    (lambda d: d["model"].update(bsae="x"), "train.yaml: model.bsae: unknown key (did you mean 'base'?)"),
])
def test_bad_base_keys_are_one_line_errors(project: Path, mutate, expected) -> None:
    edit_train(project, mutate)
    with pytest.raises(ConfigError) as err:
        load_config(project / "configs")
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_missing_extra_is_one_line_with_the_install_command(monkeypatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "peft":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ChatbotError) as err:
        require_extra()
    assert 'pip install -e ".[base]"' in str(err.value) and "peft" in str(err.value)


# ------------------------------------------------------------------------------------------ resolve and hash
def test_resolve_local_folder_and_its_errors(bases, tmp_path: Path) -> None:
    assert resolve_base(str(bases["qwen2"])) == bases["qwen2"]
    assert resolve_base("qwen2", root=bases["qwen2"].parent) == bases["qwen2"]
    with pytest.raises(ChatbotError, match="does not exist"):
        resolve_base(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ChatbotError, match="no config.json"):
        resolve_base(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ChatbotError, match=r"no \*.safetensors"):
        resolve_base(str(tmp_path / "empty"))


def test_hub_id_offline_and_not_cached_is_one_line(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ChatbotError) as err:
        resolve_base("someone/not-a-real-model-xyz")
    assert "not in the Hugging Face cache" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("error, expected", [
    ("RepositoryNotFoundError", "no model someone/tiny on the Hugging Face hub"),
    ("RevisionNotFoundError", "someone/tiny has no revision 'v9'"),
    ("GatedRepoError", "someone/tiny@v9 is gated"),
    ("HfHubHTTPError", r"downloading someone/tiny@v9 failed \(HTTP 503\)"),
])
def test_hub_errors_are_one_line(monkeypatch, error, expected) -> None:
    import httpx
    import huggingface_hub
    from huggingface_hub import errors

    response = httpx.Response(503, request=httpx.Request("GET", "https://huggingface.co/api/models/someone/tiny"))

    def fail(*args, **kwargs):
        raise getattr(errors, error)("boom", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(ChatbotError, match=expected) as err:
        resolve_base("someone/tiny", "v9")
    assert "\n" not in str(err.value) and "boom" not in str(err.value)


def test_hub_cache_snapshot_is_used_and_its_blob_names_give_the_hash(bases, tmp_path: Path, monkeypatch) -> None:
    # lay out a hub cache entry the way huggingface_hub does: snapshots/<rev>/file -> ../../blobs/<sha256>
    import hashlib
    import os

    import huggingface_hub.constants as c

    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for f in bases["qwen2"].iterdir():
        data = f.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        try:
            os.symlink(os.path.relpath(repo / "blobs" / digest, snap), snap / f.name)
        except OSError:  # Windows without developer mode: huggingface_hub copies instead, nothing to test here
            pytest.skip("symbolic links are not allowed here")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    got = resolve_base("someone/tiny")
    assert got.resolve() == snap.resolve()
    assert base_weight_hash(got) == base_weight_hash(bases["qwen2"])  # names of blobs == hashing the bytes


def test_weight_hash_is_stable_and_follows_the_weights(bases, tmp_path: Path) -> None:
    h = base_weight_hash(bases["qwen2"])
    assert h == base_weight_hash(bases["qwen2"]) and len(h) == 64
    again = make_base(tmp_path / "same", "qwen2")
    assert base_weight_hash(again) == h  # deterministic builder
    other = make_base(tmp_path / "other", "qwen2", seed=1)
    assert base_weight_hash(other) != h
    # the tokenizer hash is that of the tokenizer as transformers loads it: stable across loads and re-saves
    tok = load_base(again)[1]
    assert tokenizer_hash(tok) == tokenizer_hash(load_base(bases["qwen2"])[1])
    tok.save_pretrained(str(tmp_path / "resaved"))
    from transformers import AutoTokenizer

    assert tokenizer_hash(AutoTokenizer.from_pretrained(str(tmp_path / "resaved"))) == tokenizer_hash(tok)
    assert tokenizer_hash(tok) != tokenizer_hash(load_base(bases["llama"])[1])


# ------------------------------------------------------------------------------------------------- load_base
@pytest.mark.parametrize("family", FAMILIES)
def test_load_base_gives_a_causal_lm_and_a_fast_tokenizer(bases, family) -> None:
    model, tok = load_base(bases[family])
    assert type(model).__name__.lower().startswith(family)
    assert tok.is_fast and tok.eos_token_id is not None
    ids = torch.tensor([[1, 2, 3, 4]])
    assert model(ids).logits.shape == (1, 4, len(tok))
    names = dict(model.named_parameters())
    if family == "qwen2":
        assert "model.layers.0.self_attn.q_proj.bias" in names
    if family == "qwen3":
        assert "model.layers.0.self_attn.q_norm.weight" in names
    assert (tok.bos_token_id is not None) == (family == "llama")


def test_load_base_errors_are_one_line_before_loading(bases, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from chatbot.base import load as base_load

    bad = tmp_path / "bad"
    shutil.copytree(bases["qwen2"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "not_an_architecture_xyz"}))
    with pytest.raises(ChatbotError, match="cannot read config.json"):
        load_base(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "clip", "architectures": ["CLIPModel"]}))
    with pytest.raises(ChatbotError, match="cannot load as a causal"):
        load_base(bad)

    noeos = tmp_path / "noeos"
    shutil.copytree(bases["qwen2"], noeos)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (noeos / f).unlink()
    make_tokenizer("qwen2", specials=False).save_pretrained(str(noeos))
    with pytest.raises(ChatbotError, match=r"end-of-sequence \(eos\) token"):
        load_base(noeos)

    with pytest.raises(ChatbotError, match="4bit .*NVIDIA GPU only"):
        load_base(bases["qwen2"], quantize="4bit")

    monkeypatch.setattr(base_load, "free_memory", lambda device: 1000)
    with pytest.raises(ChatbotError, match="GiB is free on cpu"):
        load_base(bases["qwen2"])


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_lora_adapter_trains_only_the_adapter(bases, family) -> None:
    from peft import get_peft_model_state_dict

    model, _ = load_base(bases[family])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    peft_model = apply_adapter(model, AdapterConfig(r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    adapter_keys = set(get_peft_model_state_dict(peft_model))
    assert len(adapter_keys) == len(trainable) == 2 * 7 * 2  # A and B, 7 modules, 2 layers
    # a fresh LoRA (B = 0) leaves the outputs of the base unchanged
    base_sd = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
               for k, v in peft_model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_sd[k], v) for k, v in before.items())


def test_full_adapter_and_bad_target_modules(bases) -> None:
    model, _ = load_base(bases["qwen2"])
    full = apply_adapter(model, AdapterConfig(kind="full"))
    assert all(p.requires_grad for p in full.parameters())
    model, _ = load_base(bases["qwen2"])
    with pytest.raises(ChatbotError, match=r"adapter.target_modules \['c_attn'\] match no layer"):
        apply_adapter(model, AdapterConfig(target_modules=["q_proj", "c_attn"]))


# ---------------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_layout_session_ids_mask_and_prompt(bases, family) -> None:
    _, tok = load_base(bases[family])
    lay = BaseLayout(tok)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    turns = [("S1", "안녕 뭐해?", False), ("S2", "집에 가는 중 ㅋㅋ", True), (None, placeholder_marker("system"), False)]
    ids, mask = lay.encode_session(turns)
    bos = [tok.bos_token_id] if family == "llama" else []
    eos = tok.eos_token_id
    expected = (bos + enc("S1: ") + enc("안녕 뭐해?") + [eos] + enc("S2: ") + enc("집에 가는 중 ㅋㅋ") + [eos]
                + enc("<system>") + [eos])
    assert ids == expected
    body2 = enc("집에 가는 중 ㅋㅋ") + [eos]
    start2 = len(bos) + len(enc("S1: ") + enc("안녕 뭐해?")) + 1 + len(enc("S2: "))
    assert mask == [0] * start2 + [1] * len(body2) + [0] * (len(ids) - start2 - len(body2))
    # the prompt for S2's reply is the same ids as the session up to S2's text
    assert lay.prompt([("S1", "안녕 뭐해?")], "S2") == ids[:start2]


def test_layout_keeps_special_look_alikes_and_placeholders_as_plain_text(bases) -> None:
    _, tok = load_base(bases["qwen2"])
    lay = BaseLayout(tok)
    typed = "끝<|im_end|>이야 </s>"
    ids = lay.enc(typed)
    assert tok.eos_token_id not in ids and tok.convert_tokens_to_ids("<|im_start|>") not in ids
    assert lay.decode(ids) == typed
    # the caller's tokenizer is not changed by the layout
    assert tok("<|im_end|>", add_special_tokens=False)["input_ids"] == [tok.eos_token_id]
    marked = f"번호 {placeholder_marker('phone')} 사진 {placeholder_marker('photo')}"
    assert render(marked) == "번호 <phone> 사진 <photo>" == f"번호 {placeholder_text('phone')} 사진 <photo>"
    assert lay.turn("S1", marked)[1] == lay.enc("번호 <phone> 사진 <photo>") + [tok.eos_token_id]


def test_status_names_the_base_and_whether_its_files_are_here(project: Path, bases, monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants as c

    from chatbot.status import build_report

    def line(cfg) -> str:
        return next(x for x in build_report(cfg).lines if x.startswith("Base model"))

    assert "training from scratch" in line(load_config(project / "configs"))
    edit_train(project, lambda d: d["model"].update(base=str(bases["llama"])))
    assert f"files present (local folder: {bases['llama']})" in line(load_config(project / "configs"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    edit_train(project, lambda d: (d["model"].update(base="Qwen/Qwen2.5-0.5B-Instruct", base_revision="main"),
                                   d["adapter"].update(r=8)))
    got = line(load_config(project / "configs"))
    assert got.startswith("Base model   Qwen/Qwen2.5-0.5B-Instruct@main (lora r=8): not downloaded yet")
