"""Read-only feature extraction for the gallery, the app and evaluation.

An :class:`Encoder` wraps a loaded :class:`~emcl.model.model.EMCLRetrievalModel` in eval mode with
gradients off. Every call runs under ``torch.inference_mode()`` and never writes to the model (the
EMCL prior included), so one encoder can serve concurrent requests. Outputs are float32 CPU
tensors. ``precision`` says how the model computes: ``auto`` is bf16 (or fp16) autocast on CUDA
and fp32 on the CPU; ``fp32`` on a GPU gives the CPU's features to float rounding (the setting
for CPU/GPU parity runs); ``bf16`` and ``fp16`` autocast wherever they run. A gallery's cache key
includes it (emcl/data/gallery/settings.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from torch import Tensor

from emcl.model.backbone import resolve_device
from emcl.model.checkpoint import load_checkpoint
from emcl.model.config import PRECISIONS
from emcl.model.model import EMCLRetrievalModel, mean_video


@dataclass(frozen=True)
class TokenizedText:
    ids: list[int]  # [SOT, BPE ids..., EOT], at most max_words
    truncated: bool
    words: list[str]  # BPE pieces merged into words
    word_positions: list[list[int]]  # token positions of each word


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: fp32, no autocast)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def model_fingerprint(model: EMCLRetrievalModel) -> str:
    """SHA-256 (hex, 16 chars) of the config and every weight and buffer, for cache keys."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


class Encoder:
    """Frames and texts to embeddings with a frozen model (see the module docstring)."""

    def __init__(
        self,
        model: EMCLRetrievalModel,
        device: str | torch.device = "auto",
        precision: str = "auto",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.fingerprint: str = model_fingerprint(model)
        self.device = resolve_device(device)
        self.precision = precision
        self.model = model.to(self.device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.config = model.config
        self.embed_dim = model.embed_dim
        self.num_frames = model.config.num_frames
        self.image_size = model.image_size
        self._amp_dtype = _amp_dtype(precision, self.device)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "auto", precision: str = "auto"
    ) -> Encoder:
        return cls(load_checkpoint(path), device, precision)

    @property
    def prior(self) -> Tensor | None:
        """The trained EMCL prior ``[1, K]`` (a copy), or ``None`` for a base model."""
        emcl = self.model.emcl
        return None if emcl is None else emcl.prior.detach().to("cpu").clone()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    # ---- videos --------------------------------------------------------------------------
    def encode_videos(
        self,
        frames: np.ndarray | Tensor,
        frame_mask: np.ndarray | Tensor | None = None,
        batch_size: int = 32,
    ) -> dict[str, Tensor]:
        """uint8 frames ``[B, T, H, W, 3]`` -> ``{"frames": [B, T, D], "video": [B, D]}``.

        ``frames`` are after temporal aggregation (not normalised; the EMCL-Net protocol pools
        them per text). ``video`` is the mean of the L2-normalised valid frames (the
        inference-module protocol's video embedding, before its final normalisation).
        ``frame_mask`` ``[B, T]`` marks real frames (default: all).
        """
        frames = torch.as_tensor(frames)
        if frames.dim() != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(
                f"frames must be uint8 [B, T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
            )
        b, t = frames.shape[:2]
        if t > self.num_frames:
            raise ValueError(f"{t} frames per clip, the model takes at most {self.num_frames}")
        mask = torch.ones(b, t, dtype=torch.bool)
        if frame_mask is not None:
            mask = torch.as_tensor(frame_mask, dtype=torch.bool)
            if mask.shape != (b, t):
                raise ValueError(f"frame_mask must be [{b}, {t}], got {tuple(mask.shape)}")
        out = torch.empty(b, t, self.embed_dim)
        with torch.inference_mode():
            for start in range(0, b, batch_size):
                stop = min(start + batch_size, b)
                pixels = self.model.frames_to_pixels(frames[start:stop], self.device)
                part_mask = mask[start:stop].to(self.device)
                with self._autocast():
                    features = self.model.encode_video(pixels, part_mask)
                out[start:stop] = features.float().cpu()
            video = mean_video(out, mask)
        return {"frames": out, "video": video, "frame_mask": mask}

    # ---- texts ---------------------------------------------------------------------------
    def tokenize(self, text: str) -> TokenizedText:
        """open_clip BPE ids (truncated as open_clip does) and the words they form."""
        tokenizer = self.model.tokenizer
        limit = self.config.max_words
        if not isinstance(tokenizer, open_clip.SimpleTokenizer):
            ids = self.model.tokenize([text])[0]
            ids = ids[ids != 0].tolist()
            return TokenizedText(ids, False, [], [])
        body = tokenizer.encode(text)
        ids = [tokenizer.sot_token_id, *body, tokenizer.eot_token_id]
        truncated = len(ids) > limit
        if truncated:
            ids = ids[:limit]
            ids[-1] = tokenizer.eot_token_id
        words: list[str] = []
        positions: list[list[int]] = []
        pieces: list[str] = []
        owned: list[int] = []
        for position, token in enumerate(ids[1:-1], start=1):
            piece = tokenizer.decoder[token]
            pieces.append(piece.removesuffix("</w>"))
            owned.append(position)
            if piece.endswith("</w>") or position == len(ids) - 2:
                raw = bytearray(tokenizer.byte_decoder[c] for c in "".join(pieces))
                words.append(raw.decode("utf-8", errors="replace"))
                positions.append(owned)
                pieces, owned = [], []
        return TokenizedText(ids, truncated, words, positions)

    def encode_texts(self, texts: list[str], batch_size: int = 256) -> dict:
        """Sentence ``[B, D]``, token states ``[B, L, D]`` + ``token_mask`` ``[B, L]``, the words
        (BPE pieces merged), ``word_tokens`` ``[B, W, D]`` (token states averaged per word) +
        ``word_mask`` ``[B, W]``, and ``truncated`` per text. Empty texts are rejected."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text #{i} is empty; give at least one word")
        tokenized = [self.tokenize(text) for text in texts]
        length = self.config.max_words
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        for row, item in enumerate(tokenized):
            ids[row, : len(item.ids)] = torch.tensor(item.ids)
        sentence = torch.empty(len(texts), self.embed_dim)
        tokens = torch.empty(len(texts), length, self.embed_dim)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                stop = min(start + batch_size, len(texts))
                with self._autocast():
                    features = self.model.encode_text(ids[start:stop].to(self.device))
                sentence[start:stop] = features.sentence.float().cpu()
                tokens[start:stop] = features.tokens.float().cpu()
            n_words = max((len(item.words) for item in tokenized), default=0)
            word_tokens = torch.zeros(len(texts), n_words, self.embed_dim)
            word_mask = torch.zeros(len(texts), n_words, dtype=torch.bool)
            for row, item in enumerate(tokenized):
                for w, places in enumerate(item.word_positions):
                    word_tokens[row, w] = tokens[row, places].mean(dim=0)
                    word_mask[row, w] = True
        return {
            "sentence": sentence,
            "tokens": tokens,
            "token_mask": ids != 0,
            "words": [item.words for item in tokenized],
            "word_tokens": word_tokens,
            "word_mask": word_mask,
            "truncated": [item.truncated for item in tokenized],
        }


__all__ = ["Encoder", "TokenizedText", "model_fingerprint"]
