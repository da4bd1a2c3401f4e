"""The vision side of a multimodal checkpoint, read from its published ``config.json`` (``vision_config``) and the
processor settings vLLM sizes images with (``preprocessor_config.json``).

What the planner needs: the tower's and projector's parameters (vLLM loads them beside the language model), the ViT's
shape (its activation when vLLM runs the encoder), and per modality the most embeddings one item yields and the ViT
positions that item takes, the way vLLM 0.26's processors count them (each family's ``ProcessingInfo`` in
``vllm/model_executor/models/``). Families: SigLIP (Gemma 3), the Qwen2.5-VL ViT, Pixtral (Mistral 3.1), Llama 4's ViT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from stacks.config.schema import VisionArchConfig

Family = Literal["siglip", "qwen2_5_vl", "pixtral", "llama4", "arch"]

ARCHITECTURES: dict[str, Family] = {
    "Gemma3ForConditionalGeneration": "siglip",
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Mistral3ForConditionalGeneration": "pixtral",
    "Llama4ForConditionalGeneration": "llama4",
}
"""Architectures whose vision side this module can describe (vLLM's registry names)."""

QWEN_MAX_FRAMES_PER_VIDEO = 14
"""vllm/model_executor/models/qwen2_vl.py ``_MAX_FRAMES_PER_VIDEO`` (0.26.0): frames of the profiled dummy video."""


@dataclass(frozen=True)
class Modality:
    """One input kind a tower takes (vLLM's modality names: ``image``, ``video``)."""

    name: str
    embeds_per_item: int
    """Most encoder outputs one item yields at the processor's largest size: what vLLM's encoder budget counts
    (``get_mm_max_toks_per_item``); for video, one video of the frames vLLM profiles with (see ``video_embeds``)."""
    positions_per_embed: float
    """ViT sequence positions behind one output embedding (spatial merge x temporal patch, pixel shuffle, class tokens)."""


@dataclass(frozen=True)
class VisionTower:
    """A vision encoder and its projector, as vLLM builds them (``_mark_tower_model`` marks both)."""

    family: Family
    layers: int
    hidden_size: int
    intermediate_size: int
    heads: int
    gated_mlp: bool
    """SiLU-gated MLP (gate and up projections) rather than one GELU projection."""
    patch_size: int
    frames_per_patch: int
    """Frames one ViT position spans (Qwen2.5-VL's temporal patch: 2; images are repeated to fill it)."""
    parameters: int
    """Tower and projector, counted from the config's shapes (see ``_parameters``)."""
    modalities: tuple[Modality, ...]
    image_frame_tokens: int = 0
    """Qwen2.5-VL: embeddings of one frame pair at the largest size; a video of n frames yields ceil(n / 2) of them."""

    def modality(self, name: str) -> Modality | None:
        return next((m for m in self.modalities if m.name == name), None)

    def video_embeds(self, max_model_len: int, videos: int = 1) -> int:
        """Qwen2VLProcessingInfo.get_max_video_tokens (0.26.0): the most frames whose tokens fit ``max_model_len``
        (at least one), shared by ``videos`` videos and at most ``QWEN_MAX_FRAMES_PER_VIDEO``; frames padded to pairs."""

        def tokens(frames: int) -> int:
            return max((frames + frames % 2) // 2, 1) * self.image_frame_tokens

        frames = 1
        while tokens(frames + 1) <= max_model_len:
            frames += 1
        frames = max(min(frames // max(videos, 1), QWEN_MAX_FRAMES_PER_VIDEO), 1)
        return tokens(frames)


def _vit_layer(h: int, i: int, *, gated: bool, bias: bool, norms: int) -> int:
    """One pre-norm ViT block: q, k, v, o projections, the MLP (two or three matrices) and its norms."""
    attention = 4 * h * h + (4 * h if bias else 0)
    mlp = (3 if gated else 2) * h * i + ((2 * i + h if gated else i + h) if bias else 0)
    return attention + mlp + norms * h


def _siglip(cfg: Mapping[str, Any], text_hidden: int) -> tuple[int, int]:
    """(parameters, ViT positions per image) for Gemma 3's SigLIP and its projector (gemma3_mm.py, siglip.py)."""
    v = cfg["vision_config"]
    h, i, p, size = int(v["hidden_size"]), int(v["intermediate_size"]), int(v.get("patch_size", 14)), int(v.get("image_size", 896))
    positions = (size // p) ** 2
    tower = 3 * p * p * h + h + positions * h + int(v["num_hidden_layers"]) * _vit_layer(h, i, gated=False, bias=True, norms=4) + 2 * h
    projector = h * text_hidden + h  # mm_input_projection_weight and mm_soft_emb_norm
    return tower + projector, positions


def _qwen2_5_vl(cfg: Mapping[str, Any]) -> int:
    """Parameters of the Qwen2.5-VL ViT and its patch merger (qwen2_5_vl.py: Conv3d without bias, RMSNorm blocks,
    biased gated MLP, merger LayerNorm + two biased linears over merge^2 x hidden)."""
    v = cfg["vision_config"]
    h, i, p, t = int(v["hidden_size"]), int(v["intermediate_size"]), int(v.get("patch_size", 14)), int(v.get("temporal_patch_size", 2))
    merged = h * int(v.get("spatial_merge_size", 2)) ** 2
    out = int(v.get("out_hidden_size", cfg.get("hidden_size", 0)))
    tower = 3 * t * p * p * h + int(v["depth"]) * _vit_layer(h, i, gated=True, bias=True, norms=2)
    merger = h + merged * merged + merged + merged * out + out
    return tower + merger


def _pixtral(cfg: Mapping[str, Any], text_hidden: int) -> int:
    """Parameters of Pixtral (bias-free, RMSNorm, gated MLP) and Mistral 3's projector (norm, patch merger, two linears)."""
    v = cfg["vision_config"]
    h, i, p = int(v["hidden_size"]), int(v["intermediate_size"]), int(v.get("patch_size", 14))
    merge = int(cfg.get("spatial_merge_size", 2))
    bias = bool(cfg.get("multimodal_projector_bias", False))
    tower = 3 * p * p * h + h + int(v["num_hidden_layers"]) * _vit_layer(h, i, gated=True, bias=False, norms=2)
    projector = h + h * merge * merge * h + h * text_hidden + text_hidden * text_hidden + (2 * text_hidden if bias else 0)
    return tower + projector


def _llama4(cfg: Mapping[str, Any], text_hidden: int) -> tuple[int, int, int]:
    """(parameters, embeddings per tile, ViT positions per tile) of Llama 4's ViT, pixel-shuffle adapter and projector
    (mllama4.py: unfold patch embedding, class token, LayerNorm blocks with biased GELU MLP)."""
    v = cfg["vision_config"]
    h, i, p, size = int(v["hidden_size"]), int(v["intermediate_size"]), int(v["patch_size"]), int(v["image_size"])
    patches = (size // p) ** 2
    shuffle = float(v.get("pixel_shuffle_ratio", 0.5))
    adapter_in = int(v.get("projector_input_dim", 4096))
    adapter_out = int(v.get("projector_output_dim", 4096))
    output_dim = int(v.get("vision_output_dim", adapter_out))
    shuffled = int(h / (shuffle * shuffle))
    tower = 3 * p * p * h + h + (patches + 1) * h + 4 * h + int(v["num_hidden_layers"]) * _vit_layer(h, i, gated=False, bias=True, norms=4)
    adapter = shuffled * adapter_in + adapter_in * adapter_out
    projector = output_dim * text_hidden
    return tower + adapter + projector, int(patches * shuffle * shuffle), patches + 1


def from_config(cfg: Mapping[str, Any], processor: Mapping[str, Any], text_hidden: int) -> VisionTower | None:
    """The tower a published multimodal config.json describes; None for text-only configs and unknown families.

    ``processor``: the settings of the checkpoint's ``preprocessor_config.json`` that size the largest item
    (``max_pixels`` for Qwen2.5-VL, ``max_patches`` for Llama 4), as the catalog keeps them.
    """
    family = next((ARCHITECTURES[a] for a in cfg.get("architectures") or [] if a in ARCHITECTURES), None)
    v = cfg.get("vision_config")
    if family is None or not v:
        return None
    if family == "siglip":
        params, positions = _siglip(cfg, text_hidden)
        tokens = int(cfg.get("mm_tokens_per_image", 256))  # pan-and-scan off: one crop per image (gemma3_mm.py get_num_crops)
        image = Modality("image", tokens, positions / tokens)
        return VisionTower(family, int(v["num_hidden_layers"]), int(v["hidden_size"]), int(v["intermediate_size"]),
                           int(v["num_attention_heads"]), False, int(v.get("patch_size", 14)), 1, params, (image,))  # fmt: skip
    if family == "qwen2_5_vl":
        unit = int(v.get("patch_size", 14)) * int(v.get("spatial_merge_size", 2))
        # Qwen2VLProcessingInfo.get_image_size_with_most_features: max_pixels // unit^2 merged patches
        frame = int(processor.get("max_pixels", 12845056)) // (unit * unit)
        merge = int(v.get("spatial_merge_size", 2)) ** 2
        modalities = (Modality("image", frame, merge), Modality("video", frame, merge))
        return VisionTower(family, int(v["depth"]), int(v["hidden_size"]), int(v["intermediate_size"]), int(v["num_heads"]),
                           True, int(v.get("patch_size", 14)),
                           int(v.get("temporal_patch_size", 2)), _qwen2_5_vl(cfg), modalities, image_frame_tokens=frame)  # fmt: skip
    if family == "pixtral":
        p, size = int(v.get("patch_size", 14)), int(v.get("image_size", 1540))
        merge = int(cfg.get("spatial_merge_size", 2))
        side = math.ceil(size / (p * merge))  # PixtralHFEncoderInfo.get_patch_grid_size at the largest image
        image = Modality("image", side * side, merge * merge)
        return VisionTower(family, int(v["num_hidden_layers"]), int(v["hidden_size"]), int(v["intermediate_size"]),
                           int(v["num_attention_heads"]), True, p, 1, _pixtral(cfg, text_hidden), (image,))  # fmt: skip
    params, per_tile, positions = _llama4(cfg, text_hidden)
    # Llama4ProcessingInfo.get_image_size_with_most_features: max_patches tiles in a column, plus the global tile
    tiles = int(processor.get("max_patches", 16)) + 1
    image = Modality("image", tiles * per_tile, positions / per_tile)
    return VisionTower(family, int(v["num_hidden_layers"]), int(v["hidden_size"]), int(v["intermediate_size"]),
                       int(v["num_attention_heads"]), False, int(v["patch_size"]), 1, params, (image,))  # fmt: skip


def from_arch(v: VisionArchConfig) -> VisionTower:
    """A tower described in the stack file (``arch.vision``): images only."""
    image = Modality("image", v.embeds_per_image, v.positions_per_embed)
    return VisionTower("arch", v.layers, v.hidden_size, v.intermediate_size, v.heads, v.gated_mlp, v.patch_size, 1,
                       int(v.parameters_b * 1e9), (image,))  # fmt: skip
