"""Password gate for reply / chat / smoke / bridge, the scrypt password hash, and the model-key check.

Why a gate at all: the model was trained on private conversations and can echo them, so running it needs the
owner's password even on a shared machine. The password lives in ``.env`` either in plain text
(``CHATBOT_PASSWORD``) or, preferably, as a salted scrypt hash (``CHATBOT_PASSWORD_HASH``, printed by
``python -m chatbot.ops hash-password``), so that a copy of ``.env`` does not reveal it. The caller supplies it at a
hidden prompt (terminal) or in ``CHATBOT_ACCESS_PASSWORD`` (scripts). Neither the password nor the model key is ever
printed, logged or put into an error message; comparisons are constant-time.

Hash format (one line, ``$``-separated; base64 is URL-safe without padding)::

    scrypt$<N>$<r>$<p>$<salt_b64>$<hash_b64>

Strength: new hashes use N = 2**17, r = 8, p = 1 (128 MiB, the OWASP minimum for scrypt); a stored hash whose
memory cost (128·N·r bytes) is below ``HASH_FLOOR_MEM`` is refused with a line that says how to make a new one. A
password shorter than ``MIN_PASSWORD_CHARS`` draws a warning; a model key must have ``MIN_MODEL_KEY_CHARS``
characters and must not be one repeated character, a repeated pattern, or a common password or keyboard run.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import sys
import time

from .config import Config
from .errors import ChatbotError

# A wrong password costs this many seconds (slows down guessing; tests monkeypatch it to 0).
WRONG_PASSWORD_DELAY_S = 1.0

# scrypt cost for new password hashes: N = 2**17, r = 8, p = 1 → 128 MiB and ~0.3–0.5 s per check on a laptop CPU.
HASH_N, HASH_R, HASH_P = 2**17, 8, 1
HASH_SALT_BYTES, HASH_BYTES = 16, 32
# Stored hashes cheaper than this (128·N·r bytes of memory) are refused: 32 MiB = N 2**15, r 8, the default of the
# first release, so its hashes keep working; anything weaker must be made again. (Tests lower it for speed.)
HASH_FLOOR_MEM = 128 * 2**15 * 8
# Bounds accepted when *reading* a hash from .env (a typo must not make us allocate gigabytes).
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
_MAX_SCRYPT_MEM = 1 << 30

MIN_PASSWORD_CHARS = 8
MIN_MODEL_KEY_CHARS = 20
_KEY_HOWTO = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


# ---------------------------------------------------------------------------------------------- password hash
def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # maxmem: OpenSSL's default limit is 32 MiB, below N = 2**17; allow exactly what these parameters need
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=128 * r * n + 128 * r * p + (1 << 20))


def hash_password(password: str, *, n: int | None = None, r: int | None = None, p: int | None = None) -> str:
    """A new salted scrypt hash line for ``CHATBOT_PASSWORD_HASH`` (default cost: HASH_N, HASH_R, HASH_P)."""
    n, r, p = n or HASH_N, r or HASH_R, p or HASH_P
    salt = os.urandom(HASH_SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"scrypt${n}${r}${p}${_b64e(salt)}${_b64e(digest)}"


_MALFORMED = ("CHATBOT_PASSWORD_HASH in .env is malformed (expected scrypt$N$r$p$salt$hash); "
              "make a new one with `python -m chatbot.ops hash-password`")


def parse_password_hash(line: str, *, min_mem: int | None = None) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, digest) of a hash line; ChatbotError (never showing the line) when it is malformed or cheaper
    than ``min_mem`` bytes of scrypt memory (default ``HASH_FLOOR_MEM``; 0 for hashes of random keys, which no
    amount of guessing finds)."""
    parts = line.strip().strip("'\"").split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ChatbotError(_MALFORMED)
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = _b64d(parts[4]), _b64d(parts[5])
    except (ValueError, TypeError):
        raise ChatbotError(_MALFORMED) from None
    if (n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P
            or 128 * r * n > _MAX_SCRYPT_MEM or len(salt) < 8 or len(digest) < 16):
        raise ChatbotError(_MALFORMED)
    if 128 * r * n < (HASH_FLOOR_MEM if min_mem is None else min_mem):
        raise ChatbotError(f"CHATBOT_PASSWORD_HASH in .env is too weak (scrypt N={n}, r={r}: below "
                           f"{HASH_FLOOR_MEM >> 20} MiB); make a new one with `python -m chatbot.ops hash-password` "
                           "and replace the line")
    return n, r, p, salt, digest


