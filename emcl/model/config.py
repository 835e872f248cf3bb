"""Model configuration as plain, JSON-serialisable data (saved in a checkpoint's config.json)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from emcl.core.em import EMCL_NET_DEFAULTS, PRIOR_MOMENTUM, EMParams, check_momentum

TEMPORAL = ("meanP", "seqTransf")
# How a model computes, for training steps and feature extraction alike: ``auto`` is bf16 (fp16
# without it) autocast on a GPU and fp32 on the CPU; the others autocast, or not, anywhere.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEMO_BACKBONE = "emcl-demo-tiny"  # emcl/model/configs/emcl-demo-tiny.json, trained from scratch


@dataclass(frozen=True)
class EMCLConfig:
    """The EMCL layer's knobs (EMCL-Net defaults, docs/method.md §2.3). ``init``: ``"prior"`` is
    the reference (constant bases from the momentum prior), ``"data"`` breaks the symmetry."""

    k: int = EMCL_NET_DEFAULTS.k
    iters: int = EMCL_NET_DEFAULTS.iters
    lam: float = EMCL_NET_DEFAULTS.lam
    beta: float = EMCL_NET_DEFAULTS.beta
    momentum: float = PRIOR_MOMENTUM
    init: str = "prior"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in ("prior", "data"):
            raise ValueError(f"emcl.init must be 'prior' or 'data', got {self.init!r}")
        self.params()  # validates k, iters, lam, beta and seed, naming the field
        check_momentum(self.momentum)

    def params(self) -> EMParams:
        """The same knobs for search/evaluation, using the trained prior."""
        return EMParams(self.k, self.iters, self.lam, self.beta, init=self.init, seed=self.seed)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model architecture (saved as ``config.json``).

    ``pretrained``: an open_clip tag (``"openai"``), a local ``.safetensors`` file, or ``None``
    (random initialisation). ``quick_gelu=None`` follows the backbone config / pretrained tag.
    ``emcl=None`` is the base model (same pooling and cosine, no EMCL layer).
    """

    backbone: str = "ViT-B-32"
    pretrained: str | None = None
    quick_gelu: bool | None = None
    num_frames: int = 12
    max_words: int = 32
    temporal: str = "seqTransf"
    temporal_layers: int = 4
    frame_temp: float = 3.0
    max_logit_scale: float = 100.0
    emcl: EMCLConfig | None = field(default_factory=EMCLConfig)

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORAL:
            raise ValueError(f"temporal must be one of {TEMPORAL}, got {self.temporal!r}")
        for name, low in (("num_frames", 1), ("max_words", 3), ("temporal_layers", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("frame_temp", "max_logit_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if isinstance(self.emcl, dict):
            object.__setattr__(self, "emcl", EMCLConfig(**self.emcl))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; an unknown field is an error that names it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        emcl = data.get("emcl", EMCLConfig())
        if isinstance(emcl, dict):
            emcl_known = {f.name for f in dataclasses.fields(EMCLConfig)}
            bad = sorted(set(emcl) - emcl_known)
            if bad:
                raise ValueError(f"unknown emcl config field(s): {', '.join(bad)}")
            emcl = EMCLConfig(**emcl)
        return cls(**{**data, "emcl": emcl})


__all__ = ["DEMO_BACKBONE", "PRECISIONS", "TEMPORAL", "EMCLConfig", "ModelConfig"]
