"""``python -m chatbot.ops bridge-secret``: write a random shared secret for the bridge into ``.env``.

The HTTP bridge with ``--send`` refuses to start without ``bridge.shared_secret`` (gen.yaml reads it from
``CHATBOT_BRIDGE_SECRET``). This verb is the one-step fix: 32 random bytes, URL-safe base64 (43 ASCII characters,
usable unchanged in the ``X-Bridge-Secret`` header and as the path segment ``/skill/<secret>``). The secret is
never printed (terminals keep scroll-back); the user copies it from ``.env``. ``.env`` keeps every other line and
is rewritten atomically with owner-only permissions.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from ..errors import ChatbotError
from ..fsio import atomic_write_text

VAR = "CHATBOT_BRIDGE_SECRET"
_LINE = re.compile(rf"^\s*(?:export\s+)?{VAR}\s*=(.*)$")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _has_value(raw: str) -> bool:
    value = raw.split(" #", 1)[0].strip().strip("'\"")
    return bool(value)


def write_secret(env_path: Path, *, replace: bool) -> str:
    """Set ``CHATBOT_BRIDGE_SECRET`` in ``env_path`` (created if missing) and return it. Refuses to overwrite a
    set value unless ``replace``."""
    try:
        text = env_path.read_text(encoding="utf-8") if env_path.exists() else ""
    except (OSError, UnicodeDecodeError):
        raise ChatbotError(f"cannot read {env_path} as UTF-8 text; fix or move it, then run bridge-secret again") \
            from None
    lines = text.splitlines()
    found = [i for i, line in enumerate(lines) if _LINE.match(line)]
    if not replace and any(_has_value(_LINE.match(lines[i]).group(1)) for i in found):
        raise ChatbotError(f"{VAR} is already set in {env_path}; run `python -m chatbot.ops bridge-secret "
                           f"--replace` to make a new one (every caller then needs the new one)")
    value = new_secret()
    line = f"{VAR}={value}"
    if found:
        lines[found[0]] = line
        lines = [x for i, x in enumerate(lines) if i not in found[1:]]
    else:
        lines.append(line)
    atomic_write_text(env_path, "\n".join(lines) + "\n")  # a temp file made with mode 0600, then renamed
    try:
        os.chmod(env_path, 0o600)
    except OSError:  # e.g. a file system without permissions
        pass
    return value


def bridge_secret_command(config_dir: Path, *, replace: bool) -> None:
    """The verb. Works without a loadable config (a broken secret in .env must not block its own repair)."""
    from ..config import load_config
    from ..errors import ConfigError

    config_dir = Path(config_dir).expanduser().resolve()
    if not config_dir.is_dir():
        raise ChatbotError(f"{config_dir}: config folder not found (run from the project folder or pass --config-dir)")
    env_path = config_dir.parent / ".env"
    value = write_secret(env_path, replace=replace)
    print(f"wrote a new random {VAR} to {env_path} (not shown here: copy it from that file).")
    print("Callers send it in the X-Bridge-Secret header, or in the URL path: POST /skill/<secret> (kakao-skill) "
          "or POST /relay/<secret> (relay). Restart a running bridge to use it.")
    if os.environ.get(VAR):
        print(f"note: {VAR} is also set in this shell's environment, which wins over .env; unset it.")
        return
    try:
        used = load_config(config_dir).gen.bridge.shared_secret == value
    except ConfigError as exc:
        print(f"note: the configuration does not load yet: {exc}")
        return
    if not used:
        print(f'note: configs/gen.yaml bridge.shared_secret does not read {VAR}; set it to "${{{VAR}:}}".')
