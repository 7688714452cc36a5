"""An offline content encoder E_c: CMU Sphinx phone decoding (pocketsphinx) as per-step phone-occupancy features."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pocketsphinx
import torch

from damc_core.audio.content import (
    ENCODER_STRIDE,
    FRONT_PADDING,
    POCKETSPHINX,
    RECEPTIVE_FIELD,
    STEPS_PER_FRAME,
    ContentEncoderUnavailable,
    ContentFeatures,
    ContentOutput,
)
from damc_core.media import AUDIO_SAMPLE_RATE

CMU_PHONES = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH",
    "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)
"""The 39 phones of the CMU Pronouncing Dictionary (ARPAbet without stress marks)."""
SILENCE = "SIL"
PHONES = CMU_PHONES + (SILENCE,)
"""The feature dimensions, in this order: the CMU phones, then silence. The decoder's filler phones (noise '+NSN+',
spoken noise '+SPN+', and any other '+...+' label such as '+BREATH+' in other models) count as SIL: they carry no
phonetic content, and a talking head shows no articulation for them."""
SILENCE_INDEX = PHONES.index(SILENCE)

DEFAULT_MODEL = "en-us"
"""The acoustic model folder shipped in the pocketsphinx wheel (US English, the only one it ships)."""
PHONE_LANGUAGE_WEIGHT = 2.0
BEAM = 1e-20
"""Decoder settings for phone decoding (pocketsphinx's allphone mode with its phone language model)."""

SPHINX_FRAME_RATE = 100
SPHINX_HOP = AUDIO_SAMPLE_RATE // SPHINX_FRAME_RATE
"""Samples per decoder frame (100 frames/s)."""
SPHINX_FRAMES_PER_STEP = ENCODER_STRIDE // SPHINX_HOP
"""Decoder frames per 20 ms encoder step (2)."""
SPHINX_WINDOW = 410
"""Samples in one decoder frame's analysis window (the model's 0.025625 s at 16 kHz)."""
SPHINX_FRAME_START = SPHINX_WINDOW // 2 - SPHINX_HOP // 2
"""Decoder frame f stands for samples [160 f + 125, 160 f + 285): the 10 ms around its window's centre."""
STEP_START = RECEPTIVE_FIELD // 2 - ENCODER_STRIDE // 2 - FRONT_PADDING
"""Encoder step k covers samples [320 k - 320, 320 k), the 20 ms around its centre (content.py's timing contract)."""
FIRST_FRAME_OF_STEP, _PARTIAL = divmod(STEP_START - SPHINX_FRAME_START, SPHINX_HOP)
STEP_FRAME_WEIGHTS = (
    (SPHINX_HOP - _PARTIAL) / ENCODER_STRIDE, SPHINX_HOP / ENCODER_STRIDE, _PARTIAL / ENCODER_STRIDE
)
"""Step k overlaps decoder frames 2k + FIRST_FRAME_OF_STEP + (0, 1, 2) by these fractions of its 20 ms (sum 1)."""

DITHER_SEED = 0
DITHER_LSB = 1.0
"""Seeded Gaussian dither (standard deviation in 16-bit steps, -90 dBFS) added before decoding: digital silence
(runs of exact zeros, as in synthetic speech or padded clips) gives log-energies of minus infinity that wreck the
decoder's cepstral mean normalisation, and its phones with it. Seeded, so the features are the same every run."""


@dataclass(frozen=True)
class PhoneSegment:
    """One decoded phone: PHONES[phone] over decoder frames [start_frame, end_frame) of the decoded audio."""

    phone: int
    start_frame: int
    end_frame: int


def phone_index(label: str) -> int:
    """Index in PHONES of a decoder phone label; filler labels ('+NSN+', '+SPN+', ...) are SIL."""
    if label.startswith("+") and label.endswith("+"):
        return SILENCE_INDEX
    if label not in PHONES:
        raise ContentEncoderUnavailable(
            f"the pocketsphinx model decoded the phone {label!r}, which is neither a CMU phone, SIL nor a '+...+' "
            f"filler; damc_core/audio/phones.py PHONES lists the phones it maps"
        )
    return PHONES.index(label)


def load_phone_decoder(model: str) -> pocketsphinx.Decoder:
    """A pocketsphinx phone decoder with the wheel's acoustic model folder `model`, its log output silenced."""
    root = Path(pocketsphinx.get_model_path())
    acoustic, phone_lm = root / model / model, root / model / f"{model}-phone.lm.bin"
    if not acoustic.is_dir() or not phone_lm.is_file():
        shipped = sorted(path.name for path in root.iterdir() if (path / path.name).is_dir())
        raise ContentEncoderUnavailable(
            f"pocketsphinx has no acoustic model {model!r} with a phone language model ({acoustic}, {phone_lm}); "
            f"it ships {shipped}: set audio_features.content_encoder to '{POCKETSPHINX}'"
        )
    return pocketsphinx.Decoder(
        hmm=str(acoustic), allphone=str(phone_lm), lw=PHONE_LANGUAGE_WEIGHT, beam=BEAM, pbeam=BEAM,
        logfn=os.devnull,
    )


def decode_phones(decoder: pocketsphinx.Decoder, audio: np.ndarray, dither_seed: int) -> list[PhoneSegment]:
    """Phones of 16 kHz float mono `audio` decoded as one utterance, frames counted from its first sample; the result
    depends on `audio` and `dither_seed` alone, not on what the decoder decoded before."""
    rng = np.random.default_rng([DITHER_SEED, dither_seed])
    dithered = np.asarray(audio, dtype=np.float64) * 32767 + rng.standard_normal(len(audio)) * DITHER_LSB
    samples = np.clip(np.round(dithered), -32768, 32767).astype("<i2")
    decoder.reinit_feat()  # its front end carries the cepstral mean over from the last utterance: start afresh
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    return [PhoneSegment(phone_index(segment.word), segment.start_frame, segment.end_frame + 1)
            for segment in decoder.seg()]


def frame_phones(decoder: pocketsphinx.Decoder, audio: np.ndarray, first_frame: int, n_frames: int, chunk_s: float,
                 context_s: float) -> np.ndarray:
    """PHONES index of decoder frames first_frame ... first_frame + n_frames - 1 (SIL outside the audio), decoded in
    chunks of `chunk_s` seconds that each see `context_s` seconds of neighbouring audio on both sides."""
    labels = np.full(n_frames, SILENCE_INDEX, dtype=np.int8)
    audio_frames = max(0, (len(audio) - SPHINX_WINDOW) // SPHINX_HOP + 1)
    wanted_start, wanted_stop = max(0, first_frame), min(audio_frames, first_frame + n_frames)
    chunk_frames = max(1, round(chunk_s * SPHINX_FRAME_RATE))
    context_frames = max(0, round(context_s * SPHINX_FRAME_RATE))
    for start in range(wanted_start, wanted_stop, chunk_frames):
        stop = min(start + chunk_frames, wanted_stop)
        window_start, window_stop = max(0, start - context_frames), min(audio_frames, stop + context_frames)
        window = audio[SPHINX_HOP * window_start : SPHINX_HOP * (window_stop - 1) + SPHINX_WINDOW]
        for segment in decode_phones(decoder, window, dither_seed=window_start):
            first = max(start, window_start + segment.start_frame)
            last = min(stop, window_start + segment.end_frame)
            labels[first - first_frame : last - first_frame] = segment.phone
    return labels


def phone_steps(labels: np.ndarray, steps: int) -> np.ndarray:
    """(steps, len(PHONES)) fraction of each encoder step that each phone covers, from the labels of decoder frames
    FIRST_FRAME_OF_STEP ... FIRST_FRAME_OF_STEP + 2 steps (as frame_phones gives them)."""
    values = np.zeros((steps, len(PHONES)), dtype=np.float32)
    rows = np.arange(steps)
    for offset, weight in enumerate(STEP_FRAME_WEIGHTS):
        values[rows, labels[offset : offset + SPHINX_FRAMES_PER_STEP * steps : SPHINX_FRAMES_PER_STEP]] += weight
    return values


@dataclass(frozen=True)
class PhoneEncoder:
    """E_c from pocketsphinx's phone decoder: no torch model, it runs on the CPU whatever the device."""

    decoder: pocketsphinx.Decoder
    """In phone (allphone) mode."""
    model: str
    """The acoustic model folder in the pocketsphinx wheel."""

    @property
    def name(self) -> str:
        """What the feature meta records; load_content_encoder takes it back."""
        return f"{POCKETSPHINX}:{self.model}"

    @property
    def stand_in(self) -> bool:
        """A trained model: its features carry speech content."""
        return False

    def to(self, device: torch.device | str) -> None:
        """Nothing to move: the decoder is C code on the CPU."""

    def features(self, audio: np.ndarray, n_frames: int, language: str, output: ContentOutput, chunk_s: float,
                 context_s: float) -> ContentFeatures:
        """Phone occupancy of each 20 ms step, (n_frames, 2, len(PHONES)) rows summing to 1: the 1-best phone
        decoding as a smoothed one-hot. content_output 'logits' gives it; 'hidden_states' is refused (no network)."""
        if output != "logits":
            raise ContentEncoderUnavailable(
                f"audio_features.content_output is {output!r} but {self.name} has no hidden states (it is an HMM "
                f"phone decoder, not a network); set content_output to 'logits' for its phone posteriors"
            )
        check_phone_language(language)
        steps = STEPS_PER_FRAME * n_frames
        labels = frame_phones(self.decoder, audio, FIRST_FRAME_OF_STEP,
                              SPHINX_FRAMES_PER_STEP * (steps - 1) + len(STEP_FRAME_WEIGHTS), chunk_s, context_s)
        values = phone_steps(labels, steps).reshape(n_frames, STEPS_PER_FRAME, len(PHONES))
        return ContentFeatures(values=values, representation="phone_posteriors", units=PHONES)


def check_phone_language(language: str) -> None:
    """Refuse a language the shipped model does not know (the pocketsphinx wheel ships US English only)."""
    if language != "en":
        raise ContentEncoderUnavailable(
            f"audio_features.language is {language!r} but the content encoder '{POCKETSPHINX}' decodes US English "
            f"phones only (its wheel ships the en-us model alone); for Mandarin use a character-vocabulary CTC model "
            f"(e.g. jonatasgrosman/wav2vec2-large-xlsr-53-chinese-zh-cn) or 'stand-in'"
        )


def load_phone_encoder(name: str, language: str) -> PhoneEncoder:
    """The encoder `name`: 'pocketsphinx' (the en-us model) or 'pocketsphinx:<model folder>'."""
    check_phone_language(language)
    model = name.partition(":")[2] or DEFAULT_MODEL
    return PhoneEncoder(decoder=load_phone_decoder(model), model=model)
