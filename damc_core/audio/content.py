"""The Content-Aware Encoder E_c (paper 2.2): per-frame CTC logits or hidden states of an ASR model, or phones."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from tqdm import tqdm

from damc_core.errors import InputError
from damc_core.media import AUDIO_SAMPLE_RATE


STAND_IN = "stand-in"
"""Model name that selects the small random-init stand-in (well-formed features with no learned content)."""
POCKETSPHINX = "pocketsphinx"
"""Model name that selects CMU Sphinx's phone decoder (offline, real phones; 'pocketsphinx:<model folder>' names the
acoustic model, 'en-us' by default)."""
STAND_IN_SEED = 0
STAND_IN_DTYPE = torch.float64
"""The stand-in computes in double precision and its features are stored in single: CPU kernels for other instruction
sets (AVX2, AVX-512) or thread counts differ in the last bits of a result, 1e-16 in double, far below the float32
rounding step, so the embedded sample's features (and DVC hashes) are the same bytes on every machine."""

ENCODER_STRIDE = 320
"""Samples per encoder step (HuBERT / wav2vec2 convolutional front end: 20 ms at 16 kHz)."""
RECEPTIVE_FIELD = 400
"""Samples seen by one encoder step."""
STEPS_PER_FRAME = 2
"""Encoder steps per 25 fps video frame (50 Hz / 25 fps)."""
SAMPLES_PER_FRAME = ENCODER_STRIDE * STEPS_PER_FRAME
FRONT_PADDING = RECEPTIVE_FIELD // 2 + ENCODER_STRIDE // 2
"""Zeros put before the audio so that the two steps of video frame t are centred at t/25 s - 10 ms and + 10 ms:
step k sees padded samples [320 k, 320 k + 400), centred at 320 k + 200 - 360 in the original audio."""

ENGLISH_CTC_VOCAB = (
    "<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L",
    "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z",
)
"""The 32-token character vocabulary of facebook/hubert-large-ls960-ft (and wav2vec2-*-960h)."""

ContentOutput = Literal["logits", "hidden_states"]


class ContentEncoderUnavailable(InputError, RuntimeError):
    """The configured content encoder cannot be loaded (not cached, not downloadable, or not a CTC model), or cannot
    serve the configured language or content output."""


class ContentEncoder(Protocol):
    """E_c as its callers see it; load_content_encoder gives one."""

    @property
    def name(self) -> str:
        """What the feature meta records: load_content_encoder(name) loads the same encoder again."""

    @property
    def stand_in(self) -> bool:
        """True for a random-init stand-in, whose features carry no speech content."""

    def to(self, device: torch.device | str) -> None:
        """Run on `device` from now on, where the encoder has a model that can move."""

    def features(self, audio: np.ndarray, n_frames: int, language: str, output: ContentOutput, chunk_s: float,
                 context_s: float) -> ContentFeatures:
        """E_c of 16 kHz mono `audio`, one row per video frame (see content_features)."""


@dataclass(frozen=True)
class CTCEncoder:
    """A loaded CTC ASR model (HuBERT, wav2vec2, or the random-init stand-in) and what is needed to run it."""

    model: torch.nn.Module
    """A transformers *ForCTC model in eval mode."""
    name: str
    """Hub id or local path it was loaded from, or a labelled stand-in."""
    vocab: tuple[str, ...]
    """Token of each CTC logit."""
    normalize: bool
    """Whether the model expects zero-mean, unit-variance input (its feature extractor's do_normalize)."""
    stand_in: bool
    """True for the random-init stand-in."""

    def to(self, device: torch.device | str) -> None:
        """Move the model to `device`; the stand-in stays on the CPU in double precision, where its features are the
        same bytes on every machine (DVC hashes of the embedded sample)."""
        if not self.stand_in:
            self.model.to(device)

    def features(self, audio: np.ndarray, n_frames: int, language: str, output: ContentOutput, chunk_s: float,
                 context_s: float) -> ContentFeatures:
        """CTC logits (English), pinyin-unit posteriors (Mandarin, paper 3.5), or last hidden states."""
        projection = None
        if output == "logits" and language == "zh":
            from damc_core.audio.pinyin import build_projection, project_logits  # pypinyin loads in ~0.3 s

            if not any("\u4e00" <= token <= "\u9fff" for token in self.vocab):
                raise ContentEncoderUnavailable(
                    f"audio_features.language is 'zh' but {self.name!r} has no Chinese characters in its "
                    f"vocabulary; choose a character-vocabulary CTC model (e.g. "
                    f"jonatasgrosman/wav2vec2-large-xlsr-53-chinese-zh-cn)"
                )
            projection = build_projection(self.vocab)
        steps = encode(self, audio, n_frames, output, chunk_s, context_s)
        if output == "hidden_states":
            representation, units = "hidden_states", ()
        elif projection is not None:
            steps = project_logits(steps, projection)
            representation, units = "pinyin_posteriors", projection.units
        else:
            representation, units = "ctc_logits", self.vocab
        values = steps.reshape(n_frames, STEPS_PER_FRAME, -1).astype(np.float32)
        return ContentFeatures(values=values, representation=representation, units=tuple(units))


