"""The two similarity protocols by name, and the EM block of each (docs/method.md §2).

- ``trained``, "as trained": the protocol EMCL-Net is trained and evaluated with
  (docs/method.md §2.1): text-conditioned frame pooling, EM on ``[pooled videos; texts]`` per
  block of 32 captions × 32 videos, cosines after EMCL.
- ``inference``, the released inference module (docs/method.md §2.2): mean-pooled unit-norm
  videos, EM on ``[videos; texts]`` per block of 64 × 64, dot products of the outputs.

Every layer, from the block matrices to the page and the API, names them with these constants.
"""

from __future__ import annotations

from typing import Literal

Protocol = Literal["trained", "inference"]
TRAINED: Protocol = "trained"
INFERENCE: Protocol = "inference"
PROTOCOLS: tuple[Protocol, ...] = (TRAINED, INFERENCE)

# (captions, videos) per EM run: the reference's evaluation blocks.
BLOCK: dict[str, tuple[int, int]] = {TRAINED: (32, 32), INFERENCE: (64, 64)}

# Names of the as-trained protocol that files on disk and scripts may carry: "emclnet" (the model
# it belongs to) in evaluation results. Accepted where such a name is read, nowhere else.
ALIASES: dict[str, Protocol] = {"emclnet": TRAINED}


def protocol_name(name: object) -> Protocol:
    """``name`` as one of :data:`PROTOCOLS`, reading an alias (:data:`ALIASES`) as its protocol.

    For names read from saved files and command lines; raises :class:`ValueError` naming the
    accepted values otherwise."""
    if isinstance(name, str):
        if name in PROTOCOLS:
            return name  # type: ignore[return-value]
        if name in ALIASES:
            return ALIASES[name]
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {name!r}")


__all__ = ["ALIASES", "BLOCK", "INFERENCE", "PROTOCOLS", "TRAINED", "Protocol", "protocol_name"]
