"""A picture of a prepared subject: landmarks and parsing on a few frames, head pose and blinks over time."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from damc_core.face.prep import PreparedSubject  # noqa: E402
from damc_core.media import VIDEO_FPS  # noqa: E402


def save_preview(subject: PreparedSubject, dataset: Path, path: Path, columns: int = 4) -> None:
    """Frames evenly spread over the video with landmarks and a parsing overlay, over pose and blink curves (PNG)."""
    frames = np.linspace(0, len(subject.landmarks) - 1, columns).round().astype(int)
    figure = plt.figure(figsize=(3 * columns, 6.8), dpi=80)
    grid = figure.add_gridspec(3, columns, height_ratios=[3, 1.1, 1.1])
    for column, index in enumerate(frames):
        image = cv2.imread(str(dataset / "ori_imgs" / f"{index}.jpg"))[..., ::-1]
        parsing = cv2.imread(str(dataset / "parsing" / f"{index}.png"))[..., ::-1]
        axes = figure.add_subplot(grid[0, column])
        axes.imshow((0.65 * image + 0.35 * parsing).astype(np.uint8))
        points = subject.landmarks[index]
        axes.scatter(points[:, 0], points[:, 1], s=3, c="yellow", linewidths=0)
        split = "val" if index in subject.val_ids else "train"
        axes.set_title(f"frame {index} ({split})", fontsize=9)
        axes.axis("off")
    seconds = np.arange(len(subject.landmarks)) / VIDEO_FPS
    rotations = subject.pose.camera_to_world[:, :3, :3]
    angles = Rotation.from_matrix(rotations).as_euler("yxz", degrees=True)
    pose_axes = figure.add_subplot(grid[1, :])
    for values, label in zip(angles.T, ("yaw", "pitch", "roll"), strict=True):
        pose_axes.plot(seconds, values - np.median(values), lw=0.8, label=f"{label} (deg, minus median)")
    pose_axes.legend(loc="upper right", fontsize=7, ncols=3)
    pose_axes.set_xlim(0, seconds[-1])
    blink_axes = figure.add_subplot(grid[2, :], sharex=pose_axes)
    blink_axes.plot(seconds, subject.blink, lw=0.8, color="tab:purple", label="blink")
    if subject.val_ids.size:
        blink_axes.axvspan(seconds[subject.val_ids[0]], seconds[-1], color="grey", alpha=0.2, label="validation")
    blink_axes.legend(loc="upper right", fontsize=7)
    blink_axes.set_xlabel("time (s)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
