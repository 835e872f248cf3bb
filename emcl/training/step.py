"""One training step at the device's pace: the loss of a batch and the optimiser update.

:class:`StepSettings` says how the step runs (docs/benchmarks.md §9): autocast precision over
fp32 master weights, the fused AdamW kernel, TF32 for the fp32 matmuls (the EM and the logits),
an optional ``torch.compile`` of the loss. Each is turned on only where it is supported:
:meth:`StepSettings.resolve` gives the concrete settings for a device, and on the CPU they are
the plain ones (fp32, the unfused AdamW, eager), so CPU runs stay as they were trained.

:class:`TrainStep` runs one step without waiting on the device: the loss stays a device tensor,
and a non-finite loss is found before it reaches the weights on the CPU (where checking costs
nothing) and at the next :meth:`TrainStep.check` on a GPU (the loop checks at every log and
before every checkpoint, so no checkpoint ever holds the weights of a non-finite step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from emcl.model.config import PRECISIONS
from emcl.model.loss import contrastive_loss
from emcl.model.model import EMCLRetrievalModel
from emcl.training.distributed import gather, gather_mask
from emcl.training.optim import build_optimizer
from emcl.training.presets import TrainConfig

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StepSettings:
    """How a training step runs. ``None`` means "where the device supports it".

    ``precision``: the autocast dtype of the model's forward (weights and optimiser stay fp32);
    ``auto`` is bf16 on a GPU that has it (else fp16 with a gradient scaler) and fp32 on the CPU.
    ``compile``: ``torch.compile`` the forward and the loss (``compile_backend``; inductor needs
    a C++ compiler on the CPU and Triton on a GPU), in ``compile_mode`` (``None``: the default;
    ``"reduce-overhead"`` adds CUDA graphs, ``"max-autotune-no-cudagraphs"`` tunes the matmuls).
    """

    precision: str = "auto"
    fused_optimizer: bool | None = None
    tf32: bool | None = None
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def resolve(self, device: torch.device) -> StepSettings:
        """The concrete settings on ``device``: fused AdamW and TF32 only on CUDA, bf16 only
        where supported, ``compile`` only where ``torch.compile`` can run."""
        cuda = device.type == "cuda"
        precision = self.precision
        if precision == "auto":
            precision = "fp32" if not cuda else "bf16" if _bf16_ok(device) else "fp16"
        if precision == "bf16" and cuda and not _bf16_ok(device):
            raise ValueError(f"{device} has no bf16 support; use precision fp16 or fp32")
        if precision == "fp16" and not cuda:
            raise ValueError("precision fp16 needs a GPU; on the CPU use bf16 or fp32")
        return dataclasses.replace(
            self,
            precision=precision,
            fused_optimizer=cuda and self.fused_optimizer is not False,
            tf32=cuda and self.tf32 is not False,
            compile=self.compile and compile_supported(device, self.compile_backend),
        )

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype (``None``: fp32, no autocast); resolve first."""
        if self.precision == "auto":
            raise ValueError("resolve the settings for a device first")
        return AMP_DTYPES[self.precision]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# The plain settings: autocast alone, the unfused AdamW, no TF32, eager.
PLAIN_SETTINGS = StepSettings(fused_optimizer=False, tf32=False, compile=False)


def _bf16_ok(device: torch.device) -> bool:
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported()


