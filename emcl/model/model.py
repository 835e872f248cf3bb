"""The EMCL retrieval model: open_clip backbone, CLIP4Clip temporal aggregation, EMCL-Net logits
with the EMCL layer after pooling and before the cosine (docs/method.md §2.1).

    frames uint8 [B, T, H, W, 3] --open_clip eval transform--> pixels [B, T, 3, S, S]
        --ViT, projected CLS per frame--> [B, T, D] --meanP | seqTransf--> frames [B, T, D]
    captions --open_clip tokenizer--> ids [B, L] --text transformer--> sentence [B, D]
                                                                       + token states [B, L, D]
    logits = emclnet_logits(sentence, frames, mask, emcl=EMCLLayer)          # [Bt, Bv] cosines
    loss   = symmetric InfoNCE on min(exp(logit_scale), 100) * logits      (emcl/model/loss.py)

The EMCL layer's momentum prior is a registered buffer, so it is saved with the weights
(emcl/model/checkpoint.py). Training and evaluation share one similarity implementation
(emcl/core/logits.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, Transformer
from torch import Tensor, nn
from torchvision.transforms import Compose, Normalize

from emcl.core.em import EMCLLayer
from emcl.core.logits import emclnet_logits
from emcl.model.backbone import create_backbone
from emcl.model.config import ModelConfig

_MASK_VALUE = -1e4  # additive attention mask for padded frames (finite: safe in fp16)


# --------------------------------------------------------------------------------------------
# Temporal aggregation (CLIP4Clip seqTransf)
# --------------------------------------------------------------------------------------------
class TemporalTransformer(nn.Module):
    """``out = transformer(v + frame_pos) + v`` with padded frames masked out (CLIP4Clip)."""

    def __init__(self, width: int, layers: int, heads: int, max_frames: int, act_layer: type):
        super().__init__()
        self.heads = heads
        self.frame_position_embeddings = nn.Embedding(max_frames, width)
        self.transformer = Transformer(width, layers, heads, act_layer=act_layer)

    def init_from_text(self, clip: open_clip.CLIP) -> None:
        """CLIP4Clip's initialisation: text positional embeddings and the first text blocks."""
        with torch.no_grad():
            table = self.frame_position_embeddings.weight  # [max_frames, D]
            rows = min(table.shape[0], clip.positional_embedding.shape[0])
            table[:rows].copy_(clip.positional_embedding[:rows])
            text_blocks = clip.transformer.resblocks[: len(self.transformer.resblocks)]
            for mine, theirs in zip(self.transformer.resblocks, text_blocks, strict=False):
                mine.load_state_dict(theirs.state_dict())

    def forward(self, frames: Tensor, frame_mask: Tensor) -> Tensor:  # [B, T, D], [B, T] bool
        b, t, _ = frames.shape
        if t > self.frame_position_embeddings.num_embeddings:
            raise ValueError(
                f"{t} frames but the model has {self.frame_position_embeddings.num_embeddings} "
                "frame positions (config num_frames)"
            )
        x = frames + self.frame_position_embeddings.weight[:t].to(frames.dtype)  # [B, T, D]
        blocked = (~frame_mask).to(frames.dtype) * _MASK_VALUE  # [B, T] keys to ignore
        attn_mask = blocked[:, None, :].expand(b, t, t).repeat_interleave(self.heads, dim=0)
        return self.transformer(x, attn_mask=attn_mask) + frames  # [B, T, D]


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextFeatures:
    sentence: Tensor  # [B, D] projected state at the EOT token
    tokens: Tensor  # [B, L, D] projected token states
    mask: Tensor  # [B, L] bool, real tokens (SOT, words, EOT)