def verify_password_hash(password: str, line: str, *, min_mem: int | None = None) -> bool:
    """Constant-time check of ``password`` against a hash line (ChatbotError when the line is malformed or weak)."""
    n, r, p, salt, digest = parse_password_hash(line, min_mem=min_mem)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


def verify_plain_password(password: str, stored: str) -> bool:
    """Constant-time comparison that also hides the stored password's length (both sides hashed first)."""
    a = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(stored.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


# ------------------------------------------------------------------------------------------------------- gate
def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def _prompt(text: str) -> str:
    try:
        return getpass.getpass(text)
    except (EOFError, KeyboardInterrupt):
        raise ChatbotError("no password entered") from None


def require_password(cfg: Config) -> None:
    """Return when the caller knows the configured password; otherwise raise ChatbotError (one line).

    Configured in .env: ``CHATBOT_PASSWORD_HASH`` (preferred, used when both are set) or ``CHATBOT_PASSWORD``.
    Supplied by the caller: ``CHATBOT_ACCESS_PASSWORD`` in the process environment (for scripts; deliberately NOT
    read from .env — a .env holding both the password and the answer would make the gate pointless) or a hidden
    prompt when standard input is a terminal. A wrong password sleeps ``WRONG_PASSWORD_DELAY_S`` before refusing.
    """
    stored_hash = cfg.secret("CHATBOT_PASSWORD_HASH")
    stored_plain = cfg.secret("CHATBOT_PASSWORD")
    if not stored_hash and not stored_plain:
        raise ChatbotError(
            "no password configured: put CHATBOT_PASSWORD_HASH=<output of `python -m chatbot.ops hash-password`> "
            "(or CHATBOT_PASSWORD=<password>) into .env (see .env.example)"
        )
    if stored_hash:
        parse_password_hash(stored_hash)  # a malformed or weak line is reported before anyone types anything
    else:
        warn_short_password(stored_plain, "CHATBOT_PASSWORD in .env")
    given = os.environ.get("CHATBOT_ACCESS_PASSWORD") or None
    if given is None:
        if not _stdin_is_tty():
            raise ChatbotError(
                "password required: run in a terminal to be asked for it, or set CHATBOT_ACCESS_PASSWORD "
                "in the environment for scripts"
            )
        given = _prompt("chatbot password: ")
    ok = verify_password_hash(given, stored_hash) if stored_hash else verify_plain_password(given, stored_plain)
    if not ok:
        time.sleep(WRONG_PASSWORD_DELAY_S)
        raise ChatbotError("wrong password")


def warn_short_password(password: str, what: str) -> None:
    """One line on stderr when ``password`` is shorter than MIN_PASSWORD_CHARS (never showing it)."""
    if len(password) < MIN_PASSWORD_CHARS:
        print(f"warning: {what} is shorter than {MIN_PASSWORD_CHARS} characters; anyone who gets hold of .env "
              "or may try passwords can guess it quickly — choose a longer one", file=sys.stderr)


def hash_password_command() -> None:
    """The ``hash-password`` verb: read a new password twice at a hidden prompt, print the .env line.

    Without a terminal the password is read from the first line of standard input (``... < file``), never from
    the command line (which would land in shell history and process listings).
    """
    if _stdin_is_tty():
        first = _prompt("new password: ")
        if not first:
            raise ChatbotError("empty password; nothing printed")
        if not hmac.compare_digest(first.encode("utf-8"), _prompt("repeat password: ").encode("utf-8")):
            raise ChatbotError("the two passwords differ; nothing printed")
    else:
        first = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
        if not first:
            raise ChatbotError("empty password; run in a terminal or pipe the password in on one line")
    warn_short_password(first, "the new password")
    line = hash_password(first)
    print("# put this line into .env (and remove any CHATBOT_PASSWORD= line):", file=sys.stderr)
    # single quotes: python-dotenv and shells take the value literally ($ is not expanded)
    print(f"CHATBOT_PASSWORD_HASH='{line}'")


# -------------------------------------------------------------------------------------------------- model key
def model_key(cfg: Config) -> str:
    """``CHATBOT_MODEL_KEY`` from the environment or .env; refuses (without echoing it) when missing or weak."""
    key = cfg.secret("CHATBOT_MODEL_KEY")
    if not key:
        raise ChatbotError(f"CHATBOT_MODEL_KEY is not set; generate one with {_KEY_HOWTO} and put "
                           "CHATBOT_MODEL_KEY=<it> into .env (keep a copy: without it the model cannot be loaded)")
    if len(key) < MIN_MODEL_KEY_CHARS:
        raise ChatbotError(f"CHATBOT_MODEL_KEY is too short (at least {MIN_MODEL_KEY_CHARS} characters); "
                           f"generate a strong one with {_KEY_HOWTO}")
    weak = weak_key_reason(key)
    if weak:
        raise ChatbotError(f"CHATBOT_MODEL_KEY is too easy to guess ({weak}); generate a strong one with "
                           f"{_KEY_HOWTO} (then publish again: an artifact opens only with the key it was made with)")
    return key


# Words and runs that make up most guessable "long" keys. Lower case; matched case-insensitively and with the
# usual digit-for-letter swaps (p4ssw0rd).
_COMMON_WORDS = ("password", "passwd", "passphrase", "secret", "letmein", "welcome", "admin", "administrator",
                 "changeme", "default", "iloveyou", "sunshine", "princess", "football", "baseball", "monkey",
                 "dragon", "master", "login", "trustno1", "qwerty", "azerty", "chatbot", "kakaotalk", "kakao",
                 "example", "sample", "private", "model", "modelkey", "mykey", "test", "hello", "love", "sarang")
_RUNS = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm", "1qaz2wsx3edc4rfv",
         "qazwsxedcrfv")