def compile_supported(device: torch.device, backend: str = "inductor") -> bool:
    """Whether ``torch.compile`` with ``backend`` can run on ``device`` here."""
    if not torch._dynamo.is_dynamo_supported():
        return False
    if backend != "inductor":
        return True
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return has_triton()
    import shutil

    return shutil.which("g++") is not None or shutil.which("c++") is not None


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 for fp32 matmuls inside the block only (a process-wide switch in torch)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def step_loss(
    wrapped: torch.nn.Module,
    model: EMCLRetrievalModel,
    ids: Tensor,
    pixels: Tensor,
    mask: Tensor,
    world: int = 1,
    amp_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over the *global* batch; returns (loss, logits ``[B, B]``).

    ``wrapped`` is the model or its DDP wrapper (whose forward gives local features, under
    autocast when ``amp_dtype`` is set); ``model.logits`` then runs text-conditioned pooling and
    the EMCL layer on the gathered batch in fp32.
    """
    with torch.autocast(pixels.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        text, frames, scale = wrapped(ids, pixels, mask)  # [b, D], [b, T, D], []
    text, frames, mask = gather(text, world), gather(frames, world), gather_mask(mask, world)
    logits = model.logits(text.float(), frames.float(), mask)  # [B, B]
    return contrastive_loss(logits, scale), logits


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops without saving over good checkpoints."""

    def __init__(self, message: str, step: int = -1, loss: float = math.nan):
        super().__init__(message)
        self.step, self.loss = step, loss


class TrainStep:
    """The loss, backward, gradient clipping, optimiser step and logit-scale cap of one batch.

    Owns the optimiser (:func:`~emcl.training.optim.build_optimizer`, fused where the settings
    say) and the gradient scaler (on for fp16 only). ``wrapped`` is the model or its DDP wrapper.
    """

    def __init__(
        self,
        model: EMCLRetrievalModel,
        cfg: TrainConfig,
        settings: StepSettings,
        *,
        device: torch.device,
        wrapped: torch.nn.Module | None = None,
        world: int = 1,
    ) -> None:
        self.model, self.cfg, self.world = model, cfg, world
        self.wrapped = model if wrapped is None else wrapped
        self.settings = settings.resolve(device)
        self.check_each_step = device.type != "cuda"  # free on the CPU, a sync on a GPU
        self.optimizer = build_optimizer(model, cfg, fused=bool(self.settings.fused_optimizer))
        fp16 = self.settings.precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self._loss: Callable[[Tensor, Tensor, Tensor], Tensor] = self.eager_loss
        self._compile_pending = bool(self.settings.compile)
        self.compile_error: str | None = None
        if self.settings.compile:
            s = self.settings
            self._loss = torch.compile(
                self.eager_loss, backend=s.compile_backend, mode=s.compile_mode, dynamic=False
            )
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_loss = torch.zeros((), device=device)
        self.grad_norm = torch.zeros((), device=device)
        self._log_scale_cap = math.log(model.config.max_logit_scale)

    def eager_loss(self, ids: Tensor, pixels: Tensor, mask: Tensor) -> Tensor:
        amp = self.settings.amp_dtype
        return step_loss(self.wrapped, self.model, ids, pixels, mask, self.world, amp)[0]

    def __call__(
        self, ids: Tensor, pixels: Tensor, mask: Tensor, step: int, lr_multiplier: float = 1.0
    ) -> Tensor:
        """One update; returns the loss (a device tensor, detached)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_multiplier
        if not self._compile_pending:
            return self._update(ids, pixels, mask, step)
        self._compile_pending = False
        try:  # the first compiled step compiles; a compiler failure falls back to eager
            return self._update(ids, pixels, mask, step)
        except (NonFiniteLoss, torch.OutOfMemoryError):
            raise
        except Exception as error:  # any compiler error: recorded, then eager
            self.compile_error = f"{type(error).__name__}: {str(error)[:500]}"
            log.warning("torch.compile failed, training eagerly: %s", self.compile_error)
            self._loss = self.eager_loss
            return self._update(ids, pixels, mask, step)

    def _update(self, ids: Tensor, pixels: Tensor, mask: Tensor, step: int) -> Tensor:
        with _tf32(bool(self.settings.tf32)):
            loss = self._loss(ids, pixels, mask)
            self._watch(loss.detach(), step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.cfg.grad_clip
            )
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with torch.no_grad():  # the cap on the scale the reference applies in its forward
            self.model.clip.logit_scale.clamp_(0, self._log_scale_cap)
        return loss.detach()

    def _watch(self, loss: Tensor, step: int) -> None:
        """Raise on a non-finite loss now (CPU), or note its step for :meth:`check` (GPU)."""
        if self.check_each_step:
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss is {loss.item()} at step {step}", step, loss.item())
            return
        first = (self._first_bad < 0) & ~torch.isfinite(loss)
        self._first_bad = torch.where(first, step, self._first_bad)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)

    def check(self) -> None:
        """Raise :class:`NonFiniteLoss` if any step so far had a non-finite loss (one sync)."""
        step = int(self._first_bad)
        if step >= 0:
            value = float(self._bad_loss)
            raise NonFiniteLoss(f"loss is {value} at step {step}", step, value)


__all__ = [
    "AMP_DTYPES",
    "PLAIN_SETTINGS",
    "NonFiniteLoss",
    "StepSettings",
    "TrainStep",
    "compile_supported",
    "step_loss",
]