class EMCLRetrievalModel(nn.Module):
    """Backbone + temporal aggregation + EMCL layer; see the module docstring for the flow."""

    def __init__(self, config: ModelConfig, *, load_pretrained: bool = True):
        super().__init__()
        pretrained = config.pretrained if load_pretrained else None
        self.clip, quick_gelu = create_backbone(config.backbone, pretrained, config.quick_gelu)
        self.config = dataclasses.replace(config, quick_gelu=quick_gelu)
        self.embed_dim = int(self.clip.text_projection.shape[-1])
        if config.max_words > self.clip.positional_embedding.shape[0]:
            raise ValueError(
                f"max_words={config.max_words} exceeds the backbone's text context "
                f"({self.clip.positional_embedding.shape[0]})"
            )

        self.temporal: TemporalTransformer | None = None
        if config.temporal == "seqTransf":
            text_width = self.clip.transformer.width
            text_heads = self.clip.transformer.resblocks[0].attn.num_heads
            heads = text_heads if text_width == self.embed_dim else max(1, self.embed_dim // 64)
            act = QuickGELU if quick_gelu else nn.GELU
            self.temporal = TemporalTransformer(
                self.embed_dim, config.temporal_layers, heads, config.num_frames, act
            )
            if text_width == self.embed_dim:
                self.temporal.init_from_text(self.clip)

        self.emcl: EMCLLayer | None = None
        if config.emcl is not None:
            e = config.emcl
            init = "prior" if e.init == "prior" else "data"
            self.emcl = EMCLLayer(e.k, e.iters, e.lam, e.beta, e.momentum, init, e.seed)

        self.tokenizer = open_clip.get_tokenizer(config.backbone, context_length=config.max_words)
        preprocess_cfg = open_clip.transform.PreprocessCfg(**self.clip.visual.preprocess_cfg)
        transform = open_clip.transform.image_transform_v2(preprocess_cfg, is_train=False)
        if not isinstance(transform.transforms[-1], Normalize):
            raise ValueError("unexpected open_clip transform: the last step must be Normalize")
        self.image_size = int(np.max(preprocess_cfg.size))
        self._geometric = Compose(transform.transforms[:-1])  # resize, crop (tensor-safe)
        self._normalize = transform.transforms[-1]

    # ---- parameters ----------------------------------------------------------------------
    def new_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters outside the CLIP backbone (the temporal transformer)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("clip.")]

    def logit_scale(self) -> Tensor:
        return self.clip.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    # ---- preprocessing -------------------------------------------------------------------
    def resize_frames(self, frames: np.ndarray | Tensor, chunk: int = 256) -> Tensor:
        """open_clip's eval resize/crop on uint8 frames ``[..., H, W, 3]`` -> ``[..., S, S, 3]``."""
        x = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames)
        if x.dtype != torch.uint8 or x.dim() < 3 or x.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [..., H, W, 3], got {x.dtype} {tuple(x.shape)}")
        lead, (h, w) = x.shape[:-3], x.shape[-3:-1]
        if h == w == self.image_size:
            return x.clone()
        flat = x.reshape(-1, h, w, 3)
        out = torch.empty(flat.shape[0], self.image_size, self.image_size, 3, dtype=torch.uint8)
        for start in range(0, flat.shape[0], chunk):
            part = flat[start : start + chunk].permute(0, 3, 1, 2).float()  # [n, 3, H, W]
            part = self._geometric(part).round_().clamp_(0, 255)
            out[start : start + chunk] = part.to(torch.uint8).permute(0, 2, 3, 1)
        return out.reshape(*lead, self.image_size, self.image_size, 3)

    def frames_to_pixels(
        self, frames: np.ndarray | Tensor, device: torch.device | str | None = None
    ) -> Tensor:
        """uint8 ``[..., H, W, 3]`` -> normalised float ``[..., 3, S, S]`` (the eval transform).

        ``device``: where the pixels go; the frames travel there as uint8 (a quarter of the
        float bytes) and are normalised there."""
        x = self.resize_frames(frames)
        if device is not None:
            x = x.to(device, non_blocking=True)
        x = x.movedim(-1, -3).float().div_(255.0)  # [..., 3, S, S]
        return self._normalize(x.reshape(-1, *x.shape[-3:])).reshape(x.shape)

    def tokenize(self, texts: list[str]) -> Tensor:
        """Token ids ``[B, max_words]`` (truncated with EOT last, as open_clip does)."""
        return self.tokenizer(texts, context_length=self.config.max_words)

    # ---- encoders ------------------------------------------------------------------------
    def encode_frames(self, pixels: Tensor) -> Tensor:  # [B, T, 3, S, S] -> [B, T, D]
        b, t = pixels.shape[:2]
        return self.clip.visual(pixels.flatten(0, 1)).reshape(b, t, -1)

    def aggregate(self, frames: Tensor, frame_mask: Tensor) -> Tensor:  # [B, T, D] -> [B, T, D]
        if self.temporal is None:  # meanP: the frames are used as they are
            return frames
        return self.temporal(frames, frame_mask)

    def encode_video(self, pixels: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """Per-frame features after temporal aggregation ``[B, T, D]`` (not normalised)."""
        if frame_mask is None:
            frame_mask = torch.ones(pixels.shape[:2], dtype=torch.bool, device=pixels.device)
        return self.aggregate(self.encode_frames(pixels), frame_mask.bool())

    def encode_text(self, ids: Tensor) -> TextFeatures:
        """Sentence ``[B, D]`` (EOT state) and projected token states ``[B, L, D]``."""
        clip = self.clip
        length = ids.shape[1]
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(ids).to(cast) + clip.positional_embedding[:length].to(cast)
        causal = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.ln_final(clip.transformer(x, attn_mask=causal))  # [B, L, W]
        if isinstance(clip.text_projection, nn.Linear):
            tokens = clip.text_projection(x)
        else:
            tokens = x @ clip.text_projection  # [B, L, D]
        pool_type = clip.text_pool_type
        sentence = open_clip.transformer.text_global_pool(
            tokens, ids, pool_type, eos_token_id=getattr(clip, "text_eos_id", None)
        )
        return TextFeatures(sentence=sentence, tokens=tokens, mask=ids != 0)

    # ---- training ------------------------------------------------------------------------
    def forward(
        self, ids: Tensor, pixels: Tensor, frame_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Local features for one (per-rank) batch: text ``[B, D]``, frames ``[B, T, D]`` and
        the clamped logit scale. The logits need the global batch: see :meth:`logits`."""
        text = self.encode_text(ids).sentence
        frames = self.encode_video(pixels, frame_mask)
        return text.float(), frames.float(), self.logit_scale()

    def logits(self, text: Tensor, frames: Tensor, frame_mask: Tensor) -> Tensor:
        """EMCL-Net cosine logits ``[Bt, Bv]``; the EMCL layer updates its prior in train mode."""
        return emclnet_logits(text, frames, frame_mask, self.emcl, self.config.frame_temp)


def mean_video(frames: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """Mean over valid frames of the L2-normalised frames ``[B, T, D]`` -> ``[B, D]``
    (CLIP4Clip meanP; the inference-module protocol normalises the result again)."""
    unit = F.normalize(frames.float(), dim=-1)
    if frame_mask is None:
        return unit.mean(dim=1)
    weights = frame_mask.to(unit.dtype)[..., None]  # [B, T, 1]
    return (unit * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


__all__ = ["EMCLRetrievalModel", "TemporalTransformer", "TextFeatures", "mean_video"]
