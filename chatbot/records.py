"""The one shape every export parser produces: ``Record(timestamp, speaker, text, kind)``.

``kind`` is a :class:`Kind`. Three families:

* ``MESSAGE`` — ordinary text a person sent.
* media placeholders (``PHOTO``, ``VIDEO``, ``EMOTICON``, ``FILE``, ``AUDIO``, ``CALL``, ``POLL``, ``LOCATION``,
  ``CONTACT``, ``PAYMENT``, ``SEARCH``, ``MEDIA``) and ``DELETED`` (a message its sender deleted) — still sent by a
  person, so they count as user messages; ``text`` keeps the placeholder as the export wrote it.
* system events (``JOIN``, ``LEAVE``, ``INVITE``, ``KICK``, ``HIDDEN`` (standalone "메시지가 삭제되었습니다."),
  ``NOTICE`` (open-chat policy notices), ``HOST`` (host changes), ``SYSTEM`` (any other)) — ``speaker`` is the
  subject when the export names one, else "".

Timestamps are naive local datetimes exactly as written in the export (minute precision except CSV, which has
seconds). A record with no stamp of its own (Windows system lines, CSV rows with an empty date) takes the time of
the previous record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


class Kind(str, Enum):
    MESSAGE = "message"
    DELETED = "deleted"
    # media placeholders
    PHOTO = "photo"
    VIDEO = "video"
    EMOTICON = "emoticon"
    FILE = "file"
    AUDIO = "audio"
    CALL = "call"
    POLL = "poll"
    LOCATION = "location"
    CONTACT = "contact"
    PAYMENT = "payment"
    SEARCH = "search"
    MEDIA = "media"
    # system events
    JOIN = "join"
    LEAVE = "leave"
    INVITE = "invite"
    KICK = "kick"
    HIDDEN = "hidden"
    NOTICE = "notice"
    HOST = "host"
    SYSTEM = "system"

    def __str__(self) -> str:  # "photo", not "Kind.PHOTO"
        return self.value


MEDIA_KINDS = frozenset(
    {Kind.PHOTO, Kind.VIDEO, Kind.EMOTICON, Kind.FILE, Kind.AUDIO, Kind.CALL, Kind.POLL, Kind.LOCATION,
     Kind.CONTACT, Kind.PAYMENT, Kind.SEARCH, Kind.MEDIA}
)
SYSTEM_KINDS = frozenset(
    {Kind.JOIN, Kind.LEAVE, Kind.INVITE, Kind.KICK, Kind.HIDDEN, Kind.NOTICE, Kind.HOST, Kind.SYSTEM}
)


@dataclass(frozen=True, slots=True)
class Record:
    timestamp: datetime
    speaker: str
    text: str
    kind: Kind

    @property
    def is_system(self) -> bool:
        return self.kind in SYSTEM_KINDS

    @property
    def is_user_message(self) -> bool:
        """Sent by a person (text, media placeholder or a sender-deleted message) — counted as a message."""
        return self.kind not in SYSTEM_KINDS

    @property
    def is_media(self) -> bool:
        return self.kind in MEDIA_KINDS
