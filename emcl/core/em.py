"""The EM subspace decomposition of EMCL (docs/method.md §1.3): pure tensor functions, a layer.

Orientation (docs/method.md §1.1): the input ``x`` stacks samples as rows, ``[N, D]`` (videos first,
then texts). EM clusters the D feature *dimensions*: responsibilities ``z`` are ``[D, K]`` and the
bases ``mu`` live in sample space, ``[N, K]``. The output is ``x + beta * mu @ z^T``.

Every function accepts any number of leading batch dimensions so that many evaluation blocks run
in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor, nn

EPS = 1e-6  # the reference's guard in both normalisations
NORM_EPS = 1e-12  # F.normalize's guard: final cosines and ratios to a row's norm
RANK_TOL = 1e-3  # effective K: singular values above this share of the largest

# Accepted ranges. Everything inside gives finite outputs (tests/test_em.py, hypothesis).
K_RANGE = (1, 1024)
ITERS_RANGE = (0, 200)
LAM_RANGE = (1e-4, 1e4)
BETA_RANGE = (0.0, 100.0)
MOMENTUM_RANGE = (0.0, 1.0)
PRIOR_MOMENTUM = 0.9  # the reference's momentum for the trained prior (docs/method.md §1.7)

InitName = Literal["reference", "data", "prior"]
Init = InitName | Tensor


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_k(k: object) -> int:
    if not _is_int(k) or not K_RANGE[0] <= k <= K_RANGE[1]:
        raise ValueError(f"k must be an integer in [{K_RANGE[0]}, {K_RANGE[1]}], got {k!r}")
    return k  # type: ignore[return-value]


def check_iters(iters: object) -> int:
    if not _is_int(iters) or not ITERS_RANGE[0] <= iters <= ITERS_RANGE[1]:
        raise ValueError(
            f"iters must be an integer in [{ITERS_RANGE[0]}, {ITERS_RANGE[1]}], got {iters!r}"
        )
    return iters  # type: ignore[return-value]


def _check_float(name: str, value: object, lo: float, hi: float, *, open_lo: bool = False) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or not lo <= number <= hi:
        raise ValueError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return number


def check_lam(lam: object) -> float:
    return _check_float("lam", lam, *LAM_RANGE)


def check_beta(beta: object) -> float:
    return _check_float("beta", beta, *BETA_RANGE)


def check_momentum(momentum: object) -> float:
    return _check_float("momentum", momentum, *MOMENTUM_RANGE)


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------
def reference_init(k: int, generator: torch.Generator | None = None) -> Tensor:
    """The authors' prior, exactly: ``normal(0, sqrt(2/k))`` divided by ``1e-6 + norm(dim=0)``.

    The norm runs over the size-1 row dimension, so every entry becomes ``±(1 - ~1e-6)``: this is
    what makes the reference collapse to two distinct subspaces (docs/method.md §1.5).
    Returns ``[1, K]``.
    """
    check_k(k)
    mu = torch.empty(1, k).normal_(0.0, math.sqrt(2.0 / k), generator=generator)  # [1, K]
    return mu / (EPS + mu.norm(dim=0))


def data_init(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Ours, symmetry-breaking: K feature columns of ``x`` chosen at random, as unit-norm bases.

    ``x`` is ``[..., N, D]``; returns ``[..., N, K]``. Columns are drawn without replacement while
    ``K <= D``. The bases are L2-normalised as the M-step does, so the first E-step sees them on
    the same scale as every later one.
    """
    check_k(k)
    columns = data_init_columns(x.shape[-1], k, generator).to(x.device)  # [K]
    mu = x[..., columns].float()  # [..., N, K]
    return mu / (EPS + mu.norm(dim=-2, keepdim=True))


