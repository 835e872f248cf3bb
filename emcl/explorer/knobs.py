"""The knobs: one typed, validated object that travels from the page (or the API) to the engine.

Validation happens here and nowhere else in the app: every value a :class:`Knobs` holds is
inside :data:`LIMITS`, where every setting gives finite scores (the EM itself accepts wider
ranges, see :class:`emcl.core.em.EMParams`). Messages are meant for the user. What each knob
means is written once, in emcl/explorer/knob_docs.py (shown on the page, in the API
descriptions and in docs/knobs.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass, replace
from typing import Any

import numpy as np

from emcl.core.em import EMCL_NET_DEFAULTS, EMParams
from emcl.core.protocols import INFERENCE, PROTOCOLS, TRAINED
from emcl.retrieval.ranking import CONTEXTS

MODES = ("joint", "inference")
INITS = ("prior", "reference", "data")
SWEEPS = ("beta", "k", "iters", "lam")

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

# The knobs by name, in the page's order; the EM ones live in ``Knobs.em``. ``protocol`` comes
# last, so a caller passing the other twelve by position is unaffected by it.
EM_KNOBS = ("beta", "k", "iters", "lam", "init", "seed")
NAMES = (
    "mode", *EM_KNOBS, "context", "shortlist", "isoftmax", "isoftmax_temp", "top_k", "protocol",
)  # fmt: skip
# The default EM setting: the EMCL-Net checkpoint's own, starting from its trained prior.
DEFAULT_EM = replace(EMCL_NET_DEFAULTS, init="prior")


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


def _em(values: dict[str, Any]) -> EMParams:
    """The EM knobs checked against :data:`LIMITS`, as an :class:`EMParams`."""
    return EMParams(
        k=_integer("k", values["k"]),
        iters=_integer("iters", values["iters"]),
        lam=_number("lam", values["lam"]),
        beta=_number("beta", values["beta"]),
        init=choice("init", values["init"], INITS),  # type: ignore[arg-type]
        seed=_integer("seed", values["seed"]),
    )


def default_protocol(mode: str) -> str:
    """The search protocol a request gets when it names none: each mode's model as it was
    trained. The joint checkpoint was trained as EMCL-Net (``trained``); the base checkpoint
    with EM at inference is the inference module's setting (``inference``)."""
    return TRAINED if mode == "joint" else INFERENCE


def _em_knob(name: str) -> property:
    return property(lambda self: getattr(self.em, name), doc=f"``em.{name}``")


@dataclass(frozen=True, init=False)
class Knobs:
    """One setting of every knob, validated on construction (:class:`KnobError` otherwise).

    The EM knobs are one :class:`~emcl.core.em.EMParams`, ``em`` (read them as ``knobs.em`` or
    as ``knobs.k``, ``knobs.beta``, ...); the others pick the model (``mode``), the rows that
    share one EM run (``context``, ``shortlist``), how search scores (``protocol``) and what is
    shown. Built from flat keywords, as the page and the API send them
    (``Knobs(mode=..., beta=..., k=...)``), from an ``em`` plus flat overrides, or by
    :func:`dataclasses.replace` with either.

    ``protocol=None`` (the default) resolves once, here, to :func:`default_protocol` of the
    mode, and the knobs hold the resolved name: ``replace(knobs, mode=...)`` keeps the
    protocol ``knobs`` had; pass ``protocol=None`` with it to take the new mode's default.
    """

    mode: str
    em: EMParams
    context: str
    shortlist: int
    isoftmax: bool
    isoftmax_temp: float
    top_k: int
    protocol: str

    beta = _em_knob("beta")
    k = _em_knob("k")
    iters = _em_knob("iters")
    lam = _em_knob("lam")
    init = _em_knob("init")
    seed = _em_knob("seed")

    def __init__(
        self,
        *,
        mode: str = "joint",
        em: EMParams = DEFAULT_EM,
        context: str = "shortlist",
        shortlist: int = 64,
        isoftmax: bool = False,
        isoftmax_temp: float = 0.01,
        top_k: int = 8,
        protocol: str | None = None,
        **em_knobs: Any,
    ) -> None:
        unknown = sorted(set(em_knobs) - set(EM_KNOBS))
        if unknown:
            raise KnobError(f"unknown knob(s): {', '.join(unknown)}")
        if not isinstance(em, EMParams):
            raise KnobError(f"em must be an EMParams, got {type(em).__name__}")
        set_ = object.__setattr__
        set_(self, "mode", choice("mode", mode, MODES))
        set_(self, "em", _em(asdict(em) | em_knobs))  # flat values override em's
        set_(self, "context", choice("context", context, CONTEXTS))
        set_(self, "shortlist", _integer("shortlist", shortlist))
        set_(self, "isoftmax_temp", _number("isoftmax_temp", isoftmax_temp))
        set_(self, "top_k", _integer("top_k", top_k))
        if not isinstance(isoftmax, bool | np.bool_):
            raise KnobError(f"isoftmax must be true or false, got {isoftmax!r}")
        set_(self, "isoftmax", bool(isoftmax))
        chosen = default_protocol(self.mode) if protocol is None else protocol
        set_(self, "protocol", choice("protocol", chosen, PROTOCOLS))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every knob's flat name, in the page's order (the API's parameter names)."""
        return NAMES

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Knobs:
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise KnobError(f"unknown knob(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The flat form, the inverse of :meth:`from_dict`."""
        return {name: getattr(self, name) for name in NAMES}

    def params(self) -> EMParams:
        return self.em

    def em_key(self) -> tuple:
        """What one EM run depends on (not the mode, top-k or the inverted softmax)."""
        return astuple(self.em)

    def em_run_key(self) -> tuple:
        """What the EM iterations depend on: :meth:`em_key` without β, which only scales the
        reconstruction afterwards."""
        return tuple(v for name, v in asdict(self.em).items() if name != "beta")

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
    "DEFAULT_EM",
    "EM_KNOBS",
    "INITS",
    "LIMITS",
    "MAX_QUERY_CHARS",
    "MODES",
    "NAMES",
    "SWEEPS",
    "KnobError",
    "Knobs",
    "choice",
    "clean_text",
    "default_protocol",
    "fold_text",
]
