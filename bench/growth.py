"""Fitted growth of a measured figure: ``y = a * x ** b`` by least squares on log-log, and its projection.

The bench measures at two or three database sizes; a user with a 100 GB shop wants to know
what a full, a 15-minute incremental and a restore will cost there. A power law is the
simplest model that says how fast a figure grows (``b`` = 1: linear in the size; 0: flat)
and it is exact for two points. It ignores a fixed cost (Airflow's start-up, a connection):
such a figure fits with ``b`` < 1 at small sizes and is projected low only if the fixed
part dominated the measurements — which the exponent then shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    points: int

    def at(self, x: float) -> float:
        return self.a * x ** self.b


def fit_power_law(xs: list[float], ys: list[float]) -> PowerLaw | None:
    """The least-squares fit of ``log y = log a + b log x``; ``None`` with fewer than two distinct
    positive ``x`` (nothing to fit), non-positive values being left out."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({lx for lx, _ in pairs}) < 2:
        return None
    mean_x = sum(lx for lx, _ in pairs) / len(pairs)
    mean_y = sum(ly for _, ly in pairs) / len(pairs)
    b = sum((lx - mean_x) * (ly - mean_y) for lx, ly in pairs) / sum((lx - mean_x) ** 2 for lx, _ in pairs)
    return PowerLaw(a=math.exp(mean_y - b * mean_x), b=b, points=len(pairs))


@dataclass(frozen=True)
class FixedPlusLinear:
    """``y = fixed + rate * x``: the other reading of the same points, for costs with a fixed part
    (a start-up, a connection, Airflow's hand-offs) that a power law folds into a lower exponent."""

    fixed: float
    rate: float
    points: int

    def at(self, x: float) -> float:
        return self.fixed + self.rate * x


def fit_fixed_plus_linear(xs: list[float], ys: list[float]) -> FixedPlusLinear | None:
    """Ordinary least squares of ``y`` on ``x``; ``None`` with fewer than two distinct ``x``."""
    if len(set(xs)) < 2:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    rate = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return FixedPlusLinear(fixed=mean_y - rate * mean_x, rate=rate, points=len(xs))
