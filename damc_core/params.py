"""Typed schema of params.yaml: one frozen dataclass per section, a docstring per field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal


@dataclass(frozen=True)
class Range:
    """The interval a number of params.yaml must lie in, checked when the file is loaded (None: unbounded)."""

    low: float | None = None
    """Smallest allowed value."""
    high: float | None = None
    """Largest allowed value."""
    open_low: bool = False
    """True when `low` itself is excluded."""
    odd: bool = False
    """True for widths of centred windows, which must be odd."""

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return above and (self.high is None or value <= self.high) and (not self.odd or value % 2 == 1)

    def __str__(self) -> str:
        if self.high is None:
            bounds = f"{'>' if self.open_low else '>='} {self.low:g}"
        else:
            bounds = f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        return f"odd and {bounds}" if self.odd else bounds


Count = Annotated[int, Range(low=1)]
"""A whole number of at least 1 (steps, sizes, frames, layers)."""
NonNegativeInt = Annotated[int, Range(low=0)]
Positive = Annotated[float, Range(low=0, open_low=True)]
NonNegative = Annotated[float, Range(low=0)]
Fraction = Annotated[float, Range(low=0, high=1)]
Percentile = Annotated[float, Range(low=0, high=100)]
EspeakPitch = Annotated[int, Range(low=0, high=99)]
OddWidth = Annotated[int, Range(low=1, odd=True)]
"""The width of a centred window in frames: odd, 1 for none."""


def _require(condition: bool, message: str) -> None:
    """Cross-field checks of a section (__post_init__): ValueError, reported by the loader with the section's key."""
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ArticulationConfig:
    """The rule by which the sample's speech drives its mouth (see damc_core/sample/articulation.py)."""

    window_s: Positive
    """Length of the analysis window centred on each video frame, in seconds."""
    dynamic_range_db: Positive
    """Loudness range mapped onto aperture 1..0: a frame this many dB below the loud level has a closed mouth."""
    loud_percentile: Percentile
    """Percentile of the per-frame level taken as the loud (fully open) level."""
    rounded_centroid_hz: Positive
    """Spectral centroid at or below which a vowel counts as fully rounded (spread = -1, 'oo')."""
    spread_centroid_hz: Positive
    """Spectral centroid at or above which a vowel counts as fully spread (spread = +1, 'ee')."""
    smoothing_frames: OddWidth
    """Width of the centred moving average applied to both signals (odd; 1 disables it)."""
    max_open_px: NonNegative
    """Jaw drop at aperture 1, in pixels of the 512x512 source portrait."""
    max_spread_px: NonNegative
    """Outward shift of each mouth corner at spread +1 and aperture 1, in source-portrait pixels."""


@dataclass(frozen=True)
class BlinkConfig:
    """When and how the sample's eyes blink."""

    min_interval_s: Positive
    """Shortest time between two blinks, in seconds."""
    max_interval_s: Positive
    """Longest time between two blinks, in seconds; intervals are drawn uniformly in between."""
    profile: tuple[Fraction, ...]
    """Eyelid closure (0 open .. 1 shut) over the consecutive frames of one blink."""

    def __post_init__(self) -> None:
        _require(self.min_interval_s <= self.max_interval_s,
                 f"min_interval_s ({self.min_interval_s}) must not exceed max_interval_s ({self.max_interval_s})")


@dataclass(frozen=True)
class VoiceConfig:
    """One espeak-ng speaker."""

    voice: str
    """espeak-ng voice and variant, e.g. 'en-us+f3' (`espeak-ng --voices=en` lists voices)."""
    words_per_minute: Count
    """Speaking rate passed to espeak-ng (-s)."""
    pitch: EspeakPitch
    """Base pitch passed to espeak-ng (-p), 0..99."""


@dataclass(frozen=True)
class LookConfig:
    """How a synthetic face is framed and coloured."""

    crop: tuple[int, int, int]
    """Square region (x, y, side) of the 512x512 source portrait shown in the video."""
    hue_shift_deg: float
    """Rotation of every pixel's hue, in degrees (0 keeps the portrait's colours)."""
    brightness: Positive
    """Multiplier on pixel values (1 keeps the portrait's brightness)."""
    mirror: bool
    """Flip the portrait left-right."""


