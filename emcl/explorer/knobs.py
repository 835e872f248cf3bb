"""The knobs: one typed, validated object that travels from the page (or the API) to the engine.

Validation happens here and nowhere else in the app: every value a :class:`Knobs` holds is
inside :data:`LIMITS`, where every setting gives finite scores (the EM itself accepts wider
ranges, see :class:`emcl.core.em.EMParams`). Messages are meant for the user.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from emcl.core.em import EMParams
from emcl.retrieval.ranking import CONTEXTS

MODES = ("joint", "inference")
INITS = ("prior", "reference", "data")
SWEEPS = ("beta", "k", "iters", "lam")
METRIC_PROTOCOLS = ("trained", "inference")  # docs/method.md §2.1, §2.2

# What the UI and the API accept (the sliders use the same bounds).
LIMITS: dict[str, tuple[float, float]] = {
    "beta": (0.0, 20.0),
    "k": (1, 128),
    "iters": (0, 50),
    "lam": (1e-3, 10.0),
    "seed": (0, 2**31 - 1),
    "shortlist": (2, 1000),
    "isoftmax_temp": (1e-3, 1.0),
    "top_k": (1, 50),
}
MAX_QUERY_CHARS = 1000  # far beyond any tokenizer context; longer input is cut before tokenising
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class KnobError(ValueError):
    """A request the explorer refuses; the message is meant for the user."""


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or value is None:
        raise KnobError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise KnobError(f"{name} must be a number, got {value!r}") from None
    lo, hi = LIMITS[name]
    if not math.isfinite(number) or not lo <= number <= hi:
        raise KnobError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return number


def _integer(name: str, value: object) -> int:
    number = _number(name, value)
    if number != int(number):
        raise KnobError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; :class:`KnobError` otherwise."""
    if value not in choices:
        raise KnobError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


@dataclass(frozen=True)
class Knobs:
    """One setting of every knob, validated on construction (:class:`KnobError` otherwise).

    ``mode``: ``joint`` ranks with the jointly trained EMCL checkpoint plus EM at inference;
    ``inference`` ranks with the base checkpoint plus EM at inference only (``beta=0`` gives
    the base ranking exactly). The EM knobs are ``beta``, ``k``, ``iters``, ``lam`` (the
    E-step temperature), ``init`` and ``seed``; ``context`` says which rows share one EM run
    (docs/design.md, "EM contexts").
    """

    mode: str = "joint"
    beta: float = 3.0
    k: int = 32
    iters: int = 9
    lam: float = 1.0
    init: str = "prior"
    seed: int = 0
    context: str = "shortlist"
    shortlist: int = 64
    isoftmax: bool = False
    isoftmax_temp: float = 0.01
    top_k: int = 8

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "mode", choice("mode", self.mode, MODES))
        set_(self, "init", choice("init", self.init, INITS))
        set_(self, "context", choice("context", self.context, CONTEXTS))
        for name in ("beta", "lam", "isoftmax_temp"):
            set_(self, name, _number(name, getattr(self, name)))
        for name in ("k", "iters", "seed", "shortlist", "top_k"):
            set_(self, name, _integer(name, getattr(self, name)))
        if not isinstance(self.isoftmax, bool | np.bool_):
            raise KnobError(f"isoftmax must be true or false, got {self.isoftmax!r}")
        set_(self, "isoftmax", bool(self.isoftmax))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Knobs:
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise KnobError(f"unknown knob(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    def params(self) -> EMParams:
        return EMParams(self.k, self.iters, self.lam, self.beta, self.init, self.seed)  # type: ignore[arg-type]

    def em_key(self) -> tuple:
        """What one EM run depends on (not the mode, top-k or the inverted softmax)."""
        return (self.k, self.iters, self.lam, self.beta, self.init, self.seed)

    def em_run_key(self) -> tuple:
        """What the EM iterations depend on: :meth:`em_key` without β, which only scales the
        reconstruction afterwards."""
        return (self.k, self.iters, self.lam, self.init, self.seed)

    def summary(self) -> str:
        """One line for status and table captions."""
        seed = f" (seed {self.seed})" if self.init != "prior" else ""
        return (
            f"K {self.k}, T {self.iters}, λ {self.lam:g}, β {self.beta:g}, init {self.init}{seed}"
        )


def fold_text(text: str) -> str:
    """Control characters and runs of white space folded to single spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


def clean_text(text: object, what: str = "the query") -> tuple[str, bool]:
    """:func:`fold_text` cut to :data:`MAX_QUERY_CHARS`, and whether it was cut; refuses
    non-text and empty input."""
    if not isinstance(text, str):
        raise KnobError(f"{what} must be text, got {type(text).__name__}")
    folded = fold_text(text)
    if not folded:
        raise KnobError(f"{what} is empty: type a few words describing a video")
    return folded[:MAX_QUERY_CHARS], len(folded) > MAX_QUERY_CHARS


__all__ = [
    "INITS",
    "LIMITS",
    "MAX_QUERY_CHARS",
    "METRIC_PROTOCOLS",
    "MODES",
    "SWEEPS",
    "KnobError",
    "Knobs",
    "choice",
    "clean_text",
    "fold_text",
]
