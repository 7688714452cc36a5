"""Stage `tts`: speak the texts of params.yaml (or of a text file, one per line) into clips that drive the head."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from damc_core.cli import run_command
from damc_core.config import load_params
from damc_core.params import TextConfig
from damc_core.tts.speecht5 import load_speecht5
from damc_core.tts.synthesis import speak, write_clip
from damc_core.tts.text import detect_language


def texts_from_file(path: Path) -> tuple[TextConfig, ...]:
    """One text per non-empty line, named line_<n>, language detected from its characters."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return tuple(
        TextConfig(name=f"line_{number:03d}", language=detect_language(line), text=line)
        for number, line in enumerate(lines, start=1)
        if line
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--text-file", type=Path, help="speak these lines instead of params tts.texts")
    parser.add_argument("--out-dir", type=Path, required=True, help="output: one folder per text")
    parser.add_argument("--report", type=Path, required=True, help="output: JSON summary of the clips")
    args = parser.parse_args()

    config = load_params(args.params).tts
    texts = texts_from_file(args.text_file) if args.text_file else config.texts
    if not texts:
        parser.error("no texts to speak")
    needs_speecht5 = config.backend == "speecht5" and any(text.language == "en" for text in texts)
    speecht5 = (
        load_speecht5(config.acoustic_model, config.vocoder, config.speaker_embedding) if needs_speecht5 else None
    )
    clips = {}
    for text in texts:
        spoken = speak(text.text, text.language, config, speecht5)
        clips[text.name] = write_clip(spoken, text.text, text.language, args.out_dir / text.name)
        print(f"tts: {text.name} ({text.language}, {spoken.backend}): {clips[text.name]['duration_s']:.2f} s")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(clips, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    run_command(main)