@dataclass(frozen=True)
class SubjectConfig:
    """The sample's single speaking subject, the default input of face preparation and NeRF training."""

    image_size: Count
    """Side of the square subject video, in pixels (even)."""
    look: LookConfig
    """Framing and colour of the subject."""
    speaker: VoiceConfig
    """The subject's voice."""
    sentences: tuple[str, ...]
    """What the subject says, in order."""
    pause_s: NonNegative
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

    image_size: Count
    """Side of the square clip videos, in pixels (even)."""
    pause_s: NonNegative
    """Silence before and after the sentence, in seconds."""
    clips: tuple[ClipConfig, ...]
    """The clips to generate."""


@dataclass(frozen=True)
class SampleConfig:
    """The embedded sample: a synthetic speaking subject and clips with exact ground truth."""

    seed: NonNegativeInt
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
    """Hub id or local directory of a CTC ASR model (e.g. facebook/hubert-large-ls960-ft, the paper's); 'pocketsphinx'
    for CMU Sphinx's offline phone decoder (US English only, its en-us model ships in the wheel: 40 phone-occupancy
    features per 20 ms step, content_output 'logits' only); or 'stand-in' for a small random-init model whose
    features carry no speech content (offline runs of the pipeline only)."""
    content_output: Literal["logits", "hidden_states"]
    """Use the CTC logits (the paper's E_c) or the encoder's last hidden states."""
    chunk_s: Positive
    """Seconds of audio per encoder pass; longer audio is processed chunk by chunk with bounded memory."""
    context_s: NonNegative
    """Seconds of neighbouring audio each chunk also sees on both sides (discarded from its output)."""


@dataclass(frozen=True)
class FilterThresholds:
    """What a clip must satisfy to be kept by the HDTF filter; the defaults suit 512x512 HDTF clips."""

    min_face_fraction: Fraction = 0.9
    """Smallest fraction of the analysed frames that must show exactly one face."""
    max_multi_face_fraction: Fraction = 0.1
    """Largest fraction of the analysed frames that may show more than one face."""
    min_face_size_px: NonNegative = 128.0
    """Smallest median width of the face's landmark box, in pixels of the output clip (so it scales with size)."""
    max_head_motion: NonNegative = 0.03
    """Largest median per-frame speed of the rigid landmarks (nose bridge, eye corners), in face widths."""
    max_scene_cut_score: Fraction = 0.35
    """Largest colour-histogram distance (Bhattacharyya, 0..1) between two consecutive frames; above it is a cut."""
    min_speech_ratio: Fraction = 0.5
    """Smallest fraction of 25 fps frames with speech (see damc_core.hdtf.filtering.speech_ratio)."""
    min_duration_s: NonNegative = 2.0
    """Shortest clip kept, in seconds."""
    sample_every: Count = 5
    """Look for faces in every n-th frame only (1: every frame); the other statistics use every frame."""

    def __post_init__(self) -> None:
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be at least 1, got {self.sample_every}")


@dataclass(frozen=True)
class HdtfFilterConfig:
    """Cutting, cropping and filtering talking-head clips into a clip set (stage `hdtf_filter`)."""

    size: Count
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
    max_gap_frames: NonNegativeInt
    """Longest run of frames without a detected face that is bridged by interpolation; longer runs are an error."""
    max_multi_face_fraction: Fraction
    """Largest fraction of frames that may show more than one face (the largest face is used)."""
    min_size_px: Count
    """Smallest accepted width or height of the video, in pixels."""
    min_frames: Annotated[int, Range(low=2)]
    """Fewest frames (at 25 fps) accepted; shorter videos cannot be split into training and validation."""
    val_fraction: Annotated[float, Range(low=0, high=0.5, open_low=True)]
    """Fraction of frames, at the end of the video, held out for validation (above 0, at most half)."""
    pose_smoothing_frames: OddWidth
    """Width of the centred temporal smoothing of head pose (odd; 1 disables it)."""
    blink_open_percentile: Percentile
    """Eye-aspect-ratio percentile taken as 'eyes open' for the blink signal."""
    jpeg_quality: Annotated[int, Range(low=1, high=100)]
    """JPEG quality of the frame images (ori_imgs, gt_imgs, bc.jpg)."""


