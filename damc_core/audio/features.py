"""Feature files that cannot mismatch: every array is stored beside a meta file that says what it is and what audio it
came from, and loading checks both."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from damc_core.errors import InputError

META_SUFFIX = ".meta.json"


class FeatureMismatchError(InputError, ValueError):
    """A feature file disagrees with its meta file, or with the video or audio it is used with."""


@dataclass(frozen=True)
class FeatureMeta:
    """What a feature file holds. Consumers read sizes from here and never dispatch on encoder names."""

    kind: str
    """'content' (E_c's input) or 'mel' (E_d's input)."""
    encoder: str
    """The model or transform that produced the features (hub id, local path, or a labelled stand-in)."""
    representation: str
    """'ctc_logits', 'pinyin_posteriors', 'phone_posteriors' (pocketsphinx), 'hidden_states' or 'log_mel'."""
    shape: tuple[int, ...]
    """Shape of the stored array: (frames, window, dim) for content, (frames, n_mels, window) for mel."""
    dim: int
    """Feature size of one time step (logit count, pinyin or phone unit count, hidden size, or mel bins)."""
    window: int
    """Time steps per video frame: 2 encoder steps at 50 Hz, or 16 mel frames at 80 Hz."""
    rate_hz: float
    """Rate of the underlying time steps."""
    fps: int
    """Video frame rate the rows are aligned to (one row per frame)."""
    sample_rate: int
    """Sample rate of the audio the features were computed from."""
    language: str
    """Language the content encoder was configured for ('en' or 'zh')."""
    audio_sha256: str
    """sha256 of the float32 16 kHz mono samples the features came from (see `audio_sha256`)."""
    stand_in: bool
    """True when the encoder is a random-init stand-in: features are well-formed but carry no learned content."""
    units: tuple[str, ...] = ()
    """Names of the feature dimensions when they have names (pinyin units)."""

    @property
    def frames(self) -> int:
        """Number of video frames covered: one row each."""
        return self.shape[0]


def audio_sha256(audio: np.ndarray) -> str:
    """Fingerprint of audio samples as float32 (the form every extractor reads)."""
    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def meta_path(features_path: str | Path) -> Path:
    """Where the meta file of `features_path` (an .npy file) lives."""
    path = Path(features_path)
    return path.with_name(path.stem + META_SUFFIX)


def save_features(path: str | Path, features: np.ndarray, meta: FeatureMeta) -> None:
    """Write `features` as .npy and its meta file, after checking they agree."""
    if tuple(features.shape) != tuple(meta.shape):
        raise FeatureMismatchError(f"{path}: array shape {features.shape} differs from meta shape {meta.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features.astype(np.float32, copy=False))
    meta_path(path).write_text(json.dumps(asdict(meta), indent=2) + "\n", encoding="utf-8")


def load_meta(path: str | Path) -> FeatureMeta:
    """Read the meta file of the feature file `path`."""
    source = meta_path(path)
    if not source.is_file():
        raise FeatureMismatchError(f"{path}: no meta file {source.name}; features without one are not accepted")
    raw = json.loads(source.read_text(encoding="utf-8"))
    raw["shape"] = tuple(raw["shape"])
    raw["units"] = tuple(raw.get("units", ()))
    return FeatureMeta(**raw)


def load_features(
    path: str | Path, *, frames: int | None = None, audio: np.ndarray | None = None
) -> tuple[np.ndarray, FeatureMeta]:
    """Load a feature file and its meta; optionally check it covers `frames` video frames and came from `audio`."""
    meta = load_meta(path)
    features = np.load(path)
    if tuple(features.shape) != meta.shape:
        raise FeatureMismatchError(f"{path}: array shape {features.shape} differs from its meta file {meta.shape}")
    if frames is not None and meta.frames != frames:
        raise FeatureMismatchError(
            f"{path}: {meta.frames} rows of {meta.kind} features for a video of {frames} frames "
            f"({meta.frames / meta.fps:.2f} s vs {frames / meta.fps:.2f} s); recompute the features for this video"
        )
    if audio is not None and audio_sha256(audio) != meta.audio_sha256:
        raise FeatureMismatchError(f"{path}: computed from different audio than the one given (sha256 differs)")
    return features, meta
