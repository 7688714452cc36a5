"""Names of the files in a subject's render folder: written by the render stage, read by evaluate and the gallery."""

from __future__ import annotations

VALIDATION_VIDEO = "val.mp4"
"""The validation frames rendered with their own audio."""
GROUND_TRUTH_VIDEO = "val_gt.mp4"
"""The real validation frames with the same audio."""
TTS_PREFIX = "tts_"
"""Prefix of each TTS-driven render: tts_<clip name>.mp4."""


def tts_video_name(clip: str) -> str:
    """The file name of the render driven by TTS clip `clip`."""
    return f"{TTS_PREFIX}{clip}.mp4"
