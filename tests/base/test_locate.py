"""chatbot/base/locate.py: the base block a run records is checked before anything looks for the base."""

from __future__ import annotations

import pytest

from chatbot.base.locate import check_base_block
from chatbot.errors import ChatbotError

GOOD = {"id": "someone/tiny", "revision": "", "weight_hash": "ab" * 32, "tokenizer_hash": "cd" * 32,
        "adapter": {"kind": "lora", "r": 8, "alpha": 16}}


def test_a_complete_block_passes_unchanged() -> None:
    assert check_base_block(GOOD, "best.pt") is GOOD
    full = {**GOOD, "adapter": {"kind": "full"}}  # trains every weight: no r/alpha needed
    assert check_base_block(full, "best.pt") is full


@pytest.mark.parametrize("block, match", [
    (None, "incomplete base block"), ([], "incomplete base block"), ({**GOOD, "id": ""}, "incomplete base block"),
    ({**GOOD, "weight_hash": None}, "incomplete base block"), ({**GOOD, "adapter": {"kind": "prefix"}}, "incomplete"),
    ({**GOOD, "adapter": {"kind": "lora", "r": 0, "alpha": 16}}, "records no LoRA r/alpha"),
    ({**GOOD, "adapter": {"kind": "lora", "r": True, "alpha": 16}}, "records no LoRA r/alpha"),
])
def test_every_gap_is_one_line_naming_the_file(block, match) -> None:
    with pytest.raises(ChatbotError, match=match) as err:
        check_base_block(block, "checkpoints/run/best.pt")
    assert "\n" not in str(err.value) and str(err.value).startswith("checkpoints/run/best.pt")
