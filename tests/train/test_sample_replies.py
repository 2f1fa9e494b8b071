"""The trainer's sample replies go through the Responder that ``chat`` uses: chat's bot speaker (not simply the most
active one), the message cleaned → PII-masked → encoded, greedy decoding through the one cached decode path."""

from __future__ import annotations

from pathlib import Path

import torch

from chatbot.config import GenConfig, PiiConfig
from chatbot.infer.loading import Bundle
from chatbot.infer.prompt import TokenIds
from chatbot.infer.responder import Responder
from chatbot.train.report import sample_replies

from tests.support.gen import BigramModel, byte_token, tiny_tokenizer

# the exporter (S1) is the most active speaker: chat answers as S2, the most active speaker who is not the exporter
PERSONA = {"target": "room", "self": "S1", "speakers": {"S1": 40, "S2": 30}}


class FedModel(BigramModel):
    """A BigramModel that records the ids each decode step was fed."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.fed: list[list[int]] = []

    def decode(self, idx: torch.Tensor, start: int, cache: None) -> torch.Tensor:
        self.fed.append(idx.tolist())
        return super().decode(idx, start, cache)


def test_samples_speak_as_chats_bot_from_the_masked_prompt() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    a, b = byte_token(tok, b"a"), byte_token(tok, b"b")
    # whichever speaker's turn the prompt opens answers with its own letter, then ends the turn
    model = FedModel({ids.speakers["S2"]: a, ids.speakers["S1"]: b, a: ids.eot, b: ids.eot})
    model.train()
    message = "전화 010-1234-5678 로 해"
    gen = GenConfig()

    samples = sample_replies(model, tok, PERSONA, [message], gen, PiiConfig())

    assert samples == [(message, "a")]  # S2 speaks, as in chat (the most active speaker S1 would say "b")
    assert model.training  # the trainer's mode is restored
    prompt = [t for step in model.fed[:2] for t in step]  # the prefill, then the bot's speaker token
    chat = Responder(Bundle(model, tok, PERSONA, Path("x.pt"), 1), gen, PiiConfig())
    assert prompt == chat.prompt_ids([("user", message)])
    assert tok.token_to_id("<|phone|>") in prompt  # the number reached the model masked, as in training
    assert prompt[-1] == ids.speakers["S2"] and chat.bot_speaker == "S2"
