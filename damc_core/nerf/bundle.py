"""The exported talking head: head.pt (the head and its E_d) and head.json (what it was trained with and on)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from damc_core.config import from_dict, to_dict
from damc_core.errors import InputError
from damc_core.nerf.model import TalkingHead
from damc_core.params import FieldConfig, FusionConfig
from damc_core.sync.models import DynamicSyncEncoder
from damc_core.training import export_weights

HEAD_WEIGHTS = "head.pt"
"""The exported bundle: {"talking_head": state dict, "dynamic_encoder": state dict}; its meta is head.json."""


class HeadBundleError(InputError, FileNotFoundError):
    """A --model folder that holds no exported head."""


def export_head(out_dir: Path, head: TalkingHead, encoder: DynamicSyncEncoder, meta: dict) -> None:
    """head.pt (the head and E_d, so the bundle alone turns audio into frames) and head.json (`meta` plus the
    sizes and configs the head is rebuilt from)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": "TalkingHead (damc_core.nerf.model)",
        "fusion": to_dict(head.fusion_config),
        "field": to_dict(head.field.config),
        "content_dim": head.fusion.input_dims["content"],
        "dynamic_dim": head.fusion.input_dims["dynamic"],
        "latent_count": len(head.field.latents),
    } | meta
    weights = {"talking_head": head.state_dict(), "dynamic_encoder": encoder.state_dict()}
    export_weights(out_dir / HEAD_WEIGHTS, weights, meta)


def load_head(
    model_dir: Path, device: torch.device | str = "cpu"
) -> tuple[TalkingHead, DynamicSyncEncoder, dict]:
    """The exported head (eval mode, frozen), its E_d, and its meta, from a nerf_coarse or nerf_fine folder."""
    path = Path(model_dir) / HEAD_WEIGHTS
    if not path.exists():
        raise HeadBundleError(f"{path} is missing: --model must be a nerf_coarse or nerf_fine output folder "
                                f"(e.g. data/nerf_fine/<subject>); run `dvc repro` to train one")
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    weights = torch.load(path, map_location=device, weights_only=True)
    head = TalkingHead(meta["content_dim"], meta["dynamic_dim"], from_dict(FusionConfig, meta["fusion"]),
                       from_dict(FieldConfig, meta["field"]), meta["latent_count"])
    head.load_state_dict(weights["talking_head"])
    encoder = DynamicSyncEncoder(out_dim=meta["dynamic_encoder"]["output_dim"])
    encoder.load_state_dict(weights["dynamic_encoder"])
    for module in (head, encoder):
        module.to(device).eval().requires_grad_(False)
    return head, encoder, meta
