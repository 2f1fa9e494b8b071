"""What the API's routes need, built once by :func:`chatbot.serve.build_state` (tests build it over a fake
responder)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SamplingConfig, ServeConfig
from .auth import ApiKeyCheck
from .engine import Engine
from .memory import Conversations


@dataclass
class ServeState:
    """What the routes need. ``auth`` None = no API key (only allowed on loopback, see run_serve)."""

    engine: Engine
    settings: ServeConfig
    base_sampling: SamplingConfig
    model_id: str
    info: dict  # extra fields of the /v1/models entry (bot pseudonym, step, ...)
    auth: ApiKeyCheck | None = None
    conversations: Conversations | None = None
