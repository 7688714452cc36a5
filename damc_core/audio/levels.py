"""Checks of a speech track's level before anything is built from it: silence is refused, clipping warned about."""

from __future__ import annotations

import numpy as np

from damc_core.errors import InputError

SILENCE_PEAK = 10 ** (-60 / 20)
"""Audio whose peak stays below -60 dBFS is treated as silent."""
CLIPPED_LEVEL = 0.999
CLIPPED_FRACTION = 1e-3
"""A warning is given when more than this fraction of samples sit at full scale."""


class AudioInputError(InputError, ValueError):
    """Audio that features cannot sensibly be computed from (e.g. digital silence)."""


def check_speech(audio: np.ndarray, source: str) -> list[str]:
    """Reject silent audio; return warnings for audio that is usable but suspect (clipping)."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < SILENCE_PEAK:
        level = 20 * np.log10(peak) if peak > 0 else float("-inf")
        raise AudioInputError(f"{source}: the audio is silent (peak {level:.0f} dBFS); is it the right file or track?")
    warnings = []
    clipped = float(np.mean(np.abs(audio) >= CLIPPED_LEVEL))
    if clipped > CLIPPED_FRACTION:
        warnings.append(f"{source}: {clipped:.1%} of samples are at full scale (clipped); lip sync may suffer")
    return warnings
