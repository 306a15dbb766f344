"""`orxaq-grpc prices check | update`: what an operator sees and the exit codes scripts rely on
(check: 0 the catalog agrees, 1 it drifts, 2 nothing could be compared)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from orxaq_grpc.config.load import ConfigError, load_config
from orxaq_grpc.prices.drift import Difference, PriceCheck, check_prices
from orxaq_grpc.prices.source import PRICE_FIELDS, PriceSourceError, load_price_map
from orxaq_grpc.prices.update import TomlkitMissing, update_catalog

__all__ = ["FIELDS", "check", "update"]

FIELDS = tuple(field for field, _ in PRICE_FIELDS)

AGREES, DRIFTS, FAILED = 0, 1, 2


def check(directory: Path, source: str, out: TextIO, err: TextIO, as_json: bool = False) -> int:
    result = _check(directory, source, err)
    if result is None:
        return FAILED
    if as_json:
        json.dump(_document(result), out, indent=2)
        out.write("\n")
    else:
        _print(result, out)
    return DRIFTS if result.differences else AGREES


def update(
    directory: Path,
    source: str,
    out: TextIO,
    err: TextIO,
    models: Sequence[str] = (),
    fields: Sequence[str] = (),
    dry_run: bool = False,
    today: dt.date | None = None,
) -> int:
    """Writes the differences the check finds (only those models' and fields', when named)."""
    result = _check(directory, source, err)
    if result is None:
        return FAILED
    checked = {*result.agreeing, *result.drifting, *result.local, *result.unknown}
    strangers = [model for model in models if model not in checked]
    if strangers:
        err.write(f"orxaq-grpc: --model {', '.join(strangers)}: not in {directory / 'catalog.toml'}\n")
        return FAILED
    chosen = [
        d
        for d in result.differences
        if (not models or d.model in models) and (not fields or d.field in fields)
    ]
    if not chosen:
        out.write(f"nothing to update: the catalog agrees with {result.source}\n")
        return AGREES
    _print_differences(chosen, out)
    if dry_run:
        out.write(f"dry run: {len(chosen)} figure(s) would change; catalog.toml not written\n")
        return DRIFTS
    try:
        written = update_catalog(directory, chosen, result.source, today or dt.date.today())
    except TomlkitMissing as exc:
        err.write(f"orxaq-grpc: {exc}\n")
        return FAILED
    except ConfigError as exc:
        err.write(
            f"orxaq-grpc: the updated catalog would not be valid; nothing written ({len(exc.problems)}):\n"
        )
        for problem in exc.problems:
            err.write(f"  {problem}\n")
        return FAILED
    out.write(
        f"{written.path}: {written.figures} figure(s) of {len(written.models)} model(s) updated "
        f"({', '.join(written.models)}); config version {written.version_before} -> {written.version_after}; "
        "a running service takes them on its next reload (SIGHUP)\n"
    )
    return AGREES


def _check(directory: Path, source: str, err: TextIO) -> PriceCheck | None:
    try:
        config = load_config(directory)
    except ConfigError as exc:
        err.write(f"orxaq-grpc: {len(exc.problems)} problem(s) in {directory}:\n")
        for problem in exc.problems:
            err.write(f"  {problem}\n")
        return None
    try:
        return check_prices(config.models, load_price_map(source))
    except PriceSourceError as exc:
        err.write(f"orxaq-grpc: {exc}\n")
        return None


def _print(result: PriceCheck, out: TextIO) -> None:
    out.write(f"catalog against {result.source}\n")
    if result.differences:
        _print_differences(result.differences, out)
    out.write(
        f"{len(result.agreeing)} model(s) agree, {len(result.drifting)} drift, "
        f"{len(result.unknown)} not in the map{_names(result.unknown)}, "
        f"{len(result.local)} local (no list price)\n"
    )


def _print_differences(differences: Sequence[Difference], out: TextIO) -> None:
    rows = [("model", "field (USD per 1M)", "catalog", "map", "change", "map entry")]
    rows += [
        (
            d.model,
            d.field.removesuffix("_usd_per_mtok"),
            "-" if d.catalog is None else f"{d.catalog:g}",
            f"{d.source:g}",
            "new" if d.change is None else f"{d.change:+.0%}",
            d.key,
        )
        for d in differences
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def _names(models: Sequence[str]) -> str:
    return f" ({', '.join(models)})" if models else ""


def _document(result: PriceCheck) -> dict[str, object]:
    return {
        "source": result.source,
        "differences": [
            {
                "model": d.model,
                "field": d.field,
                "catalog": d.catalog,
                "map": d.source,
                "change": d.change,
                "map_entry": d.key,
            }
            for d in result.differences
        ],
        "agreeing": list(result.agreeing),
        "drifting": list(result.drifting),
        "not_in_map": list(result.unknown),
        "local": list(result.local),
    }