@dataclass(frozen=True)
class TrainingConfig:
    """A training run: optimisation schedule, logging and checkpoints."""

    seed: NonNegativeInt
    """Seed of initialisation and batch sampling; same seed, same result on CPU."""
    steps: Count
    """Optimisation steps."""
    learning_rate: Positive
    """Peak learning rate (Adam), reached after the warm-up and decayed by a cosine to a tenth of it."""
    warmup_steps: NonNegativeInt
    """Steps of linear warm-up."""
    log_every: Count
    """Steps between logged training losses."""
    eval_every: Count
    """Steps between evaluations on the held-out data."""
    checkpoint_every: Count
    """Steps between checkpoints (the run resumes from the last one after an interruption)."""

    def __post_init__(self) -> None:
        _require(self.warmup_steps <= self.steps,
                 f"warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps})")


@dataclass(frozen=True)
class BatchTrainingConfig(TrainingConfig):
    """A training run whose steps draw a fixed number of samples (the lip-sync stages')."""

    batch_size: Count
    """Samples per step and process."""


@dataclass(frozen=True)
class SyncExpertConfig:
    """The lip-sync expert D_lip (stage `sync_expert`)."""

    face_size: Count
    """Side S of the square face crops; the expert sees their lower half, S/2 x S (Wav2Lip: 96)."""
    crop_margin: NonNegative
    """Margin added around the landmarks' box on each side, as a fraction of its side."""
    embed_dim: Count
    """Size of the face and audio embeddings compared by cosine similarity."""
    min_offset: Count
    """Smallest shift, in frames, of an off-sync mel window."""
    held_out_clips: Count
    """Clips (the last ones of the manifest) kept out of training to measure held-out loss and accuracy."""
    eval_batches: Count
    """Batches drawn from the held-out clips per evaluation."""
    training: BatchTrainingConfig
    """Optimisation settings."""


@dataclass(frozen=True)
class SyncEncoderConfig:
    """The Dynamic-Sync Encoder E_d (stage `sync_encoder`): mel window -> f_d, trained with a lip decoder."""

    dim: Count
    """Size of f_d, the dynamic feature."""
    decoder_width: Count
    """Channels of the lip decoder's first level (doubling at each of its 4 levels); only used in training."""
    reconstruction_weight: NonNegative
    """Weight of the L1 reconstruction loss of the lower face."""
    sync_weight: NonNegative
    """Weight of the frozen expert's sync loss on the reconstruction."""
    training: BatchTrainingConfig
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
    words_per_minute: Count
    """espeak-ng speaking rate."""
    pitch: EspeakPitch
    """espeak-ng base pitch, 0..99."""
    acoustic_model: str
    """SpeechT5 acoustic model: hub id or local directory."""
    vocoder: str
    """SpeechT5 HiFi-GAN vocoder: hub id or local directory."""
    speaker_embedding: str
    """Path of a .npy 512-d x-vector choosing SpeechT5's voice."""


@dataclass(frozen=True)
class FusionConfig:
    """CSFM (paper 2.2): fuses the content feature f_c and the dynamic feature f_d into the audio condition f_a."""

    mode: Literal["csfm", "cross_attention", "concat", "content", "dynamic"]
    """'csfm' (the paper: cross attention both ways, then Feature Self-Refinement), and the paper's ablation rows
    (Table 3): 'cross_attention' (no FSR), 'concat' (projections concatenated), 'content' or 'dynamic' only."""
    dim: Count
    """Size of f_a and of both projections (paper sweep: 32, 64, 128, 256; best 64)."""
    window: OddWidth
    """Video frames in the temporal window the attention runs over, centred on the frame (odd)."""
    heads: Count
    """Attention heads of CDCA and FSR; must divide `dim`."""

    def __post_init__(self) -> None:
        _require(self.dim % self.heads == 0, f"fusion.heads ({self.heads}) must divide fusion.dim ({self.dim})")


