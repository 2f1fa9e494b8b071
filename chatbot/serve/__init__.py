"""``python -m chatbot.ops serve``: the bot behind an OpenAI-compatible HTTP API and a web chat page.

Why: the OpenAI chat-completions API is what local-model servers (llama.cpp, vLLM, Ollama, LM Studio) speak, so
Open WebUI, messenger gateways, IDE plugins and every ``openai`` client library can use the bot without another
adapter; and the page at ``/`` lets anyone chat in a browser, phone included.

Modules (imports only downwards): wire.py (the OpenAI request/response format, no server), auth.py (API keys),
engine.py (the bounded worker pool around :class:`chatbot.infer.responder.Responder`, streaming and cancellation; the pool
is the bridge's, chatbot/bridge/pool.py), memory.py (``serve.memory: true``: conversations on the server, the bridge's
memory store), state.py (what the routes share), completion.py (one chat completion: admission, waiting, the JSON
or SSE answer), reqlog.py (one log line per request), app.py (the FastAPI routes), server.py (uvicorn: limits,
deadlines, graceful shutdown), static/index.html (the page: one file, no build step, nothing loaded from
elsewhere). Process-level helpers shared with the bridge (loopback check, folder lock, stderr logging):
chatbot/bridge/runtime.py. Settings: gen.yaml ``serve:``
(chatbot.config.ServeConfig).

Start-up order: the API-key rule (no key → refuse, unless ``--no-auth`` on a loopback address), the owner password
gate (as every inference verb), the port is bound, the model is loaded, then requests are served.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..bridge.runtime import folder_lock, is_loopback, stderr_logging
from ..config import Config
from ..errors import ChatbotError

if TYPE_CHECKING:  # the FastAPI side is imported only when serving (an optional extra)
    from .auth import ApiKeyCheck
    from .state import ServeState

log = logging.getLogger("chatbot.serve")
MEMORY_SUBDIR = "serve"  # <paths.bridge_memory>/serve/: its own lock, next to (not inside) the bridge's rooms


def api_key_check(cfg: Config, host: str, no_auth: bool) -> ApiKeyCheck | None:
    """The key checker, or None for ``--no-auth``; refuses (ChatbotError) to run open on a non-loopback address."""
    from .auth import ENV_NAME, ApiKeyCheck

    if no_auth:
        if not is_loopback(host):
            raise ChatbotError(f"--no-auth is only allowed on this machine (--host 127.0.0.1), not on {host}; "
                               "make an API key with `python -m chatbot.ops api-key >> .env`")
        return None
    line = cfg.secret(ENV_NAME)
    if not line:
        raise ChatbotError(f"no API key configured: run `python -m chatbot.ops api-key >> .env` (it shows the key "
                           f"once and stores only its hash as {ENV_NAME}), or start with --no-auth to serve "
                           "only this machine (127.0.0.1) without a key")
    return ApiKeyCheck(line)


def model_id(cfg: Config, bundle: Any) -> str:
    """The id clients see in /v1/models: the artifact's name, or ``<run_name>-best`` / ``-latest`` for a
    checkpoint."""
    stem = Path(bundle.source).stem
    return f"{cfg.train.run_name}-{stem}" if getattr(bundle, "kind", "") == "checkpoint" else stem


def build_state(cfg: Config, responder: Any, auth: ApiKeyCheck | None, *, model: str, info: dict) -> ServeState:
    """The app's state over a loaded responder (tests pass a fake one)."""
    from .engine import Engine
    from .state import ServeState
    from .memory import Conversations

    sc = cfg.gen.serve
    conversations = None
    if sc.memory:
        conversations = Conversations(cfg.path(cfg.paths.bridge_memory) / MEMORY_SUBDIR, turns=sc.memory_turns,
                                      max_turns=sc.memory_max_turns)
    engine = Engine(responder, sc.workers, sc.queue_limit)
    info = {**info, "memory": sc.memory}
    return ServeState(engine, sc, cfg.gen.sampling, model, info, auth, conversations)


def run_serve(cfg: Config, *, host: str | None = None, port: int | None = None, no_auth: bool = False) -> None:
    """The ``serve`` verb: serve until Ctrl+C / SIGTERM, then finish in-flight replies."""
    sc = cfg.gen.serve
    host = host or sc.host
    port = sc.port if port is None else port
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ChatbotError('serve needs FastAPI and uvicorn: pip install -e ".[serve]"') from None
    auth = api_key_check(cfg, host, no_auth)
    from ..security import require_password

    require_password(cfg)
    from .server import bind, make_server

    sock = bind(host, port)
    with stderr_logging("serve", ("chatbot.serve", "uvicorn.error")), _memory_lock(cfg, sc.memory):
        from ..infer.responder import load_responder

        responder = load_responder(cfg)
        b = responder.bundle
        info = {"bot_speaker": responder.bot_speaker, "step": b.step, "source": b.kind,
                "context_tokens": responder.block_size, "max_chars": cfg.gen.max_chars,
                "created": int(Path(b.source).stat().st_mtime)}
        state = build_state(cfg, responder, auth, model=model_id(cfg, b), info=info)
        from .app import create_app

        server = make_server(create_app(state), sc)
        shown = f"[{host}]" if ":" in host else host
        log.info("serving %s on http://%s:%d (page: /, API: /v1/chat/completions, auth=%s, memory=%s); "
                 "Ctrl+C stops", state.model_id, shown, sock.getsockname()[1], "off" if auth is None else "key",
                 "on" if sc.memory else "off")
        try:
            server.run(sockets=[sock])
        finally:
            finished = state.engine.close(timeout=5.0)
            log.info("stopped%s", "" if finished else " (replies still generating were abandoned)")


@contextlib.contextmanager
def _memory_lock(cfg: Config, memory: bool) -> Iterator[None]:
    """One serve per memory folder (as one bridge per bridge folder)."""
    if not memory:
        yield
        return
    from ..fsio import private_mkdir

    folder = cfg.path(cfg.paths.bridge_memory) / MEMORY_SUBDIR
    private_mkdir(folder)  # 0700 for every folder it creates (data/, data/bridge/ too), whatever the umask
    with folder_lock(folder, "serve"):
        yield