def load_content_encoder(name: str, language: str) -> ContentEncoder:
    """The encoder `name`: STAND_IN, POCKETSPHINX (or 'pocketsphinx:<model folder>'), or a CTC model's hub id or
    local directory."""
    if name == STAND_IN:
        return build_stand_in(language)
    if name == POCKETSPHINX or name.startswith(f"{POCKETSPHINX}:"):
        from damc_core.audio.phones import load_phone_encoder

        return load_phone_encoder(name, language)
    from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

    try:
        model = _from_pretrained(AutoModelForCTC, name)
        tokenizer = _from_pretrained(AutoTokenizer, name)
        extractor = _from_pretrained(AutoFeatureExtractor, name)
    except (OSError, ValueError) as error:
        raise ContentEncoderUnavailable(
            f"content encoder {name!r} could not be loaded: {error}\n"
            f"It is neither a local model directory nor in the Hugging Face cache, and could not be downloaded. "
            f"Where there is internet, run `huggingface-cli download {name} --local-dir models/{Path(name).name}` "
            f"and set audio_features.content_encoder to that directory; or set it to '{STAND_IN}' to run the "
            f"pipeline with a random-init stand-in (its features carry no speech content)."
        ) from error
    vocab = tuple(tokenizer.convert_ids_to_tokens(list(range(model.config.vocab_size))))
    return CTCEncoder(
        model=model.eval(), name=name, vocab=vocab,
        normalize=bool(getattr(extractor, "do_normalize", True)), stand_in=False,
    )


def _from_pretrained(factory, name: str):
    """Local files first (fast, offline); the hub only when that fails and HF_HUB_OFFLINE is not set."""
    try:
        return factory.from_pretrained(name, local_files_only=True)
    except OSError:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise
        return factory.from_pretrained(name)


def build_stand_in(language: str) -> CTCEncoder:
    """A small random-init HuBERT CTC model with the real front end (320-sample stride), seeded, for offline runs."""
    from transformers import HubertConfig, HubertForCTC

    from damc_core.audio.pinyin import standin_vocab

    vocab = ENGLISH_CTC_VOCAB if language == "en" else tuple(standin_vocab())
    config = HubertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    previous_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(STAND_IN_SEED)
        torch.set_default_dtype(STAND_IN_DTYPE)  # drawn in double too: the random init is vectorised code as well
        try:
            model = HubertForCTC(config)
        finally:
            torch.set_default_dtype(previous_dtype)
    return CTCEncoder(model=model.eval(), name=f"{STAND_IN}:hubert-random-init", vocab=vocab,
                      normalize=True, stand_in=True)


def aligned_audio(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Zero-pad `audio` so that encoder steps 2t and 2t+1 belong to video frame t, for exactly `n_frames` frames."""
    needed = ENCODER_STRIDE * (STEPS_PER_FRAME * n_frames - 1) + RECEPTIVE_FIELD
    padded = np.zeros(max(needed, FRONT_PADDING + len(audio)), dtype=np.float32)
    padded[FRONT_PADDING : FRONT_PADDING + len(audio)] = audio
    return padded[:needed]


def encode(
    encoder: CTCEncoder,
    audio: np.ndarray,
    n_frames: int,
    output: ContentOutput,
    chunk_s: float,
    context_s: float,
) -> np.ndarray:
    """Encoder output per step, (n_frames * 2, dim), computed in chunks of `chunk_s` seconds that each see
    `context_s` seconds of neighbouring audio on both sides (bounded memory for any length)."""
    signal = aligned_audio(audio, n_frames)
    if encoder.normalize:
        signal = (signal - signal.mean()) / np.sqrt(signal.var() + 1e-7)
    steps = STEPS_PER_FRAME * n_frames
    chunk_steps = max(1, round(chunk_s * AUDIO_SAMPLE_RATE / ENCODER_STRIDE))
    context_steps = max(0, round(context_s * AUDIO_SAMPLE_RATE / ENCODER_STRIDE))
    pieces = []
    weight = next(encoder.model.parameters())
    chunks = tqdm(range(0, steps, chunk_steps), desc="content encoder", unit="chunk", leave=False)
    with torch.inference_mode():
        for start in chunks:
            stop = min(start + chunk_steps, steps)
            first, last = max(0, start - context_steps), min(steps, stop + context_steps)
            samples = signal[ENCODER_STRIDE * first : ENCODER_STRIDE * (last - 1) + RECEPTIVE_FIELD]
            result = encoder.model(
                torch.from_numpy(np.ascontiguousarray(samples))[None].to(weight),
                output_hidden_states=output == "hidden_states",
            )
            values = result.logits if output == "logits" else result.hidden_states[-1]
            pieces.append(values[0, start - first : stop - first].float().cpu().numpy())
    return np.concatenate(pieces)


@dataclass(frozen=True)
class ContentFeatures:
    """E_c's output for one audio, one row per video frame."""

    values: np.ndarray
    """(frames, 2, dim) float32."""
    representation: str
    """'ctc_logits', 'pinyin_posteriors', 'hidden_states' or 'phone_posteriors'."""
    units: tuple[str, ...]
    """Names of the dimensions, when they have names (vocabulary tokens, pinyin units or phones)."""


def content_features(
    encoder: ContentEncoder,
    audio: np.ndarray,
    n_frames: int,
    language: str,
    output: ContentOutput,
    chunk_s: float,
    context_s: float,
) -> ContentFeatures:
    """E_c(x), one row per video frame: CTC logits (English), pinyin-unit posteriors (Mandarin, paper 3.5) or last
    hidden states of a CTC model; phone occupancies of pocketsphinx (damc_core/audio/phones.py). Long audio is
    processed in chunks of `chunk_s` seconds that each see `context_s` seconds of neighbouring audio on both sides."""
    return encoder.features(audio, n_frames, language, output, chunk_s, context_s)
