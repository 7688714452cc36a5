"""Typed schema of params.yaml: one frozen dataclass per section, a docstring per field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


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
class AudioFeaturesConfig:
    """Content features E_c(x) and mel windows for E_d, one row per video frame (stage `audio_features`)."""

    language: Literal["en", "zh"]
    """Language of the speech; 'zh' maps a character-vocabulary CTC model's posteriors onto pinyin units."""
    content_encoder: str
    """Hub id or local directory of a CTC ASR model (e.g. facebook/hubert-large-ls960-ft), or 'stand-in' for a
    small random-init model whose features carry no speech content (offline runs of the pipeline only)."""
    content_output: Literal["logits", "hidden_states"]
    """Use the CTC logits (the paper's E_c) or the encoder's last hidden states."""
    chunk_s: float
    """Seconds of audio per encoder pass; longer audio is processed chunk by chunk with bounded memory."""
    context_s: float
    """Seconds of neighbouring audio each chunk also sees on both sides (discarded from its output)."""


@dataclass(frozen=True)
class FilterThresholds:
    """What a clip must satisfy to be kept by the HDTF filter; the defaults suit 512x512 HDTF clips."""

    min_face_fraction: float = 0.9
    """Smallest fraction of the analysed frames that must show exactly one face."""
    max_multi_face_fraction: float = 0.1
    """Largest fraction of the analysed frames that may show more than one face."""
    min_face_size_px: float = 128.0
    """Smallest median width of the face's landmark box, in pixels of the output clip (so it scales with size)."""
    max_head_motion: float = 0.03
    """Largest median per-frame speed of the rigid landmarks (nose bridge, eye corners), in face widths."""
    max_scene_cut_score: float = 0.35
    """Largest colour-histogram distance (Bhattacharyya, 0..1) between two consecutive frames; above it is a cut."""
    min_speech_ratio: float = 0.5
    """Smallest fraction of 25 fps frames with speech (see damc_core.hdtf.filtering.speech_ratio)."""
    min_duration_s: float = 2.0
    """Shortest clip kept, in seconds."""
    sample_every: int = 5
    """Look for faces in every n-th frame only (1: every frame); the other statistics use every frame."""

    def __post_init__(self) -> None:
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be at least 1, got {self.sample_every}")


@dataclass(frozen=True)
class HdtfFilterConfig:
    """Cutting, cropping and filtering talking-head clips into a clip set (stage `hdtf_filter`)."""

    size: int
    """Side of the output clips in pixels (512 for HDTF, as in the paper; smaller for a quick run)."""
    landmarks: Literal["mediapipe", "face_alignment"]
    """Landmark backend used to count faces and measure face size and head motion."""
    thresholds: FilterThresholds
    """What a clip must satisfy to be kept."""


@dataclass(frozen=True)
class FacePrepConfig:
    """Turning a subject's speaking video into an ER-NeRF-compatible dataset (stage `face_prep`)."""

    landmarks: Literal["mediapipe", "face_alignment"]
    """68-point landmark backend: MediaPipe FaceMesh mapped to iBUG-68 (offline) or face_alignment's FAN (weights)."""
    parsing: Literal["mediapipe", "bisenet"]
    """Face parsing backend: MediaPipe person segmentation + landmark geometry (offline) or BiSeNet (weights)."""
    bisenet_weights: str
    """Path of BiSeNet's 79999_iter.pth (face-parsing.PyTorch), used when parsing is 'bisenet'."""
    max_gap_frames: int
    """Longest run of frames without a detected face that is bridged by interpolation; longer runs are an error."""
    max_multi_face_fraction: float
    """Largest fraction of frames that may show more than one face (the largest face is used)."""
    min_size_px: int
    """Smallest accepted width or height of the video, in pixels."""
    min_frames: int
    """Fewest frames (at 25 fps) accepted; shorter videos cannot be split into training and validation."""
    val_fraction: float
    """Fraction of frames, at the end of the video, held out for validation."""
    pose_smoothing_frames: int
    """Width of the centred temporal smoothing of head pose (odd; 1 disables it)."""
    blink_open_percentile: float
    """Eye-aspect-ratio percentile taken as 'eyes open' for the blink signal."""
    jpeg_quality: int
    """JPEG quality of the frame images (ori_imgs, gt_imgs, bc.jpg)."""