_LEET = str.maketrans("013457@$", "oleastas")
# what must remain of a key once the guessable parts are taken out
_MIN_RANDOM_CHARS = 10


def weak_key_reason(key: str) -> str | None:
    """Why ``key`` is guessable despite its length, or None. Catches one repeated character, a repeated pattern
    (``abcabcabc…``) and keys made mostly of common passwords, keyboard rows, alphabet or digit runs and repeated
    characters (``Password1234567890!!``); what is left after removing those must have ``_MIN_RANDOM_CHARS``
    characters. A random key (``secrets.token_urlsafe(32)``, 43 characters) always passes."""
    if len(set(key)) == 1:
        return "one repeated character"
    for period in range(1, len(key) // 2 + 1):
        if len(key) % period == 0 and key == key[:period] * (len(key) // period):
            return "a repeated pattern"
    lower = key.lower()
    plain = list(lower)
    leet = lower.translate(_LEET)  # same length: a word found here is cut at the same place in ``plain``
    for word in sorted(_COMMON_WORDS, key=len, reverse=True):
        for m in re.finditer(re.escape(word), leet):
            plain[m.start():m.end()] = " " * len(word)
    rest = _drop_runs("".join(plain))
    rest = re.sub(r"(.)\1{2,}", " ", rest)  # aaa, 111, !!!
    rest = re.sub(r"[\s\W_]+", "", rest)  # separators carry no secret
    if len(rest) < _MIN_RANDOM_CHARS:
        return "mostly common words, keyboard or number runs and repeats"
    return None


def _drop_runs(text: str) -> str:
    """Remove every ascending or descending run of 3+ characters of ``_RUNS`` (``1234``, ``cba``, ``qwer``)."""
    out, i = [], 0
    while i < len(text):
        best = 0
        for run in _RUNS:
            for seq in (run, run[::-1]):
                j = seq.find(text[i])
                if j < 0:
                    continue
                n = 1
                while i + n < len(text) and j + n < len(seq) and text[i + n] == seq[j + n]:
                    n += 1
                best = max(best, n)
        if best >= 3:
            out.append(" ")
            i += best
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
