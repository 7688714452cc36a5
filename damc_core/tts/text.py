"""Text handling for TTS: which language a text is in, whether it can be spoken, Mandarin to numbered pinyin."""

from __future__ import annotations

from damc_core.errors import InputError


class TextInputError(InputError, ValueError):
    """A text that cannot be spoken."""


def is_chinese_character(character: str) -> bool:
    """True for CJK unified ideographs (the characters of Mandarin text)."""
    return "\u4e00" <= character <= "\u9fff" or "\u3400" <= character <= "\u4dbf"


def detect_language(text: str) -> str:
    """'zh' when the text contains Chinese characters, else 'en'."""
    return "zh" if any(is_chinese_character(character) for character in text) else "en"


def check_language(text: str, language: str) -> None:
    """TextInputError for Chinese characters to be spoken as English: English voices read each one as "Chinese
    letter"."""
    if language == "en" and detect_language(text) == "zh":
        raise TextInputError(f"text {text!r} is written in Chinese characters but its language is 'en' (an English "
                             f"voice would read each character as \"Chinese letter\"): give the language zh")


def check_speakable(text: str) -> str:
    """The text stripped, or TextInputError when it has nothing to say (no letters, digits or characters)."""
    stripped = text.strip()
    if not any(character.isalnum() for character in stripped):
        raise TextInputError(f"text {text!r} has no speakable characters")
    return stripped


def numbered_pinyin(text: str) -> str:
    """Mandarin text as tone-numbered pinyin ('ni3 hao3'), which espeak-ng's cmn-latn-pinyin voice reads correctly;
    non-Chinese runs (punctuation, Latin words) are kept."""
    from pypinyin import Style, lazy_pinyin  # ~0.3 s to load: only when Mandarin is spoken

    return " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))
