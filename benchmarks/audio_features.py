"""Benchmark of the audio feature extractors: real-time factor and peak memory (prints figures; not a test).

Usage: python benchmarks/audio_features.py [--seconds 600] [--extractors mel stand-in hubert-large]

Each extractor runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own. `hubert-large` is the
architecture of facebook/hubert-large-ls960-ft with random weights (the real weights are not needed for timing).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

SAMPLE_RATE = 16_000


def speechlike(seconds: float) -> np.ndarray:
    """Deterministic noise with a syllable-rate envelope and pauses: realistic load for every extractor."""
    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.2 * t) > -0.5)
    return (0.2 * rng.standard_normal(n) * envelope).astype(np.float32)


def hubert_large():
    from transformers import HubertConfig, HubertForCTC

    from damc_core.audio.content import ENGLISH_CTC_VOCAB, CTCEncoder

    config = HubertConfig(
        vocab_size=32, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
    )
    return CTCEncoder(HubertForCTC(config).eval(), "hubert-large (random init)", ENGLISH_CTC_VOCAB, True, False)


def run_one(extractor: str, seconds: float) -> dict:
    """Time one extractor on `seconds` of audio in this process."""
    from damc_core.audio.content import build_stand_in, content_features
    from damc_core.audio.mel import frames_for_samples, log_mel_windows

    audio = speechlike(seconds)
    n_frames = frames_for_samples(len(audio))
    if extractor == "mel":
        start = time.perf_counter()
        output = log_mel_windows(audio, n_frames)
    else:
        encoder = build_stand_in("en") if extractor == "stand-in" else hubert_large()
        start = time.perf_counter()
        output = content_features(encoder, audio, n_frames, "en", "logits", chunk_s=20.0, context_s=1.0).values
    elapsed = time.perf_counter() - start
    return {
        "extractor": extractor,
        "audio_s": seconds,
        "compute_s": round(elapsed, 2),
        "real_time_factor": round(elapsed / seconds, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "output_shape": list(output.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--extractors", nargs="+", default=["mel", "stand-in", "hubert-large"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.seconds)))
        return
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    for extractor in args.extractors:
        result = subprocess.run(
            [sys.executable, __file__, "--one", extractor, "--seconds", str(args.seconds)],
            capture_output=True, text=True, check=True,
        )
        print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
