"""Tests for damc_core.audio.pinyin: folding CTC character probabilities onto pinyin initials and finals."""

from __future__ import annotations

import string
from collections import Counter

import numpy as np
import pytest
from pypinyin import Style, pinyin
from pypinyin.contrib.tone_convert import to_finals, to_initials, to_normal
from pypinyin.phrases_dict import phrases_dict
from pypinyin.pinyin_dict import pinyin_dict

from damc_core.audio.pinyin import (
    FINALS,
    INITIALS,
    SPECIAL_TOKENS,
    SYLLABIC_NASALS,
    PinyinProjection,
    build_projection,
    char_readings,
    project,
    project_logits,
    split_reading,
    standin_vocab,
)

PINYIN_UNIT_COUNT = 21 + 40
COMMON_CHARACTER_COUNT = 3500


@pytest.fixture(scope="module")
def dictionary_readings() -> set[str]:
    """Every distinct tone-marked reading pypinyin gives any character of its own dictionary."""
    return {
        reading
        for codepoint in pinyin_dict
        for reading in pinyin(chr(codepoint), style=Style.TONE, heteronym=True, errors="ignore")[0]
    }


@pytest.fixture(scope="module")
def zh_cn_vocab() -> list[str]:
    """Shaped like a zh-CN wav2vec2 CTC vocabulary: specials, Latin a-z, then the 3,500 characters found in the most
    phrases of pypinyin's phrase dictionary (a frequency proxy for the 3,500 common characters)."""
    counts = Counter(char for phrase in phrases_dict for char in phrase)
    characters = [char for char, _ in counts.most_common(COMMON_CHARACTER_COUNT)]
    return [*SPECIAL_TOKENS, *string.ascii_lowercase, *characters]


def row_of(projection: PinyinProjection, vocab: list[str], token: str) -> dict[str, float]:
    """The non-zero entries of `token`'s row, by unit name."""
    row = projection.matrix[vocab.index(token)]
    return {projection.units[column]: float(row[column]) for column in np.flatnonzero(row)}


def test_strict_pypinyin_splits_dictionary_readings_into_initials_and_finals(dictionary_readings: set[str]) -> None:
    """Every reading splits into INITIALS (or none) and FINALS, except the syllabic nasals, which get no final."""
    syllabic = {reading for reading in dictionary_readings if to_normal(reading) in SYLLABIC_NASALS}
    initials = {to_initials(reading, strict=True) for reading in dictionary_readings - syllabic}
    finals = {to_finals(reading, strict=True) for reading in dictionary_readings - syllabic}
    assert initials == {"", *INITIALS}
    assert finals == set(FINALS) - {"m", "n", "ng"}
    assert {to_finals(reading, strict=True) for reading in syllabic} == {""}
    assert {to_normal(reading) for reading in syllabic} == set(SYLLABIC_NASALS)


def test_split_reading_accepts_every_dictionary_reading(dictionary_readings: set[str]) -> None:
    parts = [split_reading(reading) for reading in dictionary_readings]
    assert {initial for initial, _ in parts} == {"", *INITIALS}
    assert {final for _, final in parts} == set(FINALS)


@pytest.mark.parametrize(
    ("reading", "parts"),
    [
        ("hǎo", ("h", "ao")),
        ("wǒ", ("", "uo")),
        ("yuán", ("", "van")),
        ("nǚ", ("n", "v")),
        ("lüè", ("l", "ve")),
        ("shì", ("sh", "i")),
        ("ér", ("", "er")),
        ("ê̄", ("", "ê")),
        ("ńg", ("", "ng")),
        ("m̀", ("", "m")),
        ("hng", ("h", "ng")),
    ],
)
def test_split_reading_known_answers(reading: str, parts: tuple[str, str]) -> None:
    assert split_reading(reading) == parts


def test_split_reading_rejects_a_non_syllable() -> None:
    with pytest.raises(ValueError, match="'xyz'"):
        split_reading("xyz")


