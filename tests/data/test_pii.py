"""PII masking: every class is caught in invented examples, ordinary numbers/times/dates/prices survive."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.config import PiiConfig
from chatbot.data.pii import PII_CLASSES, PiiMasker, mask_pii, name_variants
from chatbot.data.tokenizer import placeholder_marker

M = {c: placeholder_marker(c) for c in PII_CLASSES}

POSITIVE = [
    ("phone", "내 번호 010-2345-6789 이야", "010-2345-6789"),
    ("phone", "번호는01023456789", "01023456789"),
    ("phone", "+82 10-8765-4321 로 연락 줘", "8765-4321"),
    ("phone", "010 2345 6789", "2345 6789"),
    ("phone", "010.2345.6789", "2345.6789"),
    ("phone", "사무실 02-765-4321", "765-4321"),
    ("phone", "031-765-4321 로 전화", "765-4321"),
    ("phone", "070-8765-4321", "8765-4321"),
    ("phone", "고객센터 1588-7654", "1588-7654"),
    ("email", "메일은 sun.moon+chat@example.co.kr 로 보내", "sun.moon+chat@example.co.kr"),
    ("email", "메일은abc_12@mail.example.com 이야", "abc_12@mail.example.com"),
    ("url", "링크 https://example.com/path?q=1&x=2 봐봐", "example.com/path"),
    ("url", "www.example.org/abc 에서 봤어", "example.org"),
    ("url", "blog.example.com/someone/1234에서 봤어", "blog.example.com"),
    ("url", "short.example.me/xYz12 눌러봐", "xYz12"),
    ("rrn", "주민번호 900101-1234567 이거 맞아?", "900101-1234567"),
    ("rrn", "8512312345678", "8512312345678"),
    ("rrn", "생년 950505-2****** 로 적어", "950505-2"),
    ("card", "카드 1234-5678-9012-3456 으로 결제", "9012-3456"),
    ("card", "4111 1111 1111 1111", "1111 1111"),
    ("card", "4111111111111111", "4111111111111111"),
    ("card", "아멕스 3782 822463 10005", "822463"),
    ("account", "국민 123456-78-901234 로 보내줘", "901234"),
    ("account", "카뱅 3333-01-1234567 입금", "1234567"),
    ("account", "110-123-456789 신한이야", "456789"),
    ("account", "신한 110123456789 으로 입금해줘", "110123456789"),
    ("account", "계좌번호: 98765432101", "98765432101"),
    ("account", "카카오뱅크 3333 01 7654321 로 부탁", "7654321"),
    ("account", "농협 302-1234-5678-11", "5678-11"),
    ("url", "WWW.EXAMPLE.COM 들어가봐", "EXAMPLE"),
    ("url", "kko.to/AbCd12 눌러", "AbCd12"),
    ("mention", "@박서진 내일 몇 시에 봐?", "박서진"),
    ("mention", "@모르는사람 안녕", "모르는사람"),
    # issue 11: forms the first rules missed (all invented)
    ("phone", "번호 (010)2345-6789 로", "2345-6789"),
    ("phone", "010 - 2345 - 6789 이야", "2345"),
    ("phone", "010_2345_6789", "2345_6789"),
    ("phone", "010/2345/6789", "2345/6789"),
    ("phone", "(02)765-4321 사무실", "765-4321"),
    ("url", "http://예시.com/경로 들어가봐", "예시"),
    ("url", "한글도메인.한국/경로 여기", "한글도메인"),
    ("url", "shop.example.store/item 에서 샀어", "example.store"),
    ("url", "www.예시.kr 가봐", "예시"),
    ("url", "예시.com 이야", "예시"),
    ("url", "https://ko.example.org/wiki/서울 참고", "서울"),
    ("email", "메일 name (at) example.com 으로", "example.com"),
    ("email", "sun.moon[at]example.co.kr", "example.co.kr"),
    ("email", "구글은 name@gmail 이야", "name@gmail"),
    ("email", "abc(골뱅이)example.com", "example.com"),
    ("account", "3333011234567 로 보내", "3333011234567"),
    ("account", "1002 345 678901 우리", "678901"),
    ("account", "1000 2345 6789 토스", "2345 6789"),
    ("address", "서울시 강남구 테헤란로 123 으로 와", "테헤란로"),
    ("address", "경기도 성남시 분당구 판교역로 235, 101동 1203호", "1203호"),
    ("address", "부산광역시 해운대구 우동 1234-5", "우동"),
    ("address", "강남구 역삼로7길 12 (역삼동)", "역삼로"),
    ("address", "우리 집 101동 1203호야", "1203호"),
]

NEGATIVE = [
    "오늘 점심 15,000원 나왔어",
    "총 1,250,000원이야",
    "3시 30분에 보자",
    "10:30 어때? 아니면 9:05",
    "2024-01-15 에 만나",
    "2024.1.15 (월)",
    "1999-2003년에 다녔어",
    "2024-01-15-1030 로그",
    "1234 번 버스 타",
    "12.99달러래",
    "v1.2.3 버전 나왔다",
    "인증번호 123456",
    "총 100000000원 확인",
    "주문번호 2024011512345",
    "010 아니고 011이었어",
    "5명이서 2시간 동안 3잔씩",
    "ㅋㅋㅋㅋ 진짜? ^^ ~~",
    "Node.js 써봐",
    "오후 12:00 정각",
    "키 175.5 몸무게 68.2",
    "50% 할인 3+1",
    "입금 완료 30000원 2024 01 15",
    "송금했어 5만원",
]


@pytest.mark.parametrize("cls,text,secret", POSITIVE)
def test_each_class_is_masked(cls, text, secret):
    masked, counts = mask_pii(text, names=["박서진"])
    assert M[cls] in masked, masked
    assert secret not in masked
    assert counts[cls] >= 1


ORDINARY = Path(__file__).resolve().parents[1] / "fixtures" / "pii" / "ordinary_ko.txt"


def ordinary_lines() -> list[str]:
    lines = ORDINARY.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_ordinary_sentences_pass_through_unchanged():
    """The false-positive corpus (times, prices, scores, dates, versions, counts, file names, places): 0 %."""
    masker = PiiMasker(names=["박서진"])
    lines = ordinary_lines()
    changed = [(line, masker.mask(line)) for line in lines if masker.mask(line) != line]
    assert len(lines) >= 100
    assert changed == [], f"false-positive rate {len(changed)}/{len(lines)}: {changed[:5]}"


def test_an_address_keeps_the_words_around_it():
    masked, counts = mask_pii("주소는 서울시 강남구 테헤란로 123, 3층 이에요. 와요!")
    assert masked == f"주소는 {M['address']}, 이에요. 와요!" or masked == f"주소는 {M['address']} 이에요. 와요!"
    assert counts["address"] == 1


def test_url_keeps_korean_glued_after_an_ascii_link():
    assert mask_pii("https://example.com/path에서 봐")[0] == M["url"] + "에서 봐"
    assert mask_pii("네이버는naver.com 이야")[0] == f"네이버는{M['url']} 이야"


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_numbers_survive(text):
    masked, counts = mask_pii(text, names=["박서진"])
    assert masked == text
    assert sum(counts.values()) == 0


@pytest.mark.parametrize("cls", PII_CLASSES)
def test_each_class_can_be_switched_off(cls):
    examples = {c: t for c, t, _ in reversed(POSITIVE)}  # first example of each class
    off = PiiMasker(PiiConfig(**{cls: False}), names=["박서진"])
    on = PiiMasker(PiiConfig(), names=["박서진"])
    text = examples[cls]
    assert M[cls] in on.mask(text)
    assert M[cls] not in off.mask(text)
    # the other classes stay on
    for other, sample in examples.items():
        if other != cls:
            assert M[other] in off.mask(sample), (other, sample)


def test_names_in_text_are_masked_without_eating_words():
    m = PiiMasker(names=["박서진", "이도윤(Leo)", "하늘", "김하나", "나"])
    assert m.mask("서진아 밥 먹자") == M["mention"] + "아 밥 먹자"
    assert m.mask("박서진 어디야") == M["mention"] + " 어디야"
    assert m.mask("Leo 왔어? Leonard 말고") == M["mention"] + " 왔어? Leonard 말고"
    assert m.mask("이도윤 도윤이 왔다") == f"{M['mention']} {M['mention']}이 왔다"
    assert m.mask("밤하늘 예쁘다") == "밤하늘 예쁘다"  # a name inside a word is not a name
    assert m.mask("하늘아 뭐해") == M["mention"] + "아 뭐해"
    assert m.mask("나는 괜찮아") == "나는 괜찮아"  # one-character names are never masked in text
    assert m.mask("사과 하나 줘") == "사과 하나 줘"  # a given name that is a common word ...
    assert m.mask("하나야 뭐해") == M["mention"] + "야 뭐해"  # ... only as a vocative
    assert m.counts["name"] == 7


def test_name_variants():
    always, vocative = name_variants("이도윤(Leo)")
    assert {"이도윤(Leo)", "이도윤", "Leo", "도윤"} <= always
    always, vocative = name_variants("김하나")
    assert always == {"김하나"} and vocative == {"하나"}
    assert name_variants("(알 수 없음)") == (set(), set())
    assert name_variants("나") == (set(), set())
    assert name_variants("ㅋㅋ") == (set(), set()) and name_variants("1004") == (set(), set())
    assert {"John Park", "John", "Park"} <= name_variants("John Park")[0]
    assert {"김 민준", "김민준", "민준"} <= name_variants("김 민준")[0]
    assert name_variants("오늘도 맑음")[0] == {"오늘도 맑음"}


def test_latin_names_match_any_case_but_not_inside_words():
    m = PiiMasker(names=["John Park"])
    assert m.mask("john 어디야? PARK 씨도") == f"{M['mention']} 어디야? {M['mention']} 씨도"
    assert m.mask("johnny parking") == "johnny parking"


def test_typed_marker_characters_cannot_be_forged():
    from chatbot.data.conversation import clean_text

    forged = placeholder_marker("url") + " 가짜"
    assert clean_text(forged) == "url 가짜"


def test_a_tokenizer_from_before_the_address_class_still_loads_and_encodes():
    """Processed data, checkpoints and artifacts made before <|address|> existed keep working: their tokenizer
    loads, and reply-time masking leaves addresses as text for them (as their model saw them in training)."""
    from tokenizers import pre_tokenizers, trainers

    from chatbot.data.tokenizer import encode_marked, load_tokenizer, new_tokenizer, train_tokenizer
    from chatbot.infer.prompt import TokenIds, pii_for_tokenizer
    from chatbot.tokens import LATER_TOKENS, MEDIA_TOKENS, PII_TOKENS, REQUIRED_TOKENS

    old = new_tokenizer()
    old.train_from_iterator(["서울시 강남구 테헤란로 123 오늘 뭐해"] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(REQUIRED_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = load_tokenizer(old.to_str(), is_json=True)
    assert all(tok.token_to_id(t) is None for t in LATER_TOKENS)
    ids = TokenIds.from_tokenizer(tok)
    assert len(ids.placeholders) == len(MEDIA_TOKENS) + len(PII_TOKENS) - len(LATER_TOKENS)
    cfg = pii_for_tokenizer(PiiConfig(), tok)
    assert cfg.address is False and cfg.phone is True
    text = "서울시 강남구 테헤란로 123 010-2345-6789"
    masked = PiiMasker(cfg).mask(text)
    assert M["phone"] in masked and M["address"] not in masked
    assert encode_marked(tok, masked)  # no "tokenizer lacks special token" error
    new = load_tokenizer(train_tokenizer(["가나다"] * 5, 300).to_str(), is_json=True)
    assert pii_for_tokenizer(PiiConfig(), new).address is True
