"""Folds a character-vocabulary CTC model's per-frame probabilities onto Mandarin pinyin initials and finals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from pypinyin import Style, pinyin
from pypinyin.contrib.tone_convert import to_finals, to_initials, to_normal

INITIALS: tuple[str, ...] = (
    "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "zh", "ch", "sh", "r", "z", "c", "s",
)
"""The 21 initials of pypinyin's strict mode; y and w are spelling, not initials (yi is the final i, wo is uo)."""

FINALS: tuple[str, ...] = (
    "a", "o", "e", "ê", "er", "ai", "ei", "ao", "ou", "an", "en", "ang", "eng", "ong",
    "i", "ia", "ie", "iao", "iou", "ian", "in", "iang", "ing", "iong",
    "u", "ua", "uo", "uai", "uei", "uan", "uen", "uang", "ueng",
    "v", "ve", "van", "vn",
    "m", "n", "ng",
)
"""Tone-less finals: the 37 that pypinyin's strict Style.FINALS produces (ü written v, ê only for 欸 / 誒), then the
syllabic nasals m, n, ng of SYLLABIC_NASALS."""

SYLLABIC_NASALS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"m": ("", "m"), "n": ("", "n"), "ng": ("", "ng"), "hm": ("h", "m"), "hng": ("h", "ng")}
)
"""(initial, final) of the interjection readings made of nasals alone (呣 ḿ, 嗯 ń ńg, 噷 hm, 哼 hng), keyed by the
tone-less reading. pypinyin's strict mode gives these no final (and an initial m or n for some of them), which would
leave them nowhere to go, so they are split here instead: the nasal is the final, a leading h the initial."""

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "|")
"""The special tokens of a wav2vec2-style CTC vocabulary, as standin_vocab() puts them first."""

_INITIAL_UNITS = tuple(f"{initial}-" for initial in INITIALS)
_FINAL_UNITS = tuple(f"-{final}" for final in FINALS)

_STANDIN_TEXT = (
    "今天早上我七点起床，洗脸刷牙以后去楼下的小店买了两个包子和一杯热豆浆。"
    "天气很好，阳光照在街上，路边的树长出了新的叶子。"
    "我坐地铁去公司上班，车上人很多，大家都在看手机或者听音乐。"
    "到了公司，我先打开电脑看看邮件，然后和同事一起开会，讨论这个月的工作计划。"
    "经理说这件事情很重要，我们必须在周五之前完成。"
    "中午我们去附近的饭馆吃饭，我点了一碗牛肉面，味道还不错，价格也不贵。"
    "下午我给一位老朋友打电话，他最近刚从北京回来，想约我周末一起去爬山。"
    "我说好啊，正好我也想出去走走，放松一下。"
    "下班以后我去银行办了点事，又到超市买了些水果、鸡蛋和蔬菜。"
    "回家的路上下起了小雨，我没带伞，只好在商店门口等了一会儿。"
    "晚上我自己做饭，妈妈打来视频电话，问我工作忙不忙，身体怎么样，让我多穿衣服别感冒。"
    "我告诉她一切都很好，请她放心。"
    "吃完饭我看了一会儿书，书里讲的是一个年轻人离开家乡到城市里奋斗的故事，"
    "他遇到了很多困难，但是从来没有放弃，最后终于实现了自己的理想。"
    "我觉得这个故事很有意思，也让我想起了刚来这里的时候。"
    "那时候我什么都不懂，每天都很紧张，现在已经习惯了这里的生活。"
    "孩子们在楼下的公园里唱歌跳舞，老人们坐在长椅上聊天，还有人在河边散步钓鱼。"
    "为了明天能有精神，我十点就关灯睡觉了。"
    "周末的早晨空气特别清新，我和朋友骑自行车穿过城市，看见学生们在操场上踢足球，医生和护士在医院门口排队打针。"
    "春天花开得很美，夏天太热，秋天的风很凉快，冬天北方常常下雪。"
    "请问你喜欢哪个季节？我最喜欢秋天，因为不冷也不热。"
)


@dataclass(frozen=True, eq=False)
class PinyinProjection:
    """A linear map from a CTC model's vocabulary onto pinyin units; build it with build_projection()."""

    units: tuple[str, ...]
    """Unit names: the initials as 'b-' ... 's-', the finals as '-a' ... '-ng' (all of them, used or not), then each
    kept token under its own text."""

    matrix: np.ndarray
    """float32 (vocab_size, len(units)); row i spreads the probability of token i over the units and sums to 1."""

    def __post_init__(self) -> None:
        if self.matrix.dtype != np.float32 or self.matrix.shape[1:] != (len(self.units),):
            raise ValueError(
                f"matrix must be float32 of shape (vocab_size, {len(self.units)}), "
                f"got {self.matrix.dtype} {self.matrix.shape}"
            )
        self.matrix.flags.writeable = False

    @property
    def num_units(self) -> int:
        """The feature dimension: how many units the vocabulary's probabilities are folded onto."""
        return len(self.units)

    @property
    def vocab_size(self) -> int:
        """How many tokens (logits per frame) the projection expects."""
        return self.matrix.shape[0]


