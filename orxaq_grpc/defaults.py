"""The default config an installed `orxaq-grpc` carries, and which config directory a command uses.

The build copies the top-level `config/` (the three TOML files, `dashboards/`, `scenarios/`) and
`protos/` into the package as `_defaults/config/` and `_defaults/protos/` (setup.py): the repository's
`config/` stays the one source. A command that is not told where its config is (no `--config`, no
`ORXAQ_CONFIG_DIR`) uses `./config` when there is one, else these packaged defaults, and says which.
`orxaq-grpc init DIR` writes an editable copy of them.

Nothing here reads the config: the loader (orxaq_grpc.config) does that.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_ENV = "ORXAQ_CONFIG_DIR"
LOCAL_CONFIG_DIR = Path("config")  # relative to the current directory
PACKAGED = Path(__file__).resolve().parent / "_defaults"
PACKAGED_CONFIG_DIR = PACKAGED / "config"
PACKAGED_PROTOS_DIR = PACKAGED / "protos"
PROTOS_SUBDIR = "protos"  # where `init` puts the .proto files inside the directory it writes
PACKAGED_SOURCE = "packaged defaults"


class DefaultsError(Exception):
    """The packaged defaults are missing or `init` cannot write where it was told."""


@dataclass(frozen=True, slots=True)
class ConfigChoice:
    """A config directory and why it was chosen, for the start-up log."""

    directory: Path
    source: str  # "--config", "ORXAQ_CONFIG_DIR", "./config" or "packaged defaults"

    @property
    def packaged(self) -> bool:
        return self.source == PACKAGED_SOURCE

    def describe(self) -> str:
        return f"config directory {self.directory} ({self.source})"


def packaged_config_dir() -> Path:
    """The config shipped inside the package; DefaultsError when the build did not put it there."""
    if not (PACKAGED_CONFIG_DIR / "catalog.toml").is_file():
        raise DefaultsError(
            f"the packaged default config is missing ({PACKAGED_CONFIG_DIR}): reinstall orxaq-grpc, "
            "or pass --config DIR"
        )
    return PACKAGED_CONFIG_DIR


def choose_config_dir(
    explicit: Path | None,
    *,
    option: str = "--config",
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ConfigChoice:
    """The directory given (`option`), else `$ORXAQ_CONFIG_DIR`, else `./config` when it exists, else
    the packaged defaults. An explicit or environment directory is used as given, even when it does
    not exist: the loader then says what is missing, rather than another config running silently."""
    if explicit is not None:
        return ConfigChoice(explicit, option)
    environ = os.environ if environ is None else environ
    if value := environ.get(CONFIG_ENV):
        return ConfigChoice(Path(value), CONFIG_ENV)
    local = (cwd or Path()) / LOCAL_CONFIG_DIR
    if local.is_dir():
        return ConfigChoice(LOCAL_CONFIG_DIR if cwd is None else local, "./config")
    return ConfigChoice(packaged_config_dir(), PACKAGED_SOURCE)


def find_scenario(
    path: Path, *, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[Path, ConfigChoice | None]:
    """The scenario file `simulate` runs. A file that exists is used as it is. Otherwise a bare name
    (`budget-race` or `budget-race.toml`) or a path under `config/` (`config/scenarios/budget-race.toml`,
    as the README writes them) is looked up in the config directory `serve` would use, so with no
    `./config` the packaged scenarios run; their `config = ".."` then names the packaged config.
    Returns the path and, when it was looked up, the choice that found it."""
    where = cwd or Path()
    if (where / path).is_file() or path.is_absolute():
        return path, None
    if len(path.parts) == 1:
        relative = Path("scenarios") / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    elif path.parts[0] == LOCAL_CONFIG_DIR.name:
        relative = Path(*path.parts[1:])
    else:
        return path, None
    try:
        choice = choose_config_dir(None, environ=environ, cwd=cwd)
    except DefaultsError:
        return path, None
    candidate = choice.directory / relative
    return (candidate, choice) if candidate.is_file() else (path, None)


def init_files() -> dict[Path, Path]:
    """What `init` writes: each file's path relative to the target directory, and its packaged source.
    The config files sit at the top (the directory is a config directory: `--config DIR`), the
    .proto files under `protos/` for generating clients."""
    files: dict[Path, Path] = {}
    for root, prefix in ((packaged_config_dir(), Path()), (PACKAGED_PROTOS_DIR, Path(PROTOS_SUBDIR))):
        for source in sorted(root.rglob("*")):
            if source.is_file():
                files[prefix / source.relative_to(root)] = source
    return files


def write_defaults(target: Path, *, force: bool = False) -> list[Path]:
    """Writes an editable copy of the packaged defaults into `target` (created if missing) and returns
    the files written. Without `force`, nothing is written when any of them exists already: the
    DefaultsError names every one."""
    files = init_files()
    if target.exists() and not target.is_dir():
        raise DefaultsError(f"{target} exists and is not a directory")
    in_the_way = [target / relative for relative in files if (target / relative).is_dir()]
    if in_the_way:
        raise DefaultsError(f"{in_the_way[0]} is a directory where a file goes; nothing written")
    if not force:
        existing = [target / relative for relative in files if (target / relative).exists()]
        if existing:
            listed = "\n".join(f"  {path}" for path in existing)
            raise DefaultsError(
                f"{len(existing)} file(s) exist already; nothing written (--force overwrites them):\n{listed}"
            )
    written: list[Path] = []
    try:
        for relative, source in files.items():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            written.append(destination)
    except OSError as exc:
        raise DefaultsError(f"cannot write into {target}: {exc}") from None
    return written