def test_initial_and_final_names_are_distinct() -> None:
    assert len(INITIALS) == 21 and len(set(INITIALS)) == 21
    assert len(FINALS) == 40 and len(set(FINALS)) == 40


@pytest.mark.parametrize(
    ("char", "expected"),
    [
        ("好", {"h-": 1 / 2, "-ao": 1 / 2}),  # hǎo hào
        ("行", {"x-": 0.2, "-ing": 0.2, "h-": 0.3, "-ang": 0.2, "-eng": 0.1}),  # xíng háng héng xìng hàng
        ("爱", {"-ai": 1.0}),  # ài
        ("我", {"-uo": 1.0}),  # wǒ
        ("是", {"sh-": 1 / 4, "t-": 1 / 4, "-i": 1 / 2}),  # shì tí
        ("女", {"n-": 1 / 3, "-v": 1 / 3, "r-": 1 / 6, "-u": 1 / 6}),  # nǚ nǜ rǔ
        ("儿", {"-er": 2 / 3, "r-": 1 / 6, "-en": 1 / 6}),  # ér er rén
        ("嗯", {"-n": 1 / 2, "-ng": 1 / 2}),  # ń ńg ňg ǹg ň ǹ
        ("哼", {"h-": 1 / 2, "-eng": 1 / 4, "-ng": 1 / 4}),  # hēng hng
    ],
)
def test_character_rows_known_answers(char: str, expected: dict[str, float]) -> None:
    vocab = ["<pad>", char]
    row = row_of(build_projection(vocab), vocab, char)
    assert row.keys() == expected.keys()
    for unit, weight in expected.items():
        assert row[unit] == pytest.approx(weight, abs=1e-6), unit


def test_polyphonic_characters_spread_over_their_readings() -> None:
    """The readings pypinyin gives behind the known answers: a changed dictionary should fail here first."""
    assert char_readings("行") == ["xíng", "háng", "héng", "xìng", "hàng"]
    assert char_readings("好") == ["hǎo", "hào"]
    assert char_readings("a") == char_readings("。") == char_readings("你好") == []


def test_non_chinese_tokens_keep_their_own_units() -> None:
    others = [*SPECIAL_TOKENS, "a", "b", "m", "n", "A", "7", "。", "你好", "'"]
    vocab = ["好", *others, "爱"]
    projection = build_projection(vocab)
    assert projection.units[PINYIN_UNIT_COUNT:] == tuple(others)
    for token in others:
        assert row_of(projection, vocab, token) == {token: 1.0}


def test_units_are_initials_then_finals_then_kept_tokens() -> None:
    projection = build_projection(["<pad>", "我", "a", "|"])
    assert projection.units[:3] == ("b-", "p-", "m-")
    assert projection.units[18:21] == ("z-", "c-", "s-")
    assert projection.units[21:24] == ("-a", "-o", "-e")
    assert projection.units[-6:] == ("-m", "-n", "-ng", "<pad>", "a", "|")
    assert projection.num_units == len(projection.units) == len(set(projection.units)) == PINYIN_UNIT_COUNT + 3
    assert projection.vocab_size == 4
    assert projection.matrix.shape == (4, PINYIN_UNIT_COUNT + 3) and projection.matrix.dtype == np.float32


def test_feature_dimension_depends_only_on_the_kept_tokens() -> None:
    assert build_projection(["<pad>", "好"]).units == build_projection(["<pad>", *"今天气很"]).units


def test_zh_cn_vocab_rows_sum_to_one(zh_cn_vocab: list[str]) -> None:
    matrix = build_projection(zh_cn_vocab).matrix
    assert matrix.min() >= 0.0
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


def test_standin_vocab_unit_count() -> None:
    assert build_projection(standin_vocab()).num_units == PINYIN_UNIT_COUNT + len(SPECIAL_TOKENS) == 66