@dataclass(frozen=True)
class TrainingConfig:
    """A training run: optimisation schedule, logging and checkpoints."""

    seed: int
    """Seed of initialisation and batch sampling; same seed, same result on CPU."""
    steps: int
    """Optimisation steps."""
    batch_size: int
    """Samples per step and process."""
    learning_rate: float
    """Peak learning rate (Adam), reached after the warm-up and decayed by a cosine to a tenth of it."""
    warmup_steps: int
    """Steps of linear warm-up."""
    log_every: int
    """Steps between logged training losses."""
    eval_every: int
    """Steps between evaluations on the held-out data."""
    checkpoint_every: int
    """Steps between checkpoints (the run resumes from the last one after an interruption)."""


@dataclass(frozen=True)
class SyncExpertConfig:
    """The lip-sync expert D_lip (stage `sync_expert`)."""

    face_size: int
    """Side S of the square face crops; the expert sees their lower half, S/2 x S (Wav2Lip: 96)."""
    crop_margin: float
    """Margin added around the landmarks' box on each side, as a fraction of its side."""
    embed_dim: int
    """Size of the face and audio embeddings compared by cosine similarity."""
    min_offset: int
    """Smallest shift, in frames, of an off-sync mel window."""
    held_out_clips: int
    """Clips (the last ones of the manifest) kept out of training to measure held-out loss and accuracy."""
    eval_batches: int
    """Batches drawn from the held-out clips per evaluation."""
    training: TrainingConfig
    """Optimisation settings."""


@dataclass(frozen=True)
class SyncEncoderConfig:
    """The Dynamic-Sync Encoder E_d (stage `sync_encoder`): mel window -> f_d, trained with a lip decoder."""

    dim: int
    """Size of f_d, the dynamic feature."""
    decoder_width: int
    """Channels of the lip decoder's first level (doubling at each of its 4 levels); only used in training."""
    reconstruction_weight: float
    """Weight of the L1 reconstruction loss of the lower face."""
    sync_weight: float
    """Weight of the frozen expert's sync loss on the reconstruction."""
    training: TrainingConfig
    """Optimisation settings."""


@dataclass(frozen=True)
class TextConfig:
    """One text to speak."""

    name: str
    """Clip id, used as its folder name."""
    language: Literal["en", "zh"]
    """Language of the text (Mandarin is spoken through numbered pinyin by espeak-ng)."""
    text: str
    """What to say."""


@dataclass(frozen=True)
class TTSConfig:
    """Text-to-speech clips for driving the head with text (stage `tts`, paper 2.3)."""

    backend: Literal["espeak", "speecht5"]
    """English backend: 'speecht5' (acoustic model + HiFi-GAN; needs weights) or 'espeak' (offline). Mandarin always
    uses espeak-ng, as SpeechT5 speaks English only."""
    texts: tuple[TextConfig, ...]
    """The texts to speak."""
    espeak_voice: str
    """espeak-ng voice for English text."""
    words_per_minute: int
    """espeak-ng speaking rate."""
    pitch: int
    """espeak-ng base pitch, 0..99."""
    acoustic_model: str
    """SpeechT5 acoustic model: hub id or local directory."""
    vocoder: str
    """SpeechT5 HiFi-GAN vocoder: hub id or local directory."""
    speaker_embedding: str
    """Path of a .npy 512-d x-vector choosing SpeechT5's voice."""


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    subjects: Mapping[str, str]
    """The subjects to build a head of: name -> speaking video. Stages `face_prep` and `audio_features` run once per
    subject (DVC foreach). Read-only at run time."""
    sample: SampleConfig
    """Section of the `sample` stage."""
    audio_features: AudioFeaturesConfig
    """Section of the `audio_features` stage (also used by rendering)."""
    tts: TTSConfig
    """Section of the `tts` stage."""
    hdtf_filter: HdtfFilterConfig
    """Section of the `hdtf_filter` stage."""
    face_prep: FacePrepConfig
    """Section of the `face_prep` stage."""
    sync_expert: SyncExpertConfig
    """Section of the `sync_expert` stage."""
    sync_encoder: SyncEncoderConfig
    """Section of the `sync_encoder` stage."""
