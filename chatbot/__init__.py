"""kakaotalk-chatbot: turn your own KakaoTalk exports into a private, local chatbot."""

__version__ = "0.1.0"
