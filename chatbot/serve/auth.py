"""API keys for ``serve``: ``Authorization: Bearer <key>`` checked against ``CHATBOT_API_KEY_HASH`` in ``.env``.

The hash is the password gate's salted scrypt line (chatbot/security.py), so a copy of ``.env`` does not reveal the
key. ``python -m chatbot.ops api-key`` makes a random key (256 bits: nobody can guess it, so brute force is not a
concern) and prints it once together with the ``.env`` line. The key is never logged nor put into an error.

scrypt costs ~0.1 s on purpose, too slow to run for every request: after a key has been verified once, the
SHA-256 of that key is remembered in memory and later requests are compared against it in constant time. Unknown
keys always pay the full scrypt check, one at a time (a flood of wrong keys occupies at most one core).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
import threading

from ..errors import ChatbotError
from ..security import hash_password, parse_password_hash, verify_password_hash

ENV_NAME = "CHATBOT_API_KEY_HASH"
KEY_BYTES = 32


class ApiKeyCheck:
    """``check(given) -> bool`` for one configured hash line (validated at construction: a malformed line stops
    ``serve`` before it listens)."""

    def __init__(self, hash_line: str):
        try:
            parse_password_hash(hash_line, min_mem=0)  # a random 256-bit key needs no password-strength floor
        except ChatbotError:
            raise ChatbotError(f"{ENV_NAME} in .env is malformed; make a new key with "
                               "`python -m chatbot.ops api-key`") from None
        self._line = hash_line
        self._known: bytes | None = None  # sha256 of the verified key
        self._slow = threading.Lock()

    def check(self, given: str) -> bool:
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        known = self._known
        if known is not None and hmac.compare_digest(digest, known):
            return True
        with self._slow:
            ok = verify_password_hash(given, self._line, min_mem=0)
        if ok:
            self._known = digest
        return ok


def bearer_key(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header (None when absent or another scheme)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def api_key_command() -> None:
    """The ``api-key`` verb: a new random key on standard error (shown once) and its ``.env`` line on standard
    output, so ``python -m chatbot.ops api-key >> .env`` stores only the hash."""
    key = "sk-chatbot-" + secrets.token_urlsafe(KEY_BYTES)
    line = hash_password(key, n=2**15)  # ~0.1 s: the key is random, so the password cost (2**17) buys nothing
    print("# your API key (shown only now; give it to your apps, keep it secret):", file=sys.stderr)
    print(f"#   {key}", file=sys.stderr)
    print("# put this line into .env (`>> .env`), then restart serve:", file=sys.stderr)
    print(f"{ENV_NAME}='{line}'")
