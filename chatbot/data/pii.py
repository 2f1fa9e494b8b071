"""Personal-data masking: phone numbers, e-mails, URLs, 주민등록번호, card and bank-account numbers, street
addresses, @mentions and speakers' names in message text become typed placeholder markers
(``placeholder_marker("phone")`` → ``<|phone|>``).

One compiled :class:`PiiMasker` per run masks each message in a few passes, each behind a cheap pre-check (no ``@``
→ no e-mail pass; fewer than 7 digits → no number pass; no road/동 followed by a number → no address pass), so
masking stays cheap at millions of messages (``bench/bench_pii.py``). The rules aim to catch what people actually
type in Korean chats while leaving ordinary numbers, times, dates and prices alone:

``url``      ``http(s)://…`` and ``www.…`` (Korean / IDN hosts too: ``http://예시.com/경로``), and bare hosts whose
             TLD is a real one — every TLD of the Public Suffix List, shipped as ``chatbot/data/tlds.txt``
             (``shop.example.store/item``, ``한글도메인.한국/경로``, ``example.co.kr``). A bare ``name.tld`` with no
             path and no sub-domain counts only when its TLD is no everyday word or file extension (``Mr.Kim``,
             ``main.py``, ``자료.zip`` stay). An ASCII link stops at whitespace or the first non-ASCII character
             that does not follow ``/ = & # ? + _ -`` (Korean glued after a link survives: ``…/path에서``).
``email``    ``local@domain.tld``, also without the TLD (``name@gmail``) and spelled out
             (``name (at) example.com``, ``name[at]…``, ``name(골뱅이)…``, ``(dot)``, fullwidth ``＠``).
``rrn``      ``YYMMDD-GNNNNNN`` (dash or space optional; month/day must be a valid date; ``-1******`` partial too).
``card``     16 digits in four groups of four (``-`` or space), Amex 4-6-5, or 15–16 digits in a row that pass Luhn.
``phone``    Korean mobiles (``010-1234-5678``, ``01012345678``, ``(010)1234-5678``, ``010 - 1234 - 5678``,
             ``010_1234_5678``, ``010/1234/5678``, ``+82 10 …``), landlines / VoIP (``02-123-4567``, ``(02)…``,
             ``031-…``, ``070-…``) and ``1588-1234``-style company numbers.
``account``  three or four dash-separated digit groups with 10–14 digits in total (``110-123-456789``,
             ``3333-01-1234567``) that are not a date; 10–14 digits (single spaces or dashes allowed between
             them) right after a bank word (``국민``, ``카뱅``, ``계좌``, ``입금`` …); or, without a bank word, the
             shape of a well-known account (카카오뱅크 ``3333011234567``, 토스뱅크 ``1000…``, 우리 ``1002…``,
             신한 ``110…``) whose digits are not a round amount.
``address``  Korean road / lot addresses: a province or metropolitan city (``서울시``, ``경기도``) or a 시·군·구,
             then a road (``…로``, ``…길``) or 동/리/가 and a number, with 동/층/호 details
             (``서울시 강남구 테헤란로 123``, ``경기도 성남시 분당구 판교역로 235, 101동 1203호``), and an apartment
             unit on its own (``101동 1203호``).
``mention``  ``@`` followed by a known name (longest first) or any other word; plus *in-text* occurrences of a
             speaker's name (names of two characters or more, Latin letters case-insensitive; a three-syllable
             Korean name also masks its given name, e.g. ``민준아``; a given name that is a common word such as
             ``하나`` only before a vocative or honorific: ``하나야``, ``하나씨``; the parts of a Latin
             ``First Last`` name on their own). Names count as ``name`` in the statistics and share
             ``<|mention|>``.

Never masked (``tests/fixtures/pii/ordinary_ko.txt`` holds 125 such sentences; the tests require 0 changed):
``15,000원``, ``3시 30분``, ``10:30``, ``2024-01-15``, ``2024.1.15``, ``3-2로``, ``1234``, ``12.99``, versions,
six-digit codes, amounts without separators below 10 digits, ``2호선``, ``3층``. Over-masking is possible for
10+-digit numbers after a bank word, for names that are common words and for Korean words glued in front of an
IDN link; under-masking for numbers written in words or with odd spacing, and for addresses without a number.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..config import PiiConfig
from .tokenizer import placeholder_marker

PII_CLASSES = ("url", "email", "rrn", "card", "phone", "account", "mention", "address")

# ------------------------------------------------------------------------------------------------------- URLs
def _load_tlds() -> list[str]:
    """Every public TLD (chatbot/data/tlds.txt: the ICANN section of the Public Suffix List, MPL 2.0)."""
    lines = (Path(__file__).with_name("tlds.txt")).read_text(encoding="utf-8").splitlines()
    return [tld.strip().lower() for tld in lines if tld.strip() and not tld.startswith("#")]


_ALL_TLDS = _load_tlds()
# TLDs that are also everyday words, names or file extensions ("Mr.Kim", "main.py", "자료.zip", "hello.world"):
# a bare ``name.tld`` with one of them — no scheme, no sub-domain, no path — is left alone. With a path or a
# sub-domain (``naver.me/abc``, ``shop.example.store/item``) every TLD of the list counts.
_STANDALONE_GENERIC = {"com", "net", "org", "edu", "gov", "mil", "int", "info", "biz", "xyz", "site", "shop",
                       "store", "online", "tech", "blog", "club", "page", "link", "app", "dev", "web", "website"}
_AMBIGUOUS_CC = {"ai", "am", "as", "at", "be", "by", "cc", "do", "id", "in", "is", "it", "md", "me", "mm", "ml",
                 "ms", "my", "no", "pl", "ps", "py", "rs", "sh", "so", "to", "us", "ws"}


def _standalone(tld: str) -> bool:
    """May ``name.tld`` alone (one dot, no path) count as a link?"""
    tld = tld.lower()
    if not tld.isascii():
        return True  # 한국, 닷컴: no everyday word in Latin text
    return (len(tld) == 2 and tld not in _AMBIGUOUS_CC) or tld in _STANDALONE_GENERIC


# a path: ASCII up to whitespace; a run of non-ASCII characters only right after / = & # ? + _ - (``/경로``,
# ``?q=서울``), so Korean glued after a link (``…/path에서``) stays text
_PATH = r"(?:[/?#](?:[!-~]|(?<=[/=&#?+_-])[^\s!-~]+)*)?"
# non-ASCII host labels (IDN, ``예시.com``, ``한글도메인.한국``): letters/digits other than ASCII, and hyphens
_ULABEL = r"[^\W_A-Za-z0-9](?:[^\W_A-Za-z]|-)*"
_ALABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"


def _url_pattern(trie) -> str:
    ascii_tlds = trie(tld for tld in _ALL_TLDS if tld.isascii())
    any_tlds = trie(_ALL_TLDS)
    return (
        # scheme or www.: ASCII to the next whitespace; a non-ASCII run after / = & # ? + _ . : - or before a dot
        r"(?P<url_scheme>(?:https?://|www\.)(?:[!-~]|(?<=[/=&#?+_.:-])[^\s!-~]+|[^\s!-~]+(?=\.))+)"
        # a bare ASCII host with a real TLD
        r"|(?P<url_bare>(?<![A-Za-z0-9@._%+-])(?:" + _ALABEL + r"\.)+(?:" + ascii_tlds + r")(?![A-Za-z0-9-])"
        + _PATH + ")"
        # a bare host with non-ASCII labels (IDN) and a real TLD, Latin or not
        r"|(?P<url_idn>(?<![\w@.%+-])(?:" + _ULABEL + r"\.)+(?:" + any_tlds + r")(?![\w-])" + _PATH + ")"
    )


# ---------------------------------------------------------------------------------------------------- e-mail
_AT = r"(?:@|＠|[ ]?[(\[{<][ ]?(?i:at|골뱅이)[ ]?[)\]}>][ ]?)"  # name@x, name (at) x, name[at]x, name(골뱅이)x
_DOT = r"(?:\.|[ ]?[(\[{<][ ]?(?i:dot|점)[ ]?[)\]}>][ ]?)"
# local@domain; the domain's first label has a letter, the TLD may be missing (``name@gmail``)
_EMAIL = (r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+" + _AT + r"(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9-]+(?:" + _DOT
          + r"[A-Za-z0-9-]+)*(?![A-Za-z0-9-])")
_EMAIL_HINT = r"[@＠]|[(\[{<] ?(?i:at|골뱅이) ?[)\]}>]"

# --------------------------------------------------------------------------------------------------- numbers
_RRN = r"(?<![\d-])\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[ ]?-?[ ]?[1-8](?:\d{6}|\*{6})(?![\d*])"
_CARD = (r"(?<![\d-])(?:\d{4}(?P<cs>[ -])\d{4}(?P=cs)\d{4}(?P=cs)\d{4}|\d{4}(?P<as>[ -])\d{6}(?P=as)\d{5})(?![\d-])"
         r"|(?<!\d)\d{15,16}(?!\d)")
# phone separators: - . / _ with a space on either side, or one space (``010 - 1234 - 5678``, ``010_1234_5678``)
_SEP = r"(?:[ ]?[-./_][ ]?|[ ])"
_PHONE = (
    r"(?<![\d+])(?:"
    r"(?:(?:\+82|\(\+?82\))[ .-]?0?|\(?0)1[016789]\)?" + _SEP + r"?\d{3,4}" + _SEP + r"?\d{4}"
    r"|(?:\+82[ .-]?)?\(?0(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|50\d)\)?" + _SEP + r"?\d{3,4}" + _SEP + r"?\d{4}"
    r"|1(?:5[4-9]|6\d|8\d)\d[ ]?-[ ]?\d{4}"
    r")(?![\d])"
)
_BANK_WORDS = ("계좌|은행|뱅크|국민|신한|우리|하나|농협|기업|카뱅|케뱅|토스|새마을|우체국|신협|수협|씨티|SC|산업|"
               "부산|대구|경남|광주|전북|제주|입금|송금|이체")
# account: dash-separated groups; or a bank word, up to 12 non-digit characters, then 10-14 digits optionally
# separated by single spaces or dashes (only the number is replaced); or, without a bank word, the shape of a
# well-known account (카카오뱅크 3333-XX-XXXXXXX, 토스뱅크 1000-XXXX-XXXX, 우리 1002-XXX-XXXXXX,
# 신한 110-XXX-XXXXXX) written with spaces or nothing between the groups
_ACCOUNT = (r"(?<![\d-])\d{2,6}(?:-\d{2,7}){2,3}(?![\d-])"
            r"|(?:" + _BANK_WORDS + r")[^\d\n]{0,12}?(?<![\d-])\d(?:[ -]?\d){9,13}(?![\d-])"
            r"|(?P<account_shape>(?<![\d-])(?:33(?:33|55|88)[ ]?\d{2}[ ]?\d{7}|1002[ ]?\d{3}[ ]?\d{6}"
            r"|1000[ ]?\d{4}[ ]?\d{4}|110[ ]?\d{3}[ ]?\d{6})(?![\d-]))")

# -------------------------------------------------------------------------------------------------- addresses
# Korean road (도로명) and lot (지번) addresses: a province / metropolitan city (서울시, 경기도, 부산광역시) or a
# 시·군·구 name, up to two more 시·군·구, then a road (…로, …대로, …길, …번길) or a 동/리/가 and a building or lot
# number, then optionally 동 / 호 / 층 details and a bracketed 동 name. Not after a bare 시·군·구 word that is an
# everyday word (친구, 입구, 역시: a one-syllable stem only for 중·동·서·남·북구); the number must not be a count,
# time or amount (``3시``, ``2개``, ``5명``).
_PROVINCE = ("서울|부산|대구|인천|광주|대전|울산|세종|경기|강원|충북|충남|전북|전남|경북|경남|제주|"
             "충청북|충청남|전라북|전라남|경상북|경상남")
_ADDR_UNIT = r"(?:[가-힣]{2,5}|[중동서남북])(?:시|군|구)"
_ADDR_ROAD = r"[가-힣A-Za-z0-9]{0,14}[가-힣A-Za-z0-9](?:대로|(?<!으)로|길)(?:[ ]?\d{1,4}번?(?:길|가))?"
_ADDR_LOT = r"[가-힣0-9]{1,10}(?:동|리|가)"
_ADDR_NUM = (r"\d{1,5}(?:-\d{1,5})?(?:번지)?(?![\d]|[.,]\d|[ ]?(?:시|분|초|개|명|원|번|일|월|년|회|차|살|세|km|%|등|위|"
             r"점|배|마리|권|잔|병|장|대|kg|g\b))")
_ADDR_DETAIL = r"(?:,?[ ]?\d{1,4}동|,?[ ]?\d{1,3}층|,?[ ]?\d{1,5}호(?!선)|[ ]?\([가-힣0-9, ]{1,20}\))*"
_ADDRESS = (
    r"(?<![가-힣])(?:(?:" + _PROVINCE + r")(?:특별자치시|특별자치도|특별시|광역시|도|시)?(?:[ ]" + _ADDR_UNIT + r"){0,2}"
    r"|" + _ADDR_UNIT + r"(?:[ ]" + _ADDR_UNIT + r")?)"
    r"[ ](?:" + _ADDR_ROAD + r"|" + _ADDR_LOT + r")[ ]?" + _ADDR_NUM + _ADDR_DETAIL
    # an apartment unit on its own: 101동 1203호
    + r"|(?<![\d가-힣])\d{1,4}동[ ]?\d{1,5}호(?!선)"
)
_ADDRESS_HINT = r"(?:로|길|동|리|가)[ ]?\d|\d동[ ]?\d"

_GENERIC_MENTION = r"(?<![A-Za-z0-9._%+-])@[^\s@]{1,20}"

_SURNAMES = set("김이박최정강조윤장임한오서신권황안송류유전홍고문양손배백허남심노하곽성차주우구민진나지엄채원천방공현함변"
                "염여추도소석선설마길연위표명기반왕금옥육인맹제모탁국어은편용예경봉사부")
# given names that are also everyday words: masked only before a vocative / honorific
_COMMON_WORDS = {"하나", "나라", "사랑", "하늘", "바다", "가을", "여름", "겨울", "보람", "슬기", "지혜", "은혜", "기쁨",
                 "소망", "다운", "한결", "노을", "누리", "나래", "고운", "미래", "다인", "우리", "영원", "진주", "보배",
                 "구름", "새벽", "초롱", "이슬", "봄이", "별이"}
_VOCATIVE = r"(?=아|야|씨|님|이[가야는랑]|형|오빠|언니|누나|쌤|선배|후배)"
# a nickname like "ㅋㅋ" or "1004" is no identifying word and masking it would eat laughter and numbers
_NOT_A_WORD = re.compile(r"[\u3131-\u318e\d\W_]+")
# names that are placeholders, not people
_NOT_NAMES = {"(알 수 없음)", "(알수없음)", "알 수 없음", "알수없음", "회원님", "you", "You", "Unknown"}


def _trie_regex(words: Iterable[str]) -> str:
    """A regex alternation of ``words`` factored into a trie (fast for hundreds of names; longest match first)."""
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict) -> str:
        end = "" in node
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if end:
            return "(?:" + body + ")?"
        return body

    return build(trie)


_URL = _url_pattern(_trie_regex)


def name_variants(name: str) -> tuple[set[str], set[str]]:
    """(always-masked variants, vocative-only variants) of a speaker name for in-text masking.

    ``이도현(Leo)`` → {``이도현(Leo)``, ``이도현``, ``Leo``, ``도현``}; ``김하나`` → ({``김하나``}, {``하나``}).
    Variants shorter than two characters are never masked (``나`` must stay a word), nor variants made only of
    jamo, digits or symbols (a nickname ``ㅋㅋ`` must not eat every laugh).
    """
    name = unicodedata.normalize("NFC", name.strip())
    always: set[str] = set()
    vocative: set[str] = set()
    if not name or name in _NOT_NAMES:
        return always, vocative
    bases = {name}
    inner = re.findall(r"[(\[{]([^)\]}]+)[)\]}]", name)
    bases.update(part.strip() for part in inner)
    outer = re.sub(r"[(\[{][^)\]}]*[)\]}]", " ", name).strip()
    bases.add(outer)
    cleaned = set()
    for base in bases:
        # strip decoration (emoji, symbols, punctuation) at the ends: "달빛♡" -> "달빛"
        base = re.sub(r"^[\W_]+|[\W_]+$", "", base)
        if base:
            cleaned.add(base)
    for base in list(cleaned):
        parts = base.split()
        if len(parts) > 1:
            if all(re.fullmatch(r"[가-힣]+", part) for part in parts) and len("".join(parts)) <= 4:
                cleaned.add("".join(parts))  # "김 민준" is also written "김민준"
            # a Latin first or last name on its own ("John" of "John Park"); Korean words of a multi-word
            # nickname ("오늘도 맑음") are everyday words and stay
            cleaned.update(part for part in parts if re.fullmatch(r"[A-Za-z][A-Za-z'-]{2,}", part))
    for base in cleaned | {name}:
        if len(base) >= 2 and not _NOT_A_WORD.fullmatch(base):
            always.add(base)
        if re.fullmatch(r"[가-힣]{3}", base) and base[0] in _SURNAMES:
            given = base[1:]
            (vocative if given in _COMMON_WORDS else always).add(given)
    return always, vocative - always


class PiiMasker:
    """Compiled masking rules for one run. ``mask(text)`` returns the text with markers; ``counts`` accumulates
    how many of each class were replaced (keys: the PII classes plus ``name`` for in-text speaker names)."""

    def __init__(self, cfg: PiiConfig | None = None, names: Iterable[str] = ()):
        cfg = cfg or PiiConfig()
        self.counts: Counter = Counter()
        self.markers = {pii_class: placeholder_marker(pii_class) for pii_class in PII_CLASSES}
        enabled = {pii_class: bool(getattr(cfg, pii_class)) for pii_class in PII_CLASSES}
        always: set[str] = set()
        vocative: set[str] = set()
        if enabled["mention"]:
            for name in names:
                always_variants, vocative_variants = name_variants(name)
                always |= always_variants
                vocative |= vocative_variants
            vocative -= always
        mention_names = sorted(always | vocative, key=len, reverse=True)
        # Separate passes, each behind a cheap pre-check, in this order: e-mail, URL, address, numbers (one
        # alternation: leftmost match wins, ties in the order rrn, card, phone, account), @mentions, names in text.
        # Earlier passes turn their match into a marker, so later passes never see it.
        self._email = re.compile(f"(?P<email>{_EMAIL})") if enabled["email"] else None
        self._email_hint = re.compile(_EMAIL_HINT).search
        self._url = re.compile(f"(?P<url>{_URL})", re.IGNORECASE) if enabled["url"] else None
        self._url_hint = re.compile(r"://|[^\W_]\.[^\W\d_]").search
        self._address = re.compile(f"(?P<address>{_ADDRESS})") if enabled["address"] else None
        self._address_hint = re.compile(_ADDRESS_HINT).search
        self._digit = re.compile(r"\d").search
        # every number class needs 7+ digits (1588-1234, 950505-2******, 02-123-4567): most messages with a digit
        # ("3시", "15,000원") skip the number pass
        self._seven_digits = re.compile(r"\d(?:\D*\d){6}").search
        number_classes = (("rrn", _RRN), ("card", _CARD), ("phone", _PHONE), ("account", _ACCOUNT))
        numbers = [f"(?P<{pii_class}>{pattern})" for pii_class, pattern in number_classes if enabled[pii_class]]
        self._numbers = re.compile("|".join(numbers)) if numbers else None
        self._mention = self._names = self._names_latin = None
        self._latin_hint = re.compile("[A-Za-z]").search
        if enabled["mention"]:
            known = f"(?P<mention_known>@[ ]?{_trie_regex(mention_names)})|" if mention_names else ""
            self._mention = re.compile(f"{known}(?P<mention>{_GENERIC_MENTION})")
            # no look-behind in the pattern (it would defeat re's first-character scan): _sub checks the left edge
            # names with Latin letters match in any case, in their own pass (IGNORECASE slows re down)
            latin = {name for name in always if re.search("[A-Za-z]", name)}
            names = []
            if always - latin:
                names.append(f"(?P<name>{_trie_regex(sorted(always - latin))})")
            if vocative:
                names.append(f"(?P<name_voc>{_trie_regex(sorted(vocative))}{_VOCATIVE})")
            self._names = re.compile("|".join(names)) if names else None
            if latin:
                self._names_latin = re.compile(f"(?P<name>{_trie_regex(sorted(latin, key=str.lower))})",
                                               re.IGNORECASE)

    def _sub(self, match: re.Match) -> str:
        kind = match.lastgroup
        text = match.group(0)
        if kind == "url":
            trimmed = text.rstrip(".,!?;:)]}'\"~")
            tail = text[len(trimmed):]
            if not trimmed:
                return text
            if match.group("url_scheme") is None and not _bare_host_is_link(trimmed):
                return text
            self.counts["url"] += 1
            return self.markers["url"] + tail
        if kind == "address":
            trimmed = text.rstrip(", ")
            self.counts["address"] += 1
            return self.markers["address"] + text[len(trimmed):]
        if kind == "card":
            digits = re.sub(r"\D", "", text)
            if len(digits) in (15, 16) and text.isdigit() and not _luhn_ok(digits):
                return text
        if kind == "account":
            if match.group("account_shape") is not None:
                if len(set(text[4:]) - {" "}) < 4:
                    return text  # 100000000000 is an amount, not a 토스뱅크 account
                self.counts["account"] += 1
                return self.markers["account"]
            if text[0].isdigit():
                digits = text.replace("-", "")
                groups = text.split("-")
                if not 10 <= len(digits) <= 14 or _date_like(groups):
                    return text
                self.counts["account"] += 1
                return self.markers["account"]
            # bank word + digits: keep the words, replace the digits
            num = re.search(r"\d[\d -]*$", text)
            self.counts["account"] += 1
            return text[: num.start()] + self.markers["account"]
        if kind in ("name", "name_voc"):
            start, end = match.span()
            whole = match.string
            if start and (whole[start - 1].isalnum() or whole[start - 1] in "_\ue000"):
                return text  # inside a word: "하늘" in "밤하늘"
            if (text[-1].isascii() and text[-1].isalnum() and end < len(whole) and whole[end].isascii()
                    and whole[end].isalnum()):
                return text  # "Leo" inside "Leonard"
            self.counts["name"] += 1
            return self.markers["mention"]
        if kind == "mention_known":
            self.counts["mention"] += 1
            return self.markers["mention"]
        if kind == "mention":
            self.counts["mention"] += 1
            return self.markers["mention"]
        self.counts[kind] += 1
        return self.markers[kind]

    def _maybe_spelled_at(self, text: str) -> bool:
        """``name (at) example.com`` / ``name(골뱅이)…`` / fullwidth ＠ (substring tests first: most text has none)."""
        return ("at" in text or "AT" in text or "At" in text or "＠" in text or "골뱅이" in text) \
            and self._email_hint(text) is not None

    def mask(self, text: str) -> str:
        """Passes in this order, each behind a cheap pre-check: e-mail, URL, address, numbers (one alternation:
        leftmost match wins, ties in the order rrn, card, phone, account), @mentions, names, Latin-letter names. A pass
        turns its matches into markers, so later passes never see them."""
        sub = self._sub
        if self._email is not None and ("@" in text or self._maybe_spelled_at(text)):
            text = self._email.sub(sub, text)
        if self._url is not None and "." in text and self._url_hint(text):
            text = self._url.sub(sub, text)
        if self._digit(text):
            if self._address is not None and self._address_hint(text):
                text = self._address.sub(sub, text)
            if self._numbers is not None and self._seven_digits(text):
                text = self._numbers.sub(sub, text)
        if self._mention is not None and "@" in text:
            text = self._mention.sub(sub, text)
        if self._names is not None:
            text = self._names.sub(sub, text)
        if self._names_latin is not None and self._latin_hint(text):
            text = self._names_latin.sub(sub, text)
        return text


def _bare_host_is_link(text: str) -> bool:
    """A bare ``host.tld[/path]`` is a link when it has a path or a sub-domain, or when its TLD is no everyday
    word or file extension (``Mr.Kim``, ``main.py`` and ``자료.zip`` stay text; ``kko.to/x`` and ``example.store``
    with a path or sub-domain do not)."""
    host = re.split(r"[/?#]", text, maxsplit=1)
    if len(host) > 1 or host[0].count(".") > 1:
        return True
    return _standalone(host[0].rsplit(".", 1)[-1])


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _date_like(groups: list[str]) -> bool:
    """2024-01-15-0930 style stamps are not account numbers."""
    if len(groups) >= 3 and len(groups[0]) == 4 and groups[0][:2] in ("19", "20"):
        return len(groups[1]) <= 2 and 1 <= int(groups[1]) <= 12
    return False


def mask_pii(text: str, cfg: PiiConfig | None = None, names: Iterable[str] = ()) -> tuple[str, Counter]:
    """One-off convenience: ``(masked text, counts)``; build a :class:`PiiMasker` once for many texts."""
    masker = PiiMasker(cfg, names)
    return masker.mask(text), masker.counts
