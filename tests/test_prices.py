"""`orxaq-grpc prices check | update`: the catalog's list prices against a map in LiteLLM's format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from orxaq_grpc.cli import main
from orxaq_grpc.config.load import load_config

FIELDS = {
    "input_usd_per_mtok": "input_cost_per_token",
    "output_usd_per_mtok": "output_cost_per_token",
    "cached_input_usd_per_mtok": "cache_read_input_token_cost",
    "cache_write_usd_per_mtok": "cache_creation_input_token_cost",
}
MAP_PROVIDER = {"openai": "openai", "anthropic": "anthropic", "google": "gemini"}


def agreeing_map(config_dir: Path) -> dict[str, Any]:
    """A map in LiteLLM's layout that gives every hosted model the catalog's own prices: bare keys for
    OpenAI and Anthropic, `gemini/...` for Google, as LiteLLM files them; plus entries that must not
    be taken for ours (another provider's copy, the documentation entry)."""
    catalog = tomllib.loads((config_dir / "catalog.toml").read_text())
    entries: dict[str, Any] = {
        "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai"}
    }
    for model in catalog["models"]:
        if model["origin"] == "local":
            continue
        provider = MAP_PROVIDER[model["provider"]]
        key = model["id"] if provider != "gemini" else f"gemini/{model['id']}"
        entry: dict[str, Any] = {"litellm_provider": provider, "mode": "chat"}
        for ours, theirs in FIELDS.items():
            entry[theirs] = model[ours] / 1e6 if ours in model else None
        entries[key] = entry
        # an Azure copy at half the price: never to be matched for a catalog model of another provider
        entries[f"azure/{model['id']}"] = {**entry, "litellm_provider": "azure", "input_cost_per_token": 1e-9}
    return entries


def write_map(path: Path, entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps(entries))
    return path


def run(*argv: str) -> int:
    return main(list(argv))


