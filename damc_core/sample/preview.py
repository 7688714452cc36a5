"""A picture of the sample subject: frames with the mouth closed, half and fully open, a blink, and the signals."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from damc_core.sample.generate import Performance  # noqa: E402


def pick_frames(performance: Performance) -> dict[str, int]:
    """Frame indices that show the mouth closed, half open and fully open, and the deepest blink."""
    aperture = performance.signals["aperture"].to_numpy()
    blink = performance.signals["blink"].to_numpy()
    open_eyes = blink == 0
    speaking = np.flatnonzero(open_eyes & (aperture > 0))
    closed = np.flatnonzero(open_eyes & (aperture == 0))
    return {
        "mouth closed": int(closed[np.argmin(np.abs(closed - np.median(speaking)))]),
        "half open": int(speaking[np.argmin(np.abs(aperture[speaking] - 0.5))]),
        "fully open": int(speaking[np.argmax(aperture[speaking])]),
        "blink": int(np.argmax(blink)),
    }


def save_preview(performance: Performance, path: Path) -> None:
    """Four annotated frames over the aperture and blink curves, as a PNG (byte-deterministic)."""
    picks = pick_frames(performance)
    figure = plt.figure(figsize=(12, 6.2), dpi=80)
    grid = figure.add_gridspec(2, len(picks), height_ratios=[3, 1.3])
    for column, (label, index) in enumerate(picks.items()):
        axes = figure.add_subplot(grid[0, column])
        axes.imshow(performance.frames[index])
        points = performance.landmarks[index]
        axes.scatter(points[:, 0], points[:, 1], s=4, c="lime", linewidths=0)
        row = performance.signals.iloc[index]
        axes.set_title(f"{label}: frame {index}\naperture {row.aperture:.2f}, blink {row.blink:.2f}", fontsize=9)
        axes.axis("off")
    curves = figure.add_subplot(grid[1, :])
    signals = performance.signals
    curves.plot(signals["time_s"], signals["aperture"], lw=0.8, label="aperture (drives the jaw)")
    curves.plot(signals["time_s"], signals["blink"], lw=0.8, label="blink")
    for index in picks.values():
        curves.axvline(signals["time_s"].iloc[index], color="grey", lw=0.5, ls=":")
    curves.set_xlabel("time (s)")
    curves.set_xlim(0, signals["time_s"].iloc[-1])
    curves.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
