"""A price map in LiteLLM's `model_prices_and_context_window` format: one JSON object whose keys
are model names (bare, or `provider/model`) and whose entries give USD per token, e.g.
`input_cost_per_token`, `output_cost_per_token`, `cache_read_input_token_cost`,
`cache_creation_input_token_cost` and `litellm_provider`.

The installed package is located without importing it: `import litellm` loads its whole client
stack, while all we want is the JSON file it ships.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LITELLM",
    "PRICE_FIELDS",
    "PriceEntry",
    "PriceMap",
    "PriceSourceError",
    "installed_litellm_map",
    "load_price_map",
    "read_price_map",
]

LITELLM = "litellm"  # the --source that names the installed package
LITELLM_MAP_FILE = "model_prices_and_context_window_backup.json"

# catalog field (USD per 1M tokens) -> the map's field (USD per token)
PRICE_FIELDS: tuple[tuple[str, str], ...] = (
    ("input_usd_per_mtok", "input_cost_per_token"),
    ("output_usd_per_mtok", "output_cost_per_token"),
    ("cached_input_usd_per_mtok", "cache_read_input_token_cost"),
    ("cache_write_usd_per_mtok", "cache_creation_input_token_cost"),
)

# The catalog's provider names where the map calls them otherwise (Google's API is "gemini" there).
_MAP_PROVIDERS = {"google": "gemini"}

_DIGITS = 9  # per-1M prices are kept to nano-dollars: the map's per-token floats carry binary noise


class PriceSourceError(Exception):
    """The price map cannot be found or read; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One model's prices in the map, in USD per 1M tokens (None: the map gives none)."""

    key: str
    prices: Mapping[str, float | None]  # by catalog field name


@dataclass(frozen=True, slots=True)
class PriceMap:
    label: str  # where the figures come from, as written into the catalog's price_source
    entries: Mapping[str, Any]

    def find(self, model_id: str, provider: str) -> PriceEntry | None:
        """The map's entry for a catalog model: the bare name when the map files it under the
        same provider, else `provider/name`; None when the map does not know it."""
        map_provider = _MAP_PROVIDERS.get(provider, provider)
        for key in (model_id, f"{map_provider}/{model_id}"):
            entry = self.entries.get(key)
            if isinstance(entry, Mapping) and entry.get("litellm_provider") == map_provider:
                return PriceEntry(key, {field: self._price(key, entry, name) for field, name in PRICE_FIELDS})
        return None

    def _price(self, key: str, entry: Mapping[str, Any], name: str) -> float | None:
        value = entry.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PriceSourceError(f"{self.label}: {key}.{name}: {value!r} is not a price per token")
        if value < 0:
            raise PriceSourceError(f"{self.label}: {key}.{name}: {value!r} is negative")
        return round(float(value) * 1e6, _DIGITS)


def read_price_map(path: Path, label: str | None = None) -> PriceMap:
    """Reads a map file; PriceSourceError naming the path when it is missing or not such a map."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceSourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        entries = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PriceSourceError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(entries, dict):
        raise PriceSourceError(f"{path}: expected a JSON object of models, found {type(entries).__name__}")
    return PriceMap(label or str(path), entries)


def installed_litellm_map() -> PriceMap:
    """The map the installed litellm package ships, labelled with the package's version."""
    spec = importlib.util.find_spec(LITELLM)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    if not locations:
        raise PriceSourceError(
            "litellm is not installed: pip install 'orxaq-grpc[prices]', or give --source FILE "
            "(LiteLLM's model_prices_and_context_window.json)"
        )
    path = Path(locations[0]) / LITELLM_MAP_FILE
    try:
        version = importlib.metadata.version(LITELLM)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    return read_price_map(path, f"LiteLLM {version} {LITELLM_MAP_FILE}")


def load_price_map(source: str) -> PriceMap:
    """`litellm` for the installed package's map, anything else a file's path."""
    if source == LITELLM:
        return installed_litellm_map()
    return read_price_map(Path(source))
