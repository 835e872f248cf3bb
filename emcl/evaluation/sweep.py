"""The sweep engine: metrics along one knob, the other knobs held, for one or more models.

Both the app (emcl/explorer/metrics.py) and ``python -m emcl evaluate``
(emcl/evaluation/protocol.py) sweep through :func:`run_sweep`, and both draw the resulting
:class:`Sweep` with the one sweep figure (ui/plots.py, ``sweep_figure``).

A setting is any frozen dataclass with the knob as a field or constructor keyword:
:class:`~emcl.core.em.EMParams` (evaluation) or :class:`~emcl.explorer.knobs.Knobs` (the app).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

Metrics = dict[str, Any]  # {"t2v": {"R1": ..., ...}, "v2t": {...}, ...} as the measure returns
Measure = Callable[[Any], Metrics]  # a setting (None: without EM) -> that model's metrics
Progress = Callable[[float, str], None]
INTEGER_KNOBS = ("k", "iters", "seed")  # swept values are whole numbers; sent as int


@dataclass(frozen=True)
class Curve:
    """One model along the sweep: the setting the other knobs stay at, how to measure it, and
    the label of its reference point without EM (``None``: no reference drawn)."""

    setting: Any
    measure: Measure
    reference: str | None = None


@dataclass(frozen=True)
class Sweep:
    """Metrics along one knob: ``series[label][i]`` at ``values[i]``; ``reference[label]``
    without EM. JSON-able through :meth:`to_json` / :meth:`from_json`."""

    knob: str
    values: list[float]
    series: dict[str, list[Metrics]]
    reference: dict[str, Metrics]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sweep:
        return cls(
            knob=str(data["knob"]),
            values=[float(v) for v in data["values"]],
            series={label: list(points) for label, points in data["series"].items()},
            reference=dict(data["reference"]),
        )


def knob_value(knob: str, value: float) -> float | int:
    """``value`` as the knob takes it (whole numbers for K, the iterations and the seed)."""
    return int(value) if knob in INTEGER_KNOBS else float(value)


def run_sweep(
    knob: str,
    values: Sequence[float],
    curves: Mapping[str, Curve],
    progress: Progress | None = None,
    beside: Callable[[Callable[[], list[Metrics]]], Future[list[Metrics]]] | None = None,
) -> Sweep:
    """Measure every curve at ``knob = value`` for each value (its setting's other knobs
    unchanged), curve by curve, then each curve's reference without EM. ``beside`` (e.g. a
    worker's ``submit``) measures every curve but the first there, one job per curve, while
    this thread measures the first and reports the progress."""

    def along(curve: Curve, slot: tuple[int, int] | None) -> list[Metrics]:
        """The curve at every value; ``slot`` (its place, how many): report the progress."""
        points = []
        for i, value in enumerate(values):
            if slot is not None and progress is not None:
                progress((slot[0] + i / len(values)) / slot[1], f"{knob} = {value:g}")
            setting = dataclasses.replace(curve.setting, **{knob: knob_value(knob, value)})
            points.append(curve.measure(setting))
        return points

    labels = list(curves)
    jobs = {}
    if beside is not None:
        jobs = {
            label: beside(functools.partial(along, curves[label], None)) for label in labels[1:]
        }
    here = [label for label in labels if label not in jobs]
    measured = {label: along(curves[label], (n, len(here))) for n, label in enumerate(here)}
    measured |= {label: job.result() for label, job in jobs.items()}
    reference = {
        curve.reference: curve.measure(None)
        for curve in curves.values()
        if curve.reference is not None
    }
    series = {label: measured[label] for label in labels}
    return Sweep(knob, [float(v) for v in values], series, reference)


__all__ = ["INTEGER_KNOBS", "Curve", "Measure", "Metrics", "Sweep", "knob_value", "run_sweep"]