@dataclass(frozen=True)
class HashGridConfig:
    """One 2D multi-resolution hash encoder (one plane of the tri-plane, paper 2.4)."""

    levels: Count
    """Resolution levels L (paper: 14)."""
    features_per_level: Count
    """Features per level F (paper: 1)."""
    log2_table_size: Count
    """log2 of the entries per level's table; coarse levels with fewer grid vertices are stored densely."""
    base_resolution: Count
    """Grid resolution of the coarsest level."""
    finest_resolution: Count
    """Grid resolution of the finest level; levels in between grow geometrically."""

    def __post_init__(self) -> None:
        _require(self.base_resolution <= self.finest_resolution,
                 f"base_resolution ({self.base_resolution}) must not exceed finest_resolution "
                 f"({self.finest_resolution})")


@dataclass(frozen=True)
class FieldConfig:
    """The audio-conditioned radiance field of the head and how rays sample it."""

    hash_grid: HashGridConfig
    """Each of the three plane encoders (XY, YZ, XZ)."""
    box_min: tuple[float, float, float]
    """Corner of the head's bounding box in the face template's frame, decimetres (FACE_TEMPLATE_68 axes)."""
    box_max: tuple[float, float, float]
    """Opposite corner of the bounding box."""
    hidden_dim: Count
    """Width of the density MLP's hidden layers."""
    geometry_dim: Count
    """Size of the geometry feature the density MLP hands to the colour MLP."""
    density_layers: Count
    """Layers of the density MLP."""
    colour_hidden_dim: Count
    """Width of the colour MLP's hidden layers."""
    colour_layers: Count
    """Layers of the colour MLP."""
    latent_dim: NonNegativeInt
    """Size of the per-frame latent code fed to the colour MLP (ER-NeRF's individual code); 0 disables it."""
    samples_per_ray: Count
    """Samples per ray inside the bounding box, one in each of as many equal bins."""
    jitter: bool
    """Training draws each sample uniformly within its bin (NeRF's stratified sampling: a volume consistent between
    depths, for cameras that move); false keeps training samples at the bin midpoints rendering uses, which fits a
    nearly still camera much faster."""


@dataclass(frozen=True)
class RaySamplingConfig:
    """Which pixels a training step draws its rays from."""

    rays_per_step: Count
    """Rays per optimisation step, spread evenly over `frames_per_step` frames (paper: 256 x 256)."""
    frames_per_step: Count
    """Training frames drawn per step (each with its own audio condition and pose)."""
    face_fraction: Fraction
    """Fraction of a frame's rays drawn inside the face box (from the landmarks); the rest from the head's box."""
    lips_fraction: Fraction
    """Fraction of a frame's rays drawn inside the lips box."""

    def __post_init__(self) -> None:
        _require(self.face_fraction + self.lips_fraction <= 1,
                 f"face_fraction + lips_fraction ({self.face_fraction} + {self.lips_fraction}) must not exceed 1")


@dataclass(frozen=True)
class NerfCoarseConfig:
    """Stage `nerf_coarse`: CSFM + tri-plane hash NeRF trained with MSE on rays."""

    field: FieldConfig
    """The radiance field (nerf_fine continues the same model)."""
    rays: RaySamplingConfig
    """Ray sampling per step."""
    encoding_learning_rate: Positive
    """Peak learning rate of the hash tables (ER-NeRF: 1e-2); `training.learning_rate` is that of the networks."""
    opacity_weight: NonNegative
    """Weight of the opacity loss: a ray's opacity against face parsing's head mask (opaque on the head, clear over
    the neck, torso and background), added to the colour loss."""
    eval_frames: Count
    """Validation frames rendered at each evaluation (evenly spaced; full-frame PSNR)."""
    cpu_threads: Count
    """Intra-op threads of torch while this stage trains on the CPU (no effect on CUDA). The sample's small steps
    gain nothing from a second thread (3,600 steps: 119.6 s on one, 125.7 s on two of 2 cores), one thread is not
    slowed by other work on the machine, and a fixed count makes the trained head the same on machines with any
    number of cores (torch's results depend on the thread count). Raise it at paper scale."""
    training: TrainingConfig
    """Optimisation settings (a step's rays: `rays`)."""


