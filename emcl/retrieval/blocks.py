"""Full text × video similarity matrices in the reference's block protocols (evaluation,
live metrics, training validation): one EM run per block of texts × videos, blocks batched."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from emcl.core.em import EMParams
from emcl.core.factorized import emclnet_logits_factorized, factorized_cost, worth_it
from emcl.core.gram import gram_cost
from emcl.core.logits import emclnet_logits, inference_module_logits
from emcl.retrieval.emclnet_table import EmclNetTable

Protocol = Literal["inference", "emclnet"]
PROTOCOLS = ("inference", "emclnet")
DEFAULT_BLOCK = {"inference": (64, 64), "emclnet": (32, 32)}  # (texts, videos) per EM block
CPU_ROWS_PER_CALL = 2048  # EM rows per batched call: cache-sized on a CPU
GPU_ROWS_PER_CALL = 1 << 19  # ... and large on a GPU, where launches dominate small calls


def _split(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


Span = tuple[int, int]


def _groups_by_shape(
    n_texts: int, n_videos: int, block_texts: int, block_videos: int
) -> dict[tuple[int, int], list[tuple[Span, Span]]]:
    """(text span, video span) blocks grouped by shape: each group is one batched call."""
    groups: dict[tuple[int, int], list[tuple[Span, Span]]] = {}
    for ts in _split(n_texts, block_texts):
        for vs in _split(n_videos, block_videos):
            groups.setdefault((ts[1] - ts[0], vs[1] - vs[0]), []).append((ts, vs))
    return groups


def _gram_is_cheaper(blocks: tuple[int, int], n_frames: int, dim: int, params: EMParams) -> bool:
    """Whether an EMCL-Net block costs fewer multiply-adds through its Gram matrix
    (``emcl.core.gram``) than through its frame rows (``emcl.core.factorized``)."""
    shape = (*blocks, n_frames, dim, params.k, params.iters)
    return gram_cost(*shape) <= factorized_cost(*shape)


def similarity_matrix(
    text: Tensor,
    *,
    videos: Tensor | None = None,
    frames: Tensor | None = None,
    frame_mask: Tensor | None = None,
    params: EMParams | None = None,
    prior: Tensor | None = None,
    protocol: Protocol = "inference",
    block_texts: int | None = None,
    block_videos: int | None = None,
    frame_temp: float = 3.0,
    max_rows_per_call: int | None = None,
    factorize: bool = True,
) -> Tensor:
    """Text × video scores ``[Nt, Nv]`` in the reference's block protocol (docs/method.md §2).

    ``protocol="inference"`` needs ``videos`` ``[Nv, D]`` (EM on ``[videos; texts]`` of unit-norm
    features, 64 × 64 blocks by default); ``"emclnet"`` needs ``frames`` ``[Nv, T, D]`` (text-
    conditioned pooling, EM on ``[pooled; texts]``, 32 × 32 blocks). ``params=None`` gives the
    scores without EMCL (no blocking needed; it does not change them). With ``factorize`` the
    EMCL-Net EM runs on the frame rows instead of the pooled rows where that is cheaper
    (``emcl.core.factorized``), or through each block's Gram matrix (``emcl.core.gram``, via
    :class:`~emcl.retrieval.emclnet_table.EmclNetTable`, as the app's live metrics do), whichever
    costs fewer FLOP (same result up to float summation order). Blocks of equal shape run
    in one batched call; ``max_rows_per_call`` bounds one call: on a CPU small calls keep their
    blocks in cache (``bench/em_bench.py``: larger calls are memory-bound and slower), on a GPU
    large calls amortise the kernel launches.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "inference" and videos is None:
        raise ValueError("the inference protocol needs video embeddings")
    if protocol == "emclnet" and frames is None:
        raise ValueError("the emclnet protocol needs frame embeddings")
    if max_rows_per_call is None:
        on_gpu = (videos if videos is not None else frames).device.type != "cpu"
        max_rows_per_call = GPU_ROWS_PER_CALL if on_gpu else CPU_ROWS_PER_CALL
    default_t, default_v = DEFAULT_BLOCK[protocol]
    block_texts = block_texts or default_t
    block_videos = block_videos or default_v
    text = text.float()
    blocks = (block_texts, block_videos)
    gram_route = protocol == "emclnet" and params is not None and factorize
    if gram_route and _gram_is_cheaper(blocks, frames.shape[1], text.shape[-1], params):
        table = EmclNetTable(text, frames, frame_mask, frame_temp, blocks, keep_geometry=False)
        return table.scores(params, prior)
    n_texts = text.shape[0]
    n_videos = (videos if protocol == "inference" else frames).shape[0]
    device = text.device
    out = torch.empty(n_texts, n_videos, device=device)

    emcl = None
    if params is not None:
        init_prior = prior if params.init == "prior" else None
        params.resolve_init(prior)

        def emcl(x: Tensor) -> Tensor:
            return params.run(x, init_prior).embeddings

    n_frames = frames.shape[1] if frames is not None else 0
    for (bt, bv), pairs in _groups_by_shape(n_texts, n_videos, block_texts, block_videos).items():
        fast = protocol == "emclnet" and params is not None and factorize and worth_it(bt, n_frames)
        if protocol == "inference":
            rows_per_block = bt + bv
        else:
            rows_per_block = bv * n_frames + bt if fast else bt * bv + bt
        per_call = max(1, max_rows_per_call // rows_per_block)
        for start in range(0, len(pairs), per_call):
            chunk = pairs[start : start + per_call]
            text_idx = torch.stack([torch.arange(*ts, device=device) for ts, _ in chunk])  # [B, bt]
            video_idx = torch.stack([torch.arange(*vs, device=device) for _, vs in chunk])
            block_text = text[text_idx]  # [B, bt, D]
            if protocol == "inference":
                scores = inference_module_logits(block_text, videos[video_idx].float(), emcl)
            else:
                mask = frame_mask[video_idx] if frame_mask is not None else None
                block_frames = frames[video_idx].float()
                if fast:
                    scores, _ = emclnet_logits_factorized(
                        block_text, block_frames, mask, params, prior, frame_temp
                    )
                else:
                    scores = emclnet_logits(block_text, block_frames, mask, emcl, frame_temp)
            for (ts, vs), block in zip(chunk, scores, strict=True):
                out[ts[0] : ts[1], vs[0] : vs[1]] = block
    return out


__all__ = ["DEFAULT_BLOCK", "PROTOCOLS", "Protocol", "similarity_matrix"]
