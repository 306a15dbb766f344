"""Writes a price check's differences into `catalog.toml`: the new figures, and for each model
changed its `price_source` (the map and its entry) and `price_date`. Comments and layout are kept
(tomlkit), the result is validated with the rest of its directory before anything is written, and
the file is replaced in one rename so a reload never reads half of it."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orxaq_grpc.config.load import CATALOG_FILE, load_config
from orxaq_grpc.prices.drift import Difference

__all__ = ["CatalogUpdate", "TomlkitMissing", "update_catalog"]


class TomlkitMissing(Exception):
    """Editing the catalog needs tomlkit (the `prices` extra)."""


@dataclass(frozen=True, slots=True)
class CatalogUpdate:
    path: Path
    models: tuple[str, ...]
    figures: int
    version_before: str
    version_after: str


def update_catalog(
    directory: Path, differences: Sequence[Difference], source: str, today: dt.date
) -> CatalogUpdate:
    """Writes the differences; raises ConfigError (nothing written) when the result is not valid."""
    try:
        import tomlkit
    except ImportError as exc:
        raise TomlkitMissing(
            "prices update edits catalog.toml with tomlkit: pip install 'orxaq-grpc[prices]'"
        ) from exc

    before = load_config(directory)
    path = directory / CATALOG_FILE
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    by_model: dict[str, list[Difference]] = {}
    for difference in differences:
        by_model.setdefault(difference.model, []).append(difference)
    for table in document["models"]:
        changes = by_model.get(str(table["id"]))
        if not changes:
            continue
        for change in changes:
            _set(table, change.field, change.source)
        keys = ", ".join(sorted({change.key for change in changes}))
        _set(table, "price_source", f"{source}, entry {keys} (orxaq-grpc prices update)")
        _set(table, "price_date", today)
    content = tomlkit.dumps(document).encode("utf-8")
    after = load_config(directory, replacing={CATALOG_FILE: content})  # ConfigError: nothing written
    _replace(path, content)
    return CatalogUpdate(path, tuple(by_model), len(differences), before.version, after.version)


def _set(table: Any, key: str, value: object) -> None:
    """Sets a key keeping its comment where it was; a key the table lacks is added at its end."""
    import tomlkit

    if key not in table:
        table[key] = value
        return
    old = table.item(key)
    new = tomlkit.item(value)
    comment = old.trivia.comment
    if comment:
        # keep the comment's column: the figure's text may be longer or shorter than before
        width = len(old.as_string()) + len(old.trivia.comment_ws)
        new.comment(comment.lstrip("# ").rstrip())
        new.trivia.comment_ws = " " * max(1, width - len(new.as_string()))
    table[key] = new


def _replace(path: Path, content: bytes) -> None:
    """Writes beside the file, then renames over it (keeping its permissions)."""
    mode = path.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