@dataclass(frozen=True)
class LpipsConfig:
    """LPIPS (AlexNet) weights: the ImageNet backbone and the v0.1 linear heads."""

    backbone: str
    """torchvision AlexNet weights (alexnet-owt-7be5be79.pth)."""
    linear_heads: str
    """LPIPS v0.1 linear heads for AlexNet (alex.pth from the lpips package)."""


@dataclass(frozen=True)
class NerfFineConfig:
    """Stage `nerf_fine`: continue nerf_coarse's model with MSE + lambda * LPIPS on patches and the lips."""

    patch_size: Count
    """Side of the square image patches a step renders, in pixels."""
    patches_per_step: Count
    """Patches per step, each from its own training frame."""
    lips_patch_fraction: Fraction
    """Fraction of patches centred on the lips (the rest anywhere on the face)."""
    lpips_weight: NonNegative
    """lambda, the weight of the LPIPS term (0 trains with MSE only)."""
    lpips: LpipsConfig
    """Where the LPIPS weights are; when missing the stage trains with MSE only and says so in its metrics."""
    encoding_learning_rate: Positive
    """Peak learning rate of the hash tables."""
    opacity_weight: NonNegative
    """Weight of the opacity loss against face parsing's head mask (as in nerf_coarse)."""
    eval_frames: Count
    """Validation frames rendered at each evaluation."""
    cpu_threads: Count
    """Intra-op threads of torch while this stage trains on the CPU (as nerf_coarse.cpu_threads)."""
    training: TrainingConfig
    """Optimisation settings (a step's patches: `patch_size`, `patches_per_step`)."""


@dataclass(frozen=True)
class RenderConfig:
    """Stage `render` and `python -m damc_core.render`: drive a trained head with audio."""

    pose_smoothing_frames: OddWidth
    """Centred moving average over the replayed training poses (odd; 1 keeps them as they are)."""
    rays_per_chunk: Count
    """Rays rendered at once (memory vs speed: on the CPU, 4,096 render a 256² frame ~1.4x slower than 32,768)."""
    crf: Annotated[int, Range(low=0, high=51)]
    """x264 quality of the written mp4 (lower is better; 18 is visually lossless)."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Stage `evaluate`: the paper's five metrics on the validation renders, Sync on the TTS-driven renders."""

    landmarks: Literal["mediapipe", "dlib", "face_alignment"]
    """Landmark backend for LMD and the face crops (the same one on rendered and ground-truth frames). `dlib` (HOG face
    detector + 68-point shape predictor) judges independently of `mediapipe`, the detector face_prep placed the
    training crops with; its 68-point model is trained on iBUG 300-W, whose licence excludes commercial use."""
    lpips: LpipsConfig
    """LPIPS (AlexNet) weights; LPIPS is null with the reason when they are missing."""
    fid_weights: str
    """pytorch-fid's FID Inception weights file pt_inception-2015-12-05-6726825d.pth (from its fid_weights release,
    damc_core.metrics.image.FID_WEIGHTS_URL), read by damc_core.metrics.inception; FID is null without it."""
    syncnet_weights: str
    """syncnet_python's SyncNet weights (syncnet_v2.model); LSE-C / LSE-D are null without them."""
    syncnet_crop_margin: NonNegative
    """Margin around the landmarks' square box of the SyncNet face crop, as a fraction of its side."""
    max_offset: NonNegativeInt
    """Largest audio-video offset, in frames, the sync scores search (syncnet_python: 15)."""


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    subjects: Mapping[str, str]
    """The subjects to build a head of: name -> speaking video. Stages `face_prep` and `audio_features` run once per
    subject (DVC foreach). Read-only at run time."""
    device: Literal["auto", "cpu", "cuda"]
    """Where the networks run: `auto` is CUDA when torch sees a GPU, else the CPU (under torchrun, each process's
    own GPU)."""
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
    fusion: FusionConfig
    """CSFM settings, shared by the NeRF stages and rendering (the paper's ablations and dimension sweep)."""
    nerf_coarse: NerfCoarseConfig
    """Section of the `nerf_coarse` stage."""
    nerf_fine: NerfFineConfig
    """Section of the `nerf_fine` stage."""
    render: RenderConfig
    """Section of the `render` stage and of `python -m damc_core.render`."""
    evaluate: EvaluateConfig
    """Section of the `evaluate` stage."""
