"""The rationale's per-config-load texts (model figures, quality sub-scores, configured weights) are
made once per catalog: a reload's catalog words its own figures, tuned weights are worded from
their own values, and a catalog's texts go with the catalog."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from orxaq_grpc.config.model import Config, Weights
from orxaq_grpc.routing import explain
from orxaq_grpc.routing.router import Router
from orxaq_grpc.routing.types import RouteRequest, Strategy, Task
from tests.conftest import config_with, model

MakeRouter = Callable[[Config], Router]
REQUEST = RouteRequest(lane="test", task=Task(input_tokens=10_000, output_tokens=1_000))


def priced(base: Config, input_usd: float, output_usd: float, ttft_s: float, speed: float) -> Config:
    """A one-model catalog; every config made here names its model "m"."""
    spec = model("m", input_usd_per_mtok=input_usd, output_usd_per_mtok=output_usd)
    return config_with(base, [dataclasses.replace(spec, ttft_s=ttft_s, output_tokens_per_s=speed)])


def test_each_catalog_words_its_own_model_figures(shipped_config: Config, make_router: MakeRouter) -> None:
    before = make_router(priced(shipped_config, 3.0, 15.0, 2.0, 50.0))
    after = make_router(priced(shipped_config, 4.5, 20.0, 1.5, 80.0))  # a reload: same model id
    for _ in range(2):  # alternating: neither catalog's texts stand in for the other's
        old, new = before.route(REQUEST).rationale, after.route(REQUEST).rationale
        assert "at $3/$15 per 1M" in old and "(first token 2 s + 1000 tokens at 50 tok/s)" in old
        assert "at $4.5/$20 per 1M" in new and "(first token 1.5 s + 1000 tokens at 80 tok/s)" in new


def test_tuned_weights_are_worded_from_their_own_values(
    shipped_config: Config, make_router: MakeRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    original = explain.rationale

    def recording(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(explain, "rationale", recording)
    decision = make_router(priced(shipped_config, 3.0, 15.0, 2.0, 50.0)).route(REQUEST)
    assert decision.strategy == Strategy.SCORED
    args, kwargs = calls[-1]
    configured = kwargs["scores"].weights
    assert f"x{configured.cost:.2f} + speed" in decision.rationale
    tuned = dataclasses.replace(kwargs["scores"], weights=Weights(cost=0.123, speed=0.456, quality=0.789))
    text = original(*args, **{**kwargs, "scores": tuned})
    assert "x0.12 + speed" in text and "x0.46 + quality" in text and "x0.79." in text


def test_a_catalogs_texts_go_with_it(shipped_config: Config, make_router: MakeRouter) -> None:
    router = make_router(priced(shipped_config, 3.0, 15.0, 2.0, 50.0))
    router.route(REQUEST)
    catalog = weakref.ref(router.catalog)
    assert router.catalog in explain._texts_by_catalog
    kept = len(explain._texts_by_catalog)
    del router
    gc.collect()
    assert catalog() is None  # the texts do not keep their catalog alive
    assert len(explain._texts_by_catalog) < kept  # its entry went with it (others may have too)
