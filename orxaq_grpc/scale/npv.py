"""Discounted cash flows: `npv = sum_t flow_t / (1 + r)^(t / 365)`, t in days from the decision."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from orxaq_grpc.scale.types import CashFlow, ConfidenceForm, Daily, Flows, Once, PenaltyUsd, Uncertainty

DAYS_PER_YEAR = 365.0


def cash_flows(flows: Flows) -> tuple[CashFlow, ...]:
    """Any of the three forms as dated cash flows."""
    match flows:
        case Once(usd=usd, day=day):
            return (CashFlow(day, usd),)
        case Daily(usd_per_day=usd, horizon_days=horizon):
            return tuple(CashFlow(float(t), usd) for t in range(1, horizon + 1))
        case _:
            return flows.flows


def present_value(flows: Flows, annual_rate: float) -> float:
    """Each flow divided by (1 + r)^(day / 365), summed with fsum (long schedules lose nothing).
    Computed as usd x exp(-(day / 365) ln(1 + r)): no division by a factor that underflows to 0;
    a factor that overflows gives inf, which validation refuses."""
    growth = math.log1p(annual_rate) / DAYS_PER_YEAR
    try:
        return math.fsum(f.usd * math.exp(-growth * f.day) for f in cash_flows(flows))
    except OverflowError:
        return math.inf


def peak_daily_usd(flows: Flows) -> float:
    """The most that falls on any one day (flows bucketed by whole day), never below 0: what a
    day's budget must hold on top of what is already spent."""
    per_day: dict[int, float] = defaultdict(float)
    for flow in cash_flows(flows):
        per_day[math.floor(flow.day)] += flow.usd
    return max([0.0, *per_day.values()])


@dataclass(frozen=True, slots=True)
class Npv:
    discounted_value_usd: float
    discounted_cost_usd: float
    uncertainty_penalty_usd: float
    discount_rate: float

    @property
    def marginal_usd(self) -> float:
        return self.discounted_value_usd - self.discounted_cost_usd - self.uncertainty_penalty_usd


def marginal_npv(value: Flows, cost: Flows, uncertainty: Uncertainty | None, annual_rate: float) -> Npv:
    """`discounted value - discounted cost - uncertainty penalty`. The confidence form's penalty is
    discounted value x uncertainty ratio x (1 - confidence); a negative value earns no penalty."""
    discounted_value = present_value(value, annual_rate)
    match uncertainty:
        case PenaltyUsd(usd=usd):
            penalty = usd
        case ConfidenceForm(uncertainty_ratio=ratio, confidence=confidence):
            penalty = max(0.0, discounted_value) * ratio * (1.0 - confidence)
        case _:
            penalty = 0.0
    return Npv(
        discounted_value_usd=discounted_value,
        discounted_cost_usd=present_value(cost, annual_rate),
        uncertainty_penalty_usd=penalty,
        discount_rate=annual_rate,
    )