def test_a_map_with_the_catalogs_own_prices_agrees(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_map(tmp_path / "map.json", agreeing_map(config_dir))
    assert run("prices", "check", "--config", str(config_dir), "--source", str(source)) == 0
    out = capsys.readouterr().out
    assert "12 model(s) agree, 0 drift, 0 not in the map, 3 local (no list price)" in out


def test_drift_is_listed_with_the_map_entry_and_exits_1(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = agreeing_map(config_dir)
    entries["claude-opus-5-5"]["output_cost_per_token"] = 25e-6  # catalog: 20
    entries["gpt-6.1-sol"]["cache_creation_input_token_cost"] = 2.5e-6  # catalog: none (input price)
    entries["gemini/gemini-3.8-flash"]["cache_read_input_token_cost"] = None  # map silent: no drift
    del entries["gemini/gemini-3.5-flash-lite"]
    source = write_map(tmp_path / "map.json", entries)

    assert run("prices", "check", "--config", str(config_dir), "--source", str(source), "--json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["source"] == str(source)
    assert document["differences"] == [
        {
            "model": "claude-opus-5-5",
            "field": "output_usd_per_mtok",
            "catalog": 20.0,
            "map": 25.0,
            "change": pytest.approx(0.25),
            "map_entry": "claude-opus-5-5",
        },
        {
            "model": "gpt-6.1-sol",
            "field": "cache_write_usd_per_mtok",
            "catalog": None,
            "map": 2.5,
            "change": None,
            "map_entry": "gpt-6.1-sol",
        },
    ]
    assert document["not_in_map"] == ["gemini-3.5-flash-lite"]
    assert document["drifting"] == ["claude-opus-5-5", "gpt-6.1-sol"]
    assert "gemini-3.8-flash" in document["agreeing"]
    assert set(document["local"]) == {"gpt-oss-120b", "qwen3.6-27b", "qwen3-coder-30b-a3b-instruct"}

    assert run("prices", "check", "--config", str(config_dir), "--source", str(source)) == 1
    table = capsys.readouterr().out
    assert "claude-opus-5-5  output" in table
    assert "+25%" in table
    assert "not in the map (gemini-3.5-flash-lite)" in table


def test_update_writes_figures_source_and_date_and_keeps_comments(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = agreeing_map(config_dir)
    entries["claude-opus-5-5"]["input_cost_per_token"] = 5e-6
    entries["claude-opus-5-5"]["cache_read_input_token_cost"] = 0.3e-6
    entries["gpt-6.1-sol"]["cache_creation_input_token_cost"] = 2.5e-6
    source = write_map(tmp_path / "map.json", entries)
    catalog_path = config_dir / "catalog.toml"
    before_text = catalog_path.read_text()
    version_before = load_config(config_dir).version

    assert run("prices", "update", "--config", str(config_dir), "--source", str(source), "--dry-run") == 1
    assert catalog_path.read_text() == before_text  # a dry run writes nothing
    capsys.readouterr()

    assert (
        run(
            "prices",
            "update",
            "--config",
            str(config_dir),
            "--source",
            str(source),
            "--model",
            "claude-opus-5-5",
        )
        == 0
    )
    out = capsys.readouterr().out
    after = load_config(config_dir)
    assert f"config version {version_before} -> {after.version}" in out
    opus = next(m for m in after.models if m.id == "claude-opus-5-5")
    assert (opus.input_usd_per_mtok, opus.cached_input_usd_per_mtok) == (5.0, 0.3)
    assert opus.price_source == f"{source}, entry claude-opus-5-5 (orxaq-grpc prices update)"
    sol = next(m for m in after.models if m.id == "gpt-6.1-sol")
    assert sol.cache_write_usd_per_mtok is None  # --model kept the update to Opus

    # every line but the ones changed is as it was: comments, layout, other models
    before_lines, after_lines = before_text.splitlines(), catalog_path.read_text().splitlines()
    changed = [(b, a) for b, a in zip(before_lines, after_lines, strict=True) if b != a]
    assert [a.split(" = ")[0] for _, a in changed] == [
        "input_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "price_source",
        "price_date",
    ]
    old_input, new_input = changed[0]
    assert new_input.index("#") == old_input.index("#")  # the comment stays in its column
    assert new_input.split("#", 1)[1] == old_input.split("#", 1)[1]

    # the rest, one field at a time: the new key is added, and then the map agrees
    assert (
        run(
            "prices", "update", "--config", str(config_dir), "--source", str(source), "--field", "cache_write"
        )
        == 0
    )
    assert (
        next(m for m in load_config(config_dir).models if m.id == "gpt-6.1-sol").cache_write_usd_per_mtok
        == 2.5
    )
    assert run("prices", "check", "--config", str(config_dir), "--source", str(source)) == 0
    capsys.readouterr()
    assert run("prices", "update", "--config", str(config_dir), "--source", str(source)) == 0
    assert "nothing to update" in capsys.readouterr().out


def test_an_update_that_would_break_the_catalog_writes_nothing(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = agreeing_map(config_dir)
    entries["claude-haiku-5-5"]["cache_read_input_token_cost"] = 1e-6  # above its 0.10 input price
    source = write_map(tmp_path / "map.json", entries)
    before = (config_dir / "catalog.toml").read_bytes()
    assert run("prices", "update", "--config", str(config_dir), "--source", str(source)) == 2
    err = capsys.readouterr().err
    assert "nothing written" in err
    assert "catalog.toml" in err and "cached_input_usd_per_mtok" in err
    assert (config_dir / "catalog.toml").read_bytes() == before
    assert not list(config_dir.glob(".catalog.toml.*"))  # no temporary left behind


def test_an_unknown_model_or_a_bad_map_is_refused_with_its_path(
    config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_map(tmp_path / "map.json", agreeing_map(config_dir))
    assert (
        run("prices", "update", "--config", str(config_dir), "--source", str(source), "--model", "gpt-7") == 2
    )
    assert "--model gpt-7: not in" in capsys.readouterr().err

    not_json = tmp_path / "broken.json"
    not_json.write_text("{ nope")
    assert run("prices", "check", "--config", str(config_dir), "--source", str(not_json)) == 2
    assert f"{not_json}: not JSON" in capsys.readouterr().err

    listed = write_map(tmp_path / "list.json", [])  # type: ignore[arg-type]
    assert run("prices", "check", "--config", str(config_dir), "--source", str(listed)) == 2
    assert "expected a JSON object of models, found list" in capsys.readouterr().err

    entries = agreeing_map(config_dir)
    entries["claude-sonnet-5-5"]["input_cost_per_token"] = "3e-6"
    bad_entry = write_map(tmp_path / "bad.json", entries)
    assert run("prices", "check", "--config", str(config_dir), "--source", str(bad_entry)) == 2
    assert f"{bad_entry}: claude-sonnet-5-5.input_cost_per_token: '3e-6' is not a price per token" in (
        capsys.readouterr().err
    )

    assert run("prices", "check", "--config", str(config_dir), "--source", str(tmp_path / "absent.json")) == 2
    assert "absent.json: cannot read" in capsys.readouterr().err


def test_the_packaged_config_is_not_edited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_map(tmp_path / "map.json", {})
    env = {k: v for k, v in os.environ.items() if k != "ORXAQ_CONFIG_DIR"}
    result = subprocess.run(
        [sys.executable, "-m", "orxaq_grpc.cli", "prices", "update", "--source", str(source)],
        cwd=tmp_path,  # no ./config here: the packaged defaults
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "will not edit the packaged config" in result.stderr


def installed(site: Path, version: str, entries: dict[str, Any]) -> dict[str, str]:
    """A litellm 'installation' holding only what the command reads: its map and its version. The
    package refuses to be imported, which proves the map is found without loading litellm."""
    package = site / "litellm"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('litellm must not be imported')\n")
    write_map(package / "model_prices_and_context_window_backup.json", entries)
    metadata = site / f"litellm-{version}.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: litellm\nVersion: {version}\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def test_the_installed_litellm_map_is_read_without_importing_litellm(
    config_dir: Path, tmp_path: Path
) -> None:
    entries = agreeing_map(config_dir)
    entries["claude-opus-5-5"]["input_cost_per_token"] = 5e-6
    env = installed(tmp_path / "site", "1.110.2", entries)
    command = [sys.executable, "-m", "orxaq_grpc.cli", "prices", "update", "--config", str(config_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    opus = next(m for m in load_config(config_dir).models if m.id == "claude-opus-5-5")
    assert opus.input_usd_per_mtok == 5.0
    assert opus.price_source.startswith("LiteLLM 1.110.2 model_prices_and_context_window_backup.json")


def test_without_litellm_the_check_says_how_to_get_a_map(config_dir: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "litellm" else real(name, *a)
        from orxaq_grpc.cli import main
        sys.exit(main(["prices", "check", "--config", {str(config_dir)!r}]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "pip install 'orxaq-grpc[prices]'" in result.stderr
    assert "--source FILE" in result.stderr
