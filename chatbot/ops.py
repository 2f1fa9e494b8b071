"""The command line: ``python -m chatbot.ops <verb>``. One small function per verb, no logic here.

Every hyper-parameter lives in configs/*.yaml; flags only choose operations (--dry, --send, --encrypt, ...).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import ChatbotError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Turn your KakaoTalk exports into a private, local chatbot. "
    "Pipeline: organize -> preprocess -> train -> publish -> reply/chat/smoke/bridge/serve. "
    "All settings live in configs/*.yaml; try `demo` first.",
)

ConfigDir = typer.Option(Path("configs"), "--config-dir", "-c", help="Folder holding paths.yaml, train.yaml, gen.yaml.")


def _call(stage: str, *args: Any, **kwargs: Any) -> None:
    """Call the stage function ``stage`` ("module:function", relative to chatbot) and end the command with its exit
    code when it returns one (an int; the stages that return nothing end with 0).

    The stage's module is imported only here, so ``--help`` and a configuration error never pay for torch."""
    module, _, name = stage.partition(":")
    result = getattr(importlib.import_module(module, __package__), name)(*args, **kwargs)
    if isinstance(result, int) and not isinstance(result, bool):
        raise typer.Exit(result)


def _run(stage: str, config_dir: Path, *args: Any, **kwargs: Any) -> None:
    """The shape of every pipeline verb: load and validate configs/*.yaml, then call the stage with it first
    (see _call)."""
    from .config import load_config

    _call(stage, load_config(config_dir), *args, **kwargs)


@app.command()
def organize(
    dry: bool = typer.Option(False, "--dry", help="Show the plan; change nothing."),
    config_dir: Path = ConfigDir,
) -> None:
    """Collect new exports (inbox + project root), file them per room, and write data/raw/manifest.json."""
    _run(".kakao.organize:organize", config_dir, dry=dry)


@app.command()
def archive(
    dry: bool = typer.Option(False, "--dry", help="Show what would move; change nothing."),
    tag: str = typer.Option("", "--tag", help="Suffix for the archive folder name."),
    include_raw: bool = typer.Option(False, "--include-raw", help="Also move data/raw (organized exports)."),
    config_dir: Path = ConfigDir,
) -> None:
    """Move processed data, checkpoints and artifacts into data/archive/<timestamp>[-tag]/ (never deletes)."""
    _run(".kakao.archive:archive", config_dir, dry=dry, tag=tag, include_raw=include_raw)


@app.command()
def preprocess(
    force: bool = typer.Option(False, "--force", help="Rebuild even if the outputs are current."),
    config_dir: Path = ConfigDir,
) -> None:
    """Build pseudonymised, PII-masked token and loss-mask memmaps in data/processed/."""
    _run(".data.preprocess:preprocess", config_dir, force=force)


@app.command()
def train(config_dir: Path = ConfigDir) -> None:
    """Train (or resume) the model in checkpoints/<run_name>/. Stop with Ctrl+C or a STOP file; rerun to resume."""
    _run(".train.loop:train", config_dir)


@app.command()
def publish(
    encrypt: bool = typer.Option(False, "--encrypt", help="Write artifacts/model_latest.enc (needs CHATBOT_MODEL_KEY)."),
    format: str = typer.Option("pt", "--format", help="pt (our artifact) or hf (Hugging Face folder)."),
    dry: bool = typer.Option(False, "--dry", help="Show what would be written; write nothing."),
    adapter_only: bool = typer.Option(False, "--adapter-only",
                                      help="Pretrained-base runs: write only the LoRA adapter (loads on top of the base)."),
    config_dir: Path = ConfigDir,
) -> None:
    """Write a self-contained model artifact (optionally encrypted) from the best checkpoint."""
    _run(".artifact.publish:publish", config_dir, encrypt=encrypt, fmt=format, dry=dry, adapter_only=adapter_only)