def test_zh_cn_vocab_unit_count(zh_cn_vocab: list[str]) -> None:
    projection = build_projection(zh_cn_vocab)
    assert len(zh_cn_vocab) == 5 + 26 + COMMON_CHARACTER_COUNT
    assert projection.units[PINYIN_UNIT_COUNT:] == (*SPECIAL_TOKENS, *string.ascii_lowercase)
    assert projection.num_units == 92


def test_standin_vocab() -> None:
    vocab = standin_vocab()
    characters = vocab[len(SPECIAL_TOKENS) :]
    assert tuple(vocab[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS == ("<pad>", "<s>", "</s>", "<unk>", "|")
    assert len(characters) == len(set(characters)) == 300
    assert characters[:4] == ["今", "天", "早", "上"]
    assert set("行长了的还重好乐和为") <= set(characters)
    assert all(len(char_readings(char)) >= 1 for char in characters)


def project_reference(probabilities: np.ndarray, projection: PinyinProjection) -> np.ndarray:
    """project() one frame, token and unit at a time."""
    frames, units = probabilities.shape[0], projection.num_units
    result = np.zeros((frames, units))
    for frame in range(frames):
        for token in range(projection.vocab_size):
            for unit in range(units):
                result[frame, unit] += probabilities[frame, token] * projection.matrix[token, unit]
    return result


def test_project_matches_a_loop_reference() -> None:
    projection = build_projection(standin_vocab()[:40])
    probabilities = np.random.default_rng(0).dirichlet(np.ones(40), size=6)
    projected = project(probabilities, projection)
    assert projected.shape == (6, projection.num_units) and projected.dtype == np.float32
    np.testing.assert_allclose(projected, project_reference(probabilities, projection), atol=1e-6)
    np.testing.assert_allclose(projected.sum(axis=1), 1.0, atol=1e-6)


def test_project_logits_is_project_of_the_softmax() -> None:
    projection = build_projection(standin_vocab())
    logits = np.random.default_rng(1).normal(scale=5.0, size=(8, projection.vocab_size))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    projected = project_logits(logits, projection)
    np.testing.assert_allclose(projected, project(softmax, projection), atol=1e-6)
    np.testing.assert_allclose(projected.sum(axis=1), 1.0, atol=1e-6)


def test_project_logits_is_stable_for_huge_logits() -> None:
    projection = build_projection(["<pad>", "好", "爱"])
    projected = project_logits(np.array([[1000.0, 1000.0, -1000.0], [0.0, 0.0, 5000.0]]), projection)
    first = dict(zip(projection.units, projected[0], strict=True))
    assert first["<pad>"] == pytest.approx(0.5) and first["h-"] == pytest.approx(0.25)
    assert first["-ao"] == pytest.approx(0.25) and first["-ai"] == 0.0
    assert projected[1, projection.units.index("-ai")] == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(4, 3), (4, 6), (5,), (2, 4, 5)])
def test_wrong_vocab_size_is_a_clear_error(shape: tuple[int, ...]) -> None:
    projection = build_projection(["<pad>", "好", "爱", "a", "我"])
    with pytest.raises(ValueError, match=r"shape \(frames, 5\)"):
        project(np.zeros(shape), projection)
    with pytest.raises(ValueError, match=r"shape \(frames, 5\)"):
        project_logits(np.zeros(shape), projection)


def test_duplicate_tokens_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        build_projection(["<pad>", "好", "<pad>"])


def test_tokens_named_like_pinyin_units_are_rejected() -> None:
    with pytest.raises(ValueError, match="'-a'"):
        build_projection(["<pad>", "-a"])


def test_projection_is_checked_and_read_only() -> None:
    with pytest.raises(ValueError, match="float32"):
        PinyinProjection(units=("a", "b"), matrix=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(vocab_size, 2\)"):
        PinyinProjection(units=("a", "b"), matrix=np.zeros((3, 3), dtype=np.float32))
    projection = build_projection(["<pad>", "好"])
    with pytest.raises(ValueError, match="read-only"):
        projection.matrix[0, 0] = 2.0