def data_init_columns(d: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """The K feature columns (of D) the data initialisation starts from, ``[K]``: without
    replacement while ``K <= D``. The factorised and Gram routes draw the same ones."""
    draws = [torch.randperm(d, generator=generator) for _ in range(-(-k // d))]
    return torch.cat(draws)[:k]


def rec_ratios(x: Tensor, reconstruction: Tensor, beta: float) -> Tensor:
    """``|β · reconstruction| / |x|`` per row ``[...]`` (``x``, ``reconstruction`` ``[..., D]``):
    how large EMCL's addition is next to the feature it is added to (docs/method.md §1.11)."""
    return beta * reconstruction.norm(dim=-1) / x.float().norm(dim=-1).clamp(min=NORM_EPS)


def _initial_bases(
    x: Tensor, k: int, init: Init, generator: torch.Generator | None
) -> Tensor:  # [..., N, K]
    n = x.shape[-2]
    if isinstance(init, Tensor):
        prior = init.detach().to(device=x.device, dtype=torch.float32)
        if prior.dim() == 1:
            prior = prior[None]  # [1, K]
        if prior.shape[-1] != k:
            raise ValueError(f"init has {prior.shape[-1]} bases but k={k}")
        if prior.dim() == 2 and prior.shape[0] == 1:
            return prior.expand(*x.shape[:-2], n, k)
        if prior.shape[-2] != n:
            raise ValueError(f"init of shape {tuple(prior.shape)} does not fit {n} rows")
        return prior.expand(*x.shape[:-2], n, k)
    if init == "reference":
        return reference_init(k, generator).to(x.device).expand(*x.shape[:-2], n, k)
    if init == "data":
        return data_init(x, k, generator)
    if init == "prior":
        raise ValueError('init="prior" needs a trained prior: use EMCLLayer or pass the tensor')
    raise ValueError(f"init must be 'reference', 'data', 'prior' or a tensor, got {init!r}")


# --------------------------------------------------------------------------------------------
# The EM iterations
# --------------------------------------------------------------------------------------------
def em_subspaces(x: Tensor, mu: Tensor, iters: int, lam: float) -> tuple[Tensor, Tensor]:
    """Run ``iters`` E/M steps with the reference's arithmetic; returns ``(mu, z)``.

    ``x`` ``[..., N, D]``, ``mu`` ``[..., N, K]`` (initial bases). Returns the final bases
    ``[..., N, K]`` (unit-norm columns) and the column-normalised responsibilities ``[..., D, K]``
    (each column sums to 1 over D). With ``iters=0`` the bases come back unchanged and ``z`` is
    zero, so the reconstruction ``mu @ z^T`` is zero. Computed in fp32, without autograd.
    """
    check_iters(iters)
    lam = check_lam(lam)
    with torch.no_grad():
        features = x.float()  # [..., N, D]
        bases = mu.float()  # [..., N, K]
        n, d = features.shape[-2:]
        z = features.new_zeros(*features.shape[:-2], d, bases.shape[-1])
        column_sums = torch.ones_like(z[..., :1, :])
        for _ in range(iters):
            # E-step: softmax over K for every dimension j (torch.softmax subtracts the max,
            # so a small lam cannot overflow). 1/lam scales whichever operand is smaller.
            if n < d:
                logits = torch.matmul(features.mT, bases * (1.0 / lam))  # [..., D, K]
            else:
                logits = torch.matmul(features.mT, bases) * (1.0 / lam)
            z = torch.softmax(logits, dim=-1)
            # M-step: responsibility-weighted mean of the columns, then unit-norm bases. The
            # reference column-normalises z before the product; dividing the N x K product
            # instead is the same up to rounding and skips a pass over the larger D x K matrix.
            column_sums = EPS + z.sum(dim=-2, keepdim=True)  # [..., 1, K]
            bases = torch.matmul(features, z) / column_sums  # [..., N, K]
            bases = bases / (EPS + bases.norm(dim=-2, keepdim=True))
    return bases, z / column_sums  # columns of z sum to 1 over D


def effective_k(z: Tensor, tol: float = RANK_TOL) -> Tensor:
    """Numerical rank of ``z`` ``[..., D, K]``: singular values above ``tol`` of the largest.

    Returns an integer tensor of the leading batch shape (a 0-d tensor for one block). The
    singular values come from the K × K Gram matrix in float64, which resolves the 1e-6 relative
    eigenvalue threshold and is far cheaper than an SVD of the D × K matrix.
    """
    gram = z.double().mT @ z.double()  # [..., K, K]
    singular = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()  # [..., K]
    top = singular.amax(dim=-1, keepdim=True)
    return ((singular > tol * top) & (top > 0)).sum(dim=-1)


@dataclass(frozen=True)
class EMCLResult:
    """What one EMCL run produced. ``embeddings`` has the input's shape and dtype."""

    embeddings: Tensor  # [..., N, D]
    mu: Tensor  # [..., N, K]
    z: Tensor  # [..., D, K]

    @cached_property
    def effective_k(self) -> Tensor:  # [...] integers, computed on first use
        return effective_k(self.z)

    @property
    def reconstruction(self) -> Tensor:  # [..., N, D]
        return self.mu @ self.z.mT


def emcl_transform(
    x: Tensor,
    *,
    k: int,
    iters: int,
    lam: float,
    beta: float,
    init: Init = "reference",
    generator: torch.Generator | None = None,
) -> EMCLResult:
    """EMCL at inference: ``x + beta * mu @ z^T`` with bases from ``init`` (see module doc).

    ``init`` is ``"reference"`` (the authors' ±1 prior), ``"data"`` (K random feature columns of
    ``x``) or a tensor prior ``[K]``, ``[1, K]`` or ``[..., N, K]``. ``iters=0`` and ``beta=0``
    return the input unchanged (a copy).
    """
    check_k(k)
    check_iters(iters)
    lam = check_lam(lam)
    beta = check_beta(beta)
    if x.dim() < 2:
        raise ValueError(f"x must be [..., N, D], got shape {tuple(x.shape)}")
    initial = _initial_bases(x, k, init, generator)
    mu, z = em_subspaces(x, initial, iters, lam)
    if iters == 0 or beta == 0.0:
        embeddings = x.clone()
    else:
        with torch.no_grad():
            reconstruction = mu @ z.mT  # [..., N, D]
        embeddings = (x.float() + beta * reconstruction).to(x.dtype)
    return EMCLResult(embeddings=embeddings, mu=mu, z=z)


# --------------------------------------------------------------------------------------------
# Knobs as data
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EMParams:
    """One setting of the EMCL knobs, validated on construction (configs reject bad values early).

    ``init`` is ``"prior"`` (a trained layer's prior, passed to :meth:`run`), ``"reference"`` or
    ``"data"``; ``seed`` seeds the reference and data initialisations.
    """

    k: int = 32
    iters: int = 9
    lam: float = 1.0
    beta: float = 3.0
    init: InitName = "reference"
    seed: int = 0

    def __post_init__(self) -> None:
        check_k(self.k)
        check_iters(self.iters)
        object.__setattr__(self, "lam", check_lam(self.lam))
        object.__setattr__(self, "beta", check_beta(self.beta))
        if self.init not in ("prior", "reference", "data"):
            raise ValueError(f"init must be 'prior', 'reference' or 'data', got {self.init!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def resolve_init(self, prior: Tensor | None = None) -> Init:
        """The ``init`` argument for :func:`emcl_transform`; ``"prior"`` needs a matching prior."""
        if self.init != "prior":
            return self.init
        if prior is None:
            raise ValueError("init='prior' needs a trained EMCL prior (an EMCL checkpoint)")
        if prior.shape[-1] != self.k:
            raise ValueError(
                f"init='prior' needs k={prior.shape[-1]} (the trained K), got k={self.k}"
            )
        return prior

    def run(self, x: Tensor, prior: Tensor | None = None) -> EMCLResult:
        """EMCL on ``x`` ``[..., N, D]`` with these knobs (never updates any prior)."""
        return emcl_transform(
            x,
            k=self.k,
            iters=self.iters,
            lam=self.lam,
            beta=self.beta,
            init=self.resolve_init(prior),
            generator=self.generator(),
        )


# The reference settings (docs/method.md §2.3): EMCL-Net's are EMParams' own defaults.
EMCL_NET_DEFAULTS = EMParams()
INFERENCE_MODULE_DEFAULTS = EMParams(k=7, iters=10, lam=0.1, beta=4.0, init="reference", seed=42)


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------
class EMCLLayer(nn.Module):
    """EMCL as a layer with the momentum prior as a registered buffer (saved in checkpoints).

    In training mode every forward updates ``prior <- momentum * prior + (1 - momentum) *
    mean over rows of the final bases``; in eval mode nothing is written. The gradient flows
    through the identity path only, as in the reference (the EM runs without autograd).
    ``init="prior"`` is the reference behaviour (constant bases from the prior); ``"data"`` breaks
    the symmetry (still updating the prior, so a checkpoint records it).
    """

    prior: Tensor

    def __init__(
        self,
        k: int = EMCL_NET_DEFAULTS.k,
        iters: int = EMCL_NET_DEFAULTS.iters,
        lam: float = EMCL_NET_DEFAULTS.lam,
        beta: float = EMCL_NET_DEFAULTS.beta,
        momentum: float = PRIOR_MOMENTUM,
        init: Literal["prior", "data"] = "prior",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.k = check_k(k)
        self.iters = check_iters(iters)
        self.lam = check_lam(lam)
        self.beta = check_beta(beta)
        self.momentum = check_momentum(momentum)
        if init not in ("prior", "data"):
            raise ValueError(f"init must be 'prior' or 'data', got {init!r}")
        self.init = init
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("prior", reference_init(k, generator))  # [1, K]

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, iters={self.iters}, lam={self.lam:g}, beta={self.beta:g}, "
            f"momentum={self.momentum:g}, init={self.init!r}"
        )

    def transform(
        self,
        x: Tensor,
        *,
        k: int | None = None,
        iters: int | None = None,
        lam: float | None = None,
        beta: float | None = None,
        init: Init | None = None,
        generator: torch.Generator | None = None,
    ) -> EMCLResult:
        """Run EMCL on ``x`` ``[..., N, D]``; keyword overrides never change the layer.

        ``init="prior"`` uses the saved prior and needs ``k`` equal to the trained K.
        """
        k = self.k if k is None else k
        init = self.init if init is None else init
        if isinstance(init, str) and init == "prior":
            if k != self.k:
                raise ValueError(f"init='prior' needs k={self.k} (the trained K), got k={k}")
            init = self.prior.detach().clone()
        result = emcl_transform(
            x,
            k=k,
            iters=self.iters if iters is None else iters,
            lam=self.lam if lam is None else lam,
            beta=self.beta if beta is None else beta,
            init=init,
            generator=generator,
        )
        if self.training:
            self._update_prior(result.mu)
        return result

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(x).embeddings

    @torch.no_grad()
    def _update_prior(self, mu: Tensor) -> None:  # mu: [..., N, K]
        if mu.shape[-1] != self.k:
            return  # an override K cannot feed the trained prior
        mean_over_rows = mu.reshape(-1, mu.shape[-2], mu.shape[-1]).mean(dim=(0, 1))  # [K]
        self.prior.mul_(self.momentum).add_(
            (1.0 - self.momentum) * mean_over_rows.to(self.prior)[None]
        )