@app.command()
def reply(
    text: str = typer.Argument(..., help="The message to answer."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON with confidence and timing."),
    config_dir: Path = ConfigDir,
) -> None:
    """Print the bot's reply to one message (password required)."""
    _run(".infer.chat:reply_command", config_dir, text, as_json=json_out)


@app.command()
def chat(config_dir: Path = ConfigDir) -> None:
    """Interactive anonymous two-person chat (/reset, /exit; works with piped input). Password required."""
    _run(".infer.chat:chat_command", config_dir)


@app.command()
def smoke(config_dir: Path = ConfigDir) -> None:
    """Quick automatic quality check: a short scripted conversation; non-zero exit when a reply is broken."""
    _run(".eval.smoke:smoke", config_dir)


@app.command("eval")
def eval_(
    source: str = typer.Option("", "--source", help="best, latest, artifact or a model file path "
                               "(default: gen.yaml model_preference)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Reply items (default gen.yaml eval.items; 0 = loss only)."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    config_dir: Path = ConfigDir,
) -> None:
    """Score the model on the held-out chats against unigram/bigram and retrieval baselines (password required)."""
    _run(".eval:eval_command", config_dir, source=source, limit=limit, as_json=json_out)


@app.command()
def bridge(
    dry: bool = typer.Option(False, "--dry", help="Receive and generate, but send nothing (default)."),
    send: bool = typer.Option(False, "--send", help="Really send replies."),
    config_dir: Path = ConfigDir,
) -> None:
    """Connect the bot to a messenger transport (kakao-skill, relay or jsonl; see gen.yaml bridge:)."""
    if dry and send:
        raise ChatbotError("choose one of --dry and --send")
    _run(".bridge:run_bridge", config_dir, send=send)


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Listen address (default serve.host, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Listen port (default serve.port, 8000)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No API key (only on 127.0.0.1)."),
    config_dir: Path = ConfigDir,
) -> None:
    """OpenAI-compatible API (/v1/chat/completions) and a web chat page (/). Password and API key required."""
    _run(".serve:run_serve", config_dir, host=host, port=port, no_auth=no_auth)


@app.command("api-key")
def api_key() -> None:
    """Make a random API key for serve: shows it once, prints its CHATBOT_API_KEY_HASH line for .env."""
    _call(".serve.auth:api_key_command")


@app.command("bridge-secret")
def bridge_secret(
    replace: bool = typer.Option(False, "--replace", help="Replace a secret that is already set."),
    config_dir: Path = ConfigDir,
) -> None:
    """Write a random CHATBOT_BRIDGE_SECRET (gen.yaml bridge.shared_secret) into .env; it is not printed."""
    _call(".bridge.secret:bridge_secret_command", config_dir, replace=replace)  # repairs .env: no config load


@app.command("hash-password")
def hash_password() -> None:
    """Print a salted scrypt hash for CHATBOT_PASSWORD_HASH from a password typed at a hidden prompt."""
    _call(".security:hash_password_command")


@app.command()
def status(config_dir: Path = ConfigDir) -> None:
    """One screen: exports found, data freshness, training progress, which model inference would load, next step."""
    _run(".status:status", config_dir)


@app.command()
def demo(
    workspace: Path = typer.Option(Path("runs/demo"), "--workspace", help="Demo workspace (your own data is never touched)."),
) -> None:
    """Run the whole pipeline on the shipped demo room in its own workspace, then chat-test it."""
    _call(".demo:demo", workspace)


def main(argv: Optional[list[str]] = None) -> int:
    from .portable import setup_console

    setup_console()  # a cp949 (or any non-UTF-8) console must not crash on an emoji in a room name or reply
    try:
        # standalone_mode=False hands typer.Exit's code back as the return value
        result = app(args=argv, prog_name="python -m chatbot.ops", standalone_mode=False)
    except ChatbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # usage errors from typer's bundled click (typer._click or click, depending on the version)
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return exc.exit_code
        if type(exc).__name__ == "Abort":
            print("aborted", file=sys.stderr)
            return 130
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
