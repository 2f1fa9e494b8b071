"""User-facing errors.

Every stage raises :class:`ChatbotError` for anything the user can fix (bad input, missing file, wrong key).
The CLI prints its message as one line and exits with ``exit_code``; no traceback, no private text.
"""


class ChatbotError(Exception):
    """An error with a one-line message that says what went wrong and what to do."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(ChatbotError):
    """A configuration file is missing, malformed, or holds an invalid key or value."""


class FormatError(ChatbotError):
    """An input file matches no known KakaoTalk export format."""


class LockedError(ChatbotError):
    """Another process (a trainer) holds the run lock."""
