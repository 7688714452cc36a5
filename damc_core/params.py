"""Typed schema of params.yaml: one frozen dataclass per section, a docstring per field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArticulationConfig:
    """The rule by which the sample's speech drives its mouth (see damc_core/sample/articulation.py)."""

    window_s: float
    """Length of the analysis window centred on each video frame, in seconds."""
    dynamic_range_db: float
    """Loudness range mapped onto aperture 1..0: a frame this many dB below the loud level has a closed mouth."""
    loud_percentile: float
    """Percentile of the per-frame level taken as the loud (fully open) level."""
    rounded_centroid_hz: float
    """Spectral centroid at or below which a vowel counts as fully rounded (spread = -1, 'oo')."""
    spread_centroid_hz: float
    """Spectral centroid at or above which a vowel counts as fully spread (spread = +1, 'ee')."""
    smoothing_frames: int
    """Width of the centred moving average applied to both signals (odd; 1 disables it)."""
    max_open_px: float
    """Jaw drop at aperture 1, in pixels of the 512x512 source portrait."""
    max_spread_px: float
    """Outward shift of each mouth corner at spread +1 and aperture 1, in source-portrait pixels."""


@dataclass(frozen=True)
class BlinkConfig:
    """When and how the sample's eyes blink."""

    min_interval_s: float
    """Shortest time between two blinks, in seconds."""
    max_interval_s: float
    """Longest time between two blinks, in seconds; intervals are drawn uniformly in between."""
    profile: tuple[float, ...]
    """Eyelid closure (0 open .. 1 shut) over the consecutive frames of one blink."""


@dataclass(frozen=True)
class VoiceConfig:
    """One espeak-ng speaker."""

    voice: str
    """espeak-ng voice and variant, e.g. 'en-us+f3' (`espeak-ng --voices=en` lists voices)."""
    words_per_minute: int
    """Speaking rate passed to espeak-ng (-s)."""
    pitch: int
    """Base pitch passed to espeak-ng (-p), 0..99."""


@dataclass(frozen=True)
class LookConfig:
    """How a synthetic face is framed and coloured."""

    crop: tuple[int, int, int]
    """Square region (x, y, side) of the 512x512 source portrait shown in the video."""
    hue_shift_deg: float
    """Rotation of every pixel's hue, in degrees (0 keeps the portrait's colours)."""
    brightness: float
    """Multiplier on pixel values (1 keeps the portrait's brightness)."""
    mirror: bool
    """Flip the portrait left-right."""


@dataclass(frozen=True)
class SubjectConfig:
    """The sample's single speaking subject, the default input of face preparation and NeRF training."""

    image_size: int
    """Side of the square subject video, in pixels (even)."""
    look: LookConfig
    """Framing and colour of the subject."""
    speaker: VoiceConfig
    """The subject's voice."""
    sentences: tuple[str, ...]
    """What the subject says, in order."""
    pause_s: float
    """Silence before, between and after sentences, in seconds."""


@dataclass(frozen=True)
class ClipConfig:
    """One synthetic training clip for the lip-sync stages."""

    name: str
    """Clip id, used as its file name."""
    speaker: VoiceConfig
    """The clip's voice."""
    look: LookConfig
    """Framing and colour of the clip's face."""
    sentence: str
    """What is said in the clip."""


@dataclass(frozen=True)
class ClipSetConfig:
    """Synthetic multi-speaker clips in the layout of the HDTF filter's output."""

    image_size: int
    """Side of the square clip videos, in pixels (even)."""
    pause_s: float
    """Silence before and after the sentence, in seconds."""
    clips: tuple[ClipConfig, ...]
    """The clips to generate."""


@dataclass(frozen=True)
class SampleConfig:
    """The embedded sample: a synthetic speaking subject and clips with exact ground truth."""

    seed: int
    """Seed of the blink schedule; same seed and params give byte-identical outputs."""
    articulation: ArticulationConfig
    """How speech drives the mouth."""
    blink: BlinkConfig
    """How the eyes blink."""
    subject: SubjectConfig
    """The single speaking subject."""
    clips: ClipSetConfig
    """The multi-speaker clips."""


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    sample: SampleConfig
    """Section of the `sample` stage."""
