"""SpeechT5 text to speech (acoustic model + HiFi-GAN vocoder, transformers): mel for E_d, waveform for E_c."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from damc_core.audio.mel import SPEECHT5, convert_log10_mel
from damc_core.errors import InputError
from damc_core.tts.text import check_speakable


class TTSModelUnavailable(InputError, RuntimeError):
    """SpeechT5 weights or the speaker embedding are missing."""


@dataclass
class SpeechT5:
    """A loaded SpeechT5 acoustic model, its vocoder, a tokenizer and one speaker embedding."""

    tokenize: object
    """Callable text -> (1, tokens) LongTensor of input ids."""
    acoustic_model: torch.nn.Module
    """SpeechT5ForTextToSpeech: text -> log10 mel (frames, 80) at 16 kHz, hop 256."""
    vocoder: torch.nn.Module
    """SpeechT5HifiGan: log10 mel -> 16 kHz waveform."""
    speaker_embedding: torch.Tensor
    """(1, 512) x-vector of the voice."""
    name: str
    """Where the models came from, for reports."""


def load_speecht5(acoustic_model: str, vocoder: str, speaker_embedding: str) -> SpeechT5:
    """Load SpeechT5 from hub ids or local directories, and the speaker x-vector from a .npy file."""
    from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Processor

    embedding_path = Path(speaker_embedding)
    if not embedding_path.is_file():
        raise TTSModelUnavailable(
            f"SpeechT5 speaker embedding {embedding_path} not found: save a 512-d x-vector as .npy (e.g. one row of "
            f"the Matthijs/cmu-arctic-xvectors dataset) and set tts.speaker_embedding to it"
        )
    try:
        processor = SpeechT5Processor.from_pretrained(acoustic_model)
        model = SpeechT5ForTextToSpeech.from_pretrained(acoustic_model)
        hifigan = SpeechT5HifiGan.from_pretrained(vocoder)
    except OSError as error:
        raise TTSModelUnavailable(
            f"SpeechT5 could not be loaded ({error}). Where there is internet: `huggingface-cli download "
            f"{acoustic_model}` and `huggingface-cli download {vocoder}` (or point tts.acoustic_model / tts.vocoder "
            f"at local copies); offline, use tts.backend: espeak"
        ) from error

    def tokenize(text: str) -> torch.Tensor:
        return processor(text=text, return_tensors="pt")["input_ids"]

    embedding = torch.from_numpy(np.load(embedding_path).astype(np.float32).reshape(1, -1))
    return SpeechT5(tokenize, model.eval(), hifigan.eval(), embedding, f"{acoustic_model} + {vocoder}")


def speecht5_synthesise(tts: SpeechT5, text: str, max_length_ratio: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """(waveform at 16 kHz, acoustic-model mel converted to the Wav2Lip convention (80, mel frames)) for `text`."""
    input_ids = tts.tokenize(check_speakable(text))
    with torch.inference_mode():
        log10_mel = tts.acoustic_model.generate_speech(
            input_ids, tts.speaker_embedding, maxlenratio=max_length_ratio
        )
        waveform = tts.vocoder(log10_mel)
    return waveform.float().numpy().reshape(-1), convert_log10_mel(log10_mel.float().numpy(), SPEECHT5)
