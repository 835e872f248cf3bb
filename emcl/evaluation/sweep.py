"""The sweep engine: metrics along one knob, the other knobs held, for one or more models.

Both the app (emcl/explorer/metrics.py) and ``python -m emcl evaluate``
(emcl/evaluation/protocol.py) sweep through :func:`run_sweep`, and both draw the resulting
:class:`Sweep` with the one sweep figure (ui/plots.py, ``sweep_figure``).

A setting is any frozen dataclass with the knob as a field or constructor keyword:
:class:`~emcl.core.em.EMParams` (evaluation) or :class:`~emcl.explorer.knobs.Knobs` (the app).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
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
) -> Sweep:
    """Measure every curve at ``knob = value`` for each value (its setting's other knobs
    unchanged), then each curve's reference without EM."""
    series: dict[str, list[Metrics]] = {label: [] for label in curves}
    for i, value in enumerate(values):
        if progress is not None:
            progress(i / len(values), f"{knob} = {value:g}")
        for label, curve in curves.items():
            point = dataclasses.replace(curve.setting, **{knob: knob_value(knob, value)})
            series[label].append(curve.measure(point))
    reference = {
        curve.reference: curve.measure(None)
        for curve in curves.values()
        if curve.reference is not None
    }
    return Sweep(knob, [float(v) for v in values], series, reference)


__all__ = ["INTEGER_KNOBS", "Curve", "Measure", "Metrics", "Sweep", "knob_value", "run_sweep"]
