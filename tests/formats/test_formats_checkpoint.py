"""chatbot/formats/checkpoint.py: the checkpoint file round-trips, keeps the trainer's bytes, and refuses bad files
in one line."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
import torch

from chatbot.errors import ChatbotError
from chatbot.formats import artifact
from chatbot.formats import checkpoint as ckfmt
from chatbot.model import ModelArgs, Transformer


@functools.lru_cache(maxsize=1)
def _trained() -> tuple[Transformer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=64, n_layer=1, n_head=2, n_embd=16, block_size=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 64, (1, 8))).sum().backward()
    opt.step()
    return model, opt


def _trainer_dict(base: dict | None = None) -> dict:
    """A checkpoint dict in the shape (and key order) the trainer wrote before formats/checkpoint.py existed."""
    model, opt = _trained()
    return {
        "format": ckfmt.FORMAT, "model": model.state_dict(), "model_args": model.args.to_dict(),
        "optimizer": opt.state_dict(), "step": 12, "best_val_loss": 2.5, "val_loss": 2.75, "train_loss": 2.25,
        "tokenizer_hash": "ab" * 32, "vocab_size": 64, "rng": {"torch": torch.manual_seed(1).get_state()},
        "sampler": {"epoch": 1}, "train_config": {"optim": {"lr": 1e-3}}, "world_size": 1, "tokens_seen": 96,
        "scaler": None, "lr": 1e-3, "created": 1700000000.0, **({"base": base} if base is not None else {}),
    }


def _saved_bytes(obj: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("base", [None, {"id": "tiny/base", "weight_hash": "cd" * 32, "adapter": {"kind": "lora"}}])
def test_write_keeps_the_trainers_bytes_and_reads_back(tmp_path: Path, base) -> None:
    old = _trainer_dict(base)
    path = tmp_path / "run" / "latest.pt"
    ckfmt.write(path, ckfmt.Checkpoint.from_dict(old))
    assert path.read_bytes() == _saved_bytes(old)  # same keys, same order, same values: an old reader sees no change
    back = ckfmt.read(path, complete=True)
    assert back.step == 12 and back.val_loss == 2.75 and back.tokens_seen == 96 and back.is_base == (base is not None)
    assert back.base == base and back.extra == {}
    assert all(torch.equal(back.model[k], v) for k, v in old["model"].items())
    assert list(back.to_dict()) == list(old)


def test_unknown_keys_survive_and_scalar_tensors_become_numbers(tmp_path: Path) -> None:
    old = {**_trainer_dict(), "step": torch.tensor(7), "val_loss": torch.tensor(1.5), "future_key": [1, 2]}
    path = tmp_path / "best.pt"
    torch.save(old, path)
    ck = ckfmt.read(path, mmap=True)
    assert ck.step == 7 and isinstance(ck.step, int) and ck.val_loss == 1.5 and isinstance(ck.val_loss, float)
    assert ck.extra == {"future_key": [1, 2]} and ck.to_dict()["future_key"] == [1, 2]


def test_a_file_from_before_the_format_key_reads_for_weights_but_not_for_resume(tmp_path: Path) -> None:
    old = {k: v for k, v in _trainer_dict().items() if k != "format"}
    path = tmp_path / "best.pt"
    torch.save(old, path)
    assert ckfmt.read(path).step == 12
    with pytest.raises(ChatbotError, match="expected 'chatbot-ckpt-1'"):
        ckfmt.read(path, complete=True)


class _Payload:  # would run code on a torch.load without weights_only
    def __reduce__(self):
        return (print, ("side effect",))


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    full = _trainer_dict()
    cases = {
        "missing": (None, "not found"),
        "garbage": (b"not a torch file", "not a readable checkpoint"),
        "truncated": (_saved_bytes(full)[:300], "not a readable checkpoint"),
        "code": ({**full, "x": _Payload()}, "not a readable checkpoint"),
        "not-a-dict": ([1, 2, 3], "not a chatbot checkpoint"),
        "no-model": ({k: v for k, v in full.items() if k != "model"}, "not a chatbot checkpoint"),
        "other-format": ({**full, "format": artifact.FORMAT}, f"has format '{artifact.FORMAT}'"),
        "no-sampler": ({k: v for k, v in full.items() if k != "sampler"}, "lacks 'sampler'"),
    }
    out = {}
    for name, (content, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        out[name] = (path, match)
    return out


def test_every_refusal_is_one_line_with_the_remedy(tmp_path: Path, capsys) -> None:
    for name, (path, match) in _bad_files(tmp_path).items():
        with pytest.raises(ChatbotError, match=match) as err:
            ckfmt.read(path, label=f"runs/{name}.pt", remedy="do the fix", complete=True)
        message = str(err.value)
        assert "\n" not in message and message.endswith("do the fix") and f"runs/{name}.pt" in message, name
    assert "side effect" not in capsys.readouterr().out


def test_checkpoints_written_by_the_previous_version_still_read(tmp_path: Path) -> None:
    run = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_v1" / "workspace" / "checkpoints" / "legacy"
    for path in (run / "latest.pt", run / "best.pt", run / "snapshots" / "step_00000040.pt"):
        ck = ckfmt.read(path, complete=True)
        raw = torch.load(path, weights_only=True)
        assert ck.step == 40 and not ck.is_base and ck.extra == {} and list(ck.to_dict()) == list(raw)
        ckfmt.write(tmp_path / "again.pt", ck)
        again = torch.load(tmp_path / "again.pt", weights_only=True)  # what an older reader sees
        assert list(again) == list(raw) and again["optimizer"]["param_groups"] == raw["optimizer"]["param_groups"]
        assert all(torch.equal(again["model"][k], v) for k, v in raw["model"].items())
