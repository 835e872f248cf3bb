"""The device requests run on: the ``--device`` values, and a GPU out of memory as a clear error.

- ``--device`` is ``cpu``, ``cuda`` or ``auto``. Any other value is refused with the accepted
  ones; ``cuda`` where torch sees no GPU is refused as well (the app does not start); only
  ``auto`` falls back to the CPU (docs/reliability.md §5).
- A request that runs out of GPU memory answers with :class:`DeviceMemoryError`, a
  :class:`~emcl.explorer.knobs.KnobError` (the page shows its message like any refused knob),
  after the allocator's cached blocks are released, so the next request starts clean and the
  app keeps serving (:data:`device_errors`, one translation for every request).
"""

from __future__ import annotations

import contextlib

import torch

from emcl.explorer.knobs import KnobError

DEVICES = ("auto", "cpu", "cuda")


class DeviceMemoryError(KnobError):
    """A request that did not fit in the GPU's memory."""


def check_device(value: object, *, cuda_available: bool | None = None) -> str:
    """``value`` as one of :data:`DEVICES`; :class:`ValueError` (saying why) for anything else
    or for ``cuda`` without a GPU (``cuda_available``: measured unless given)."""
    if not isinstance(value, str) or value not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}; got {value!r}")
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if value == "cuda" and not available:
        raise ValueError(
            "--device cuda: torch sees no CUDA GPU here; use --device cpu, or --device auto "
            "to take a GPU when there is one"
        )
    return value


class _DeviceErrors(contextlib.ContextDecorator):
    """Context manager and decorator: ``torch.cuda.OutOfMemoryError`` becomes
    :class:`DeviceMemoryError` (see the module doc)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, trace: object) -> None:
        if kind is None or not issubclass(kind, torch.cuda.OutOfMemoryError):
            return None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # what this request held goes back to the next one
        raise DeviceMemoryError(
            "the GPU ran out of memory for this request; try fewer videos per EM run (a "
            "smaller K, the shortlist context) or start the app with --device cpu"
        ) from error


device_errors = _DeviceErrors()  # `@device_errors` on a function, or `with device_errors:`


__all__ = ["DEVICES", "DeviceMemoryError", "check_device", "device_errors"]