def char_readings(token: str) -> list[str]:
    """pypinyin's tone-marked readings of a one-character token, heteronyms included; [] for anything it cannot read."""
    if len(token) != 1:
        return []
    found = pinyin(token, style=Style.TONE, heteronym=True, errors="ignore")
    return found[0] if found else []


def split_reading(reading: str) -> tuple[str, str]:
    """(initial, final) of one pinyin reading in strict mode, initial '' when there is none: 'hǎo' -> ('h', 'ao')."""
    nasal = SYLLABIC_NASALS.get(to_normal(reading))
    initial, final = nasal if nasal else (to_initials(reading, strict=True), to_finals(reading, strict=True))
    if initial not in ("", *INITIALS) or final not in FINALS:
        raise ValueError(f"pinyin reading {reading!r} splits into {initial!r} + {final!r}, not an initial and final")
    return initial, final


def build_projection(vocab: Sequence[str]) -> PinyinProjection:
    """The projection of a CTC vocabulary (vocab[i] is the token of logit i) onto pinyin initials and finals.

    A one-character token that pypinyin can read spreads its probability evenly over its readings; each reading's share
    goes half to its initial and half to its final, or wholly to its final when it has no initial. Every other token
    (special tokens, letters, digits, punctuation, longer tokens, characters pypinyin does not know) keeps its own unit.
    All initials and finals are units whether the vocabulary uses them or not, so the feature dimension is
    len(INITIALS) + len(FINALS) plus the number of kept tokens.
    """
    if len(set(vocab)) != len(vocab):
        raise ValueError("the vocabulary has duplicate tokens")
    readings = [char_readings(token) for token in vocab]
    kept = tuple(token for token, found in zip(vocab, readings, strict=True) if not found)
    clashes = sorted(set(kept) & {*_INITIAL_UNITS, *_FINAL_UNITS})
    if clashes:
        raise ValueError(f"tokens {clashes} would share a name with pinyin units")
    units = _INITIAL_UNITS + _FINAL_UNITS + kept
    column = {unit: index for index, unit in enumerate(units)}
    matrix = np.zeros((len(vocab), len(units)), dtype=np.float32)
    for row, (token, found) in enumerate(zip(vocab, readings, strict=True)):
        for unit, weight in (_reading_weights(found) if found else {token: 1.0}).items():
            matrix[row, column[unit]] = weight
    return PinyinProjection(units=units, matrix=matrix)


def project(probabilities: np.ndarray, projection: PinyinProjection) -> np.ndarray:
    """(frames, vocab_size) per-frame token probabilities -> (frames, num_units) unit probabilities, float32."""
    _check_frames(probabilities, projection, "probabilities")
    return np.asarray(probabilities, dtype=np.float32) @ projection.matrix


def project_logits(logits: np.ndarray, projection: PinyinProjection) -> np.ndarray:
    """(frames, vocab_size) CTC logits -> (frames, num_units) unit probabilities, via a numerically stable softmax."""
    _check_frames(logits, projection, "logits")
    logits = np.asarray(logits, dtype=np.float64)
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return project(exponentials / exponentials.sum(axis=1, keepdims=True), projection)


def standin_vocab() -> list[str]:
    """A small realistic character vocabulary: SPECIAL_TOKENS, then the 300 characters of a paragraph of everyday
    Mandarin in order of first appearance (polyphonic ones such as 行 长 了 的 还 重 好 乐 和 为 among them)."""
    return [*SPECIAL_TOKENS, *(char for char in dict.fromkeys(_STANDIN_TEXT) if char_readings(char))]


def _reading_weights(readings: Sequence[str]) -> dict[str, float]:
    """Unit -> weight for a character with these readings; the weights sum to 1."""
    weights: dict[str, float] = {}
    for reading in readings:
        initial, final = split_reading(reading)
        parts = (f"{initial}-", f"-{final}") if initial else (f"-{final}",)
        for unit in parts:
            weights[unit] = weights.get(unit, 0.0) + 1.0 / (len(readings) * len(parts))
    return weights


def _check_frames(array: np.ndarray, projection: PinyinProjection, name: str) -> None:
    shape = np.shape(array)
    if len(shape) != 2 or shape[1] != projection.vocab_size:
        raise ValueError(f"{name} must have shape (frames, {projection.vocab_size}) for this vocabulary, got {shape}")
