"""Full text × video similarity matrices in the reference's block protocols (evaluation,
live metrics, training validation): one EM run per block of texts × videos, blocks batched.

:func:`similarity_matrix` checks the request, picks the cheapest route for the as-trained
protocol (Gram matrices, frame rows or pooled rows) and runs the blocks in batched calls of
equal shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from emcl.core.em import EMParams
from emcl.core.factorized import emclnet_logits_factorized, factorized_cost, worth_it
from emcl.core.gram import gram_cost
from emcl.core.logits import emclnet_logits, inference_module_logits
from emcl.core.protocols import BLOCK, INFERENCE, PROTOCOLS, TRAINED, Protocol
from emcl.retrieval.emclnet_table import EmclNetTable

CPU_ROWS_PER_CALL = 2048  # EM rows per batched call: cache-sized on a CPU
GPU_ROWS_PER_CALL = 1 << 19  # ... and large on a GPU, where launches dominate small calls

Span = tuple[int, int]


def _split(n: int, size: int) -> list[Span]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


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


@dataclass(frozen=True)
class _Request:
    """One checked similarity request: the features, the EM setting and the protocol."""

    text: Tensor  # [Nt, D] float
    videos: Tensor | None  # [Nv, D] (inference protocol)
    frames: Tensor | None  # [Nv, T, D] (as-trained protocol)
    frame_mask: Tensor | None  # [Nv, T]
    params: EMParams | None
    prior: Tensor | None
    protocol: Protocol
    frame_temp: float
    factorize: bool

    @property
    def columns(self) -> Tensor:  # [Nv, ...] what the protocol scores the texts against
        return self.videos if self.protocol == INFERENCE else self.frames  # type: ignore[return-value]

    @property
    def n_frames(self) -> int:
        return self.frames.shape[1] if self.frames is not None else 0

    def emcl(self) -> Callable[[Tensor], Tensor] | None:
        """EMCL on stacked rows ``[..., N, D]`` (``None`` without EMCL)."""
        params = self.params
        if params is None:
            return None
        init_prior = self.prior if params.init == "prior" else None
        params.resolve_init(self.prior)  # refuses a missing or mismatched prior up front
        return lambda x: params.run(x, init_prior).embeddings

    def factorised(self, block_texts: int) -> bool:
        """Whether blocks of ``block_texts`` captions run the EM on the frame rows."""
        return (
            self.protocol == TRAINED
            and self.params is not None
            and self.factorize
            and worth_it(block_texts, self.n_frames)
        )

    def rows_per_block(self, block_texts: int, block_videos: int) -> int:
        """EM rows one block stacks (what bounds a batched call)."""
        if self.protocol == INFERENCE:
            return block_texts + block_videos
        if self.factorised(block_texts):
            return block_videos * self.n_frames + block_texts
        return block_texts * block_videos + block_texts


def _checked(text: Tensor, protocol: str, **fields: object) -> _Request:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == INFERENCE and fields["videos"] is None:
        raise ValueError("the inference protocol needs video embeddings")
    if protocol == TRAINED and fields["frames"] is None:
        raise ValueError("the as-trained protocol needs frame embeddings")
    return _Request(text=text.float(), protocol=protocol, **fields)  # type: ignore[arg-type]


def similarity_matrix(
    text: Tensor,
    *,
    videos: Tensor | None = None,
    frames: Tensor | None = None,
    frame_mask: Tensor | None = None,
    params: EMParams | None = None,
    prior: Tensor | None = None,
    protocol: Protocol = INFERENCE,
    block_texts: int | None = None,
    block_videos: int | None = None,
    frame_temp: float = 3.0,
    max_rows_per_call: int | None = None,
    factorize: bool = True,
) -> Tensor:
    """Text × video scores ``[Nt, Nv]`` in the reference's block protocol (docs/method.md §2).

    ``protocol="inference"`` needs ``videos`` ``[Nv, D]`` (EM on ``[videos; texts]`` of unit-norm
    features); ``"trained"`` needs ``frames`` ``[Nv, T, D]`` (text-conditioned pooling, EM on
    ``[pooled; texts]``). Blocks default to the protocol's (``emcl.core.protocols.BLOCK``).
    ``params=None`` gives the scores without EMCL (no blocking needed; it does not change them).
    With ``factorize`` the as-trained EM runs on the frame rows instead of the pooled rows where
    that is cheaper (``emcl.core.factorized``), or through each block's Gram matrix
    (``emcl.core.gram``, via :class:`~emcl.retrieval.emclnet_table.EmclNetTable`, as the app's
    live metrics do), whichever costs fewer FLOP (same result up to float summation order).
    Blocks of equal shape run in one batched call; ``max_rows_per_call`` bounds one call: on a
    CPU small calls keep their blocks in cache (``bench/em_bench.py``: larger calls are
    memory-bound and slower), on a GPU large calls amortise the kernel launches.
    """
    request = _checked(
        text, protocol, videos=videos, frames=frames, frame_mask=frame_mask, params=params,
        prior=prior, frame_temp=frame_temp, factorize=factorize,
    )  # fmt: skip
    blocks = (block_texts or BLOCK[protocol][0], block_videos or BLOCK[protocol][1])
    if protocol == TRAINED and params is not None and factorize:
        dim = request.text.shape[-1]
        if _gram_is_cheaper(blocks, request.n_frames, dim, params):
            table = EmclNetTable(
                request.text, frames, frame_mask, frame_temp, blocks, keep_geometry=False
            )
            return table.scores(params, prior)
    if max_rows_per_call is None:
        on_gpu = request.columns.device.type != "cpu"
        max_rows_per_call = GPU_ROWS_PER_CALL if on_gpu else CPU_ROWS_PER_CALL
    return _blocked(request, blocks, max_rows_per_call)


def _blocked(request: _Request, blocks: tuple[int, int], max_rows_per_call: int) -> Tensor:
    """Every block's scores, blocks of one shape in batched calls of at most
    ``max_rows_per_call`` EM rows; returns ``[Nt, Nv]``."""
    n_texts, n_videos = request.text.shape[0], request.columns.shape[0]
    device = request.text.device
    out = torch.empty(n_texts, n_videos, device=device)
    emcl = request.emcl()
    for (bt, bv), pairs in _groups_by_shape(n_texts, n_videos, *blocks).items():
        per_call = max(1, max_rows_per_call // request.rows_per_block(bt, bv))
        for start in range(0, len(pairs), per_call):
            chunk = pairs[start : start + per_call]
            text_idx = torch.stack([torch.arange(*ts, device=device) for ts, _ in chunk])  # [B, bt]
            video_idx = torch.stack([torch.arange(*vs, device=device) for _, vs in chunk])
            scores = _block_scores(request, emcl, text_idx, video_idx)  # [B, bt, bv]
            for (ts, vs), block in zip(chunk, scores, strict=True):
                out[ts[0] : ts[1], vs[0] : vs[1]] = block
    return out


def _block_scores(
    request: _Request,
    emcl: Callable[[Tensor], Tensor] | None,
    text_idx: Tensor,  # [B, bt]
    video_idx: Tensor,  # [B, bv]
) -> Tensor:
    """Scores ``[B, bt, bv]`` of B blocks of one shape, one EM run per block."""
    block_text = request.text[text_idx]  # [B, bt, D]
    if request.protocol == INFERENCE:
        return inference_module_logits(block_text, request.videos[video_idx].float(), emcl)
    mask = request.frame_mask[video_idx] if request.frame_mask is not None else None
    block_frames = request.frames[video_idx].float()  # [B, bv, T, D]
    if request.factorised(text_idx.shape[1]):
        scores, _ = emclnet_logits_factorized(
            block_text, block_frames, mask, request.params, request.prior, request.frame_temp
        )
        return scores
    return emclnet_logits(block_text, block_frames, mask, emcl, request.frame_temp)


__all__ = ["similarity_matrix"]
