"""Config loading: the shipped files are valid, bad ones are refused with path, field and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orxaq_grpc.config.load import ConfigError, load_config
from orxaq_grpc.config.model import Config
from orxaq_grpc.routing.types import Objective, Profile
from tests.conftest import CONFIG_DIR


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(directory)
    return [str(p) for p in caught.value.problems]


def edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1))


def test_shipped_config_is_valid(shipped_config: Config) -> None:
    assert len(shipped_config.models) >= 12
    assert {"codex", "gemini", "claude"} <= set(shipped_config.lanes)
    assert [m.id for m in shipped_config.models] == sorted(m.id for m in shipped_config.models)
    providers = {m.provider for m in shipped_config.models}
    assert {"openai", "google", "anthropic", "local"} <= providers
    for m in shipped_config.models:
        assert m.price_source and m.speed_source and m.quality_source
    for spec in shipped_config.lanes.values():
        assert spec.static_fallback in spec.allowed_models
        assert spec.default_objective != Objective.UNSPECIFIED
        assert spec.default_profile != Profile.UNSPECIFIED
    assert len(shipped_config.version) == 16


def test_version_is_a_content_hash(config_dir: Path, shipped_config: Config) -> None:
    assert load_config(config_dir).version == shipped_config.version
    edit(config_dir, "lanes.toml", "quality_floor = 55", "quality_floor = 56")
    assert load_config(config_dir).version != shipped_config.version


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        (
            "lanes.toml",
            'static_fallback = "gpt-6.1-sol"',
            'static_fallback = "claude-opus-5-5"',
            "lanes.toml: lanes.codex.static_fallback: 'claude-opus-5-5' is not in allowed_models",
        ),
        (
            "lanes.toml",
            '"gpt-6.1-sol", "gpt-6.1-terra"',
            '"gpt-6.1-sol", "gpt-9"',
            "lanes.toml: lanes.codex.allowed_models: 'gpt-9' is not in the catalog",
        ),
        (
            "lanes.toml",
            'default_objective = "balanced"',
            'default_objective = "cheap"',
            "lanes.toml: lanes.codex.default_objective: 'cheap' is not one of cost_speed, balanced, quality",
        ),
        (
            "lanes.toml",
            "origin_bias = { local = 0.02 }",
            "origin_bias = { remote = 0.02 }",
            "lanes.toml: lanes.codex.origin_bias.remote: 'remote' is not one of hosted, local",
        ),
        (
            "catalog.toml",
            "input_usd_per_mtok = 10.0",
            "input_usd_per_mtok = -1.0",
            "catalog.toml: models[0].input_usd_per_mtok: must be at least 0, got -1",
        ),
        (
            "catalog.toml",
            "quality = 84.8",
            'quality = "high"',
            "catalog.toml: models[0].quality: must be a number, not str",
        ),
        (
            "catalog.toml",
            'id = "gpt-6.1-sol"',
            'id = "gpt-6-astra"',
            "catalog.toml: models[1].id: 'gpt-6-astra' appears twice in the catalog",
        ),
        (
            "catalog.toml",
            'origin = "hosted"',
            'origin = "hosted"\ncolour = "blue"',
            "catalog.toml: models[0].colour: is not a known field",
        ),
        (
            "catalog.toml",
            "price_date = 2026-10-27",
            'price_date = "last week"',
            "catalog.toml: models[0].price_date: must be a date such as 2026-11-01",
        ),
        (
            "policy.toml",
            "ramp_start = 0.90",
            "ramp_start = 1.5",
            "policy.toml: context.ramp_start: must be at most 1, got 1.5",
        ),
        (
            "policy.toml",
            "[estimates]\n",
            "[estimates]\nchars_per_tokn = 3\n",
            "policy.toml: estimates.chars_per_tokn: is not a known field",
        ),
        (
            "policy.toml",
            "balanced = { cost = 0.30, speed = 0.30, quality = 0.40 }",
            "balanced = { cost = 0.0, speed = 0.0, quality = 0.0 }",
            "policy.toml: weights.balanced: needs at least one weight above 0",
        ),
        (
            "policy.toml",
            "cost_speed_difficulty_at_most = 25",
            "cost_speed_difficulty_at_most = 80",
            "policy.toml: objective.cost_speed_difficulty_at_most: must be below quality_difficulty_at_least",
        ),
        (
            "catalog.toml",
            "output_usd_per_mtok = 50.0",
            "output_usd_per_mtok = 1e308",
            "catalog.toml: models[0].output_usd_per_mtok: must be at most 10000, got 1e+308",
        ),
        (
            "catalog.toml",
            "output_tokens_per_s = 57.0",
            "output_tokens_per_s = 1e-300",
            "catalog.toml: models[0].output_tokens_per_s: must be at least 0.1, got 1e-300",
        ),
        (
            "policy.toml",
            "chars_per_token = 4.0",
            "chars_per_token = 1e-300",
            "policy.toml: estimates.chars_per_token: must be at least 0.5, got 1e-300",
        ),
        (
            "policy.toml",
            'cost_speed_keywords = ["typo",',
            'cost_speed_keywords = ["Security", " ",',
            "policy.toml: objective.cost_speed_keywords: keywords must not be blank",
        ),
        (
            "policy.toml",
            'cost_speed_keywords = ["typo",',
            'cost_speed_keywords = ["Security",',
            "policy.toml: objective.quality_keywords: 'security' is also in cost_speed_keywords",
        ),
        (
            "policy.toml",
            'cost_speed_kinds = ["test",',
            'cost_speed_kinds = ["Design",',
            "policy.toml: objective.quality_kinds: 'design' is also in cost_speed_kinds",
        ),
        (
            "policy.toml",
            "max_alternatives = 3",
            "max_alternatives = 2.5",
            "policy.toml: routing.max_alternatives: must be a whole number, not float",
        ),
    ],
)
def test_bad_config_is_refused_with_path_field_and_problem(
    config_dir: Path, name: str, old: str, new: str, expected: str
) -> None:
    edit(config_dir, name, old, new)
    found = problems(config_dir)
    assert any(p.endswith(expected) and p.startswith(str(config_dir)) for p in found), found


def test_every_problem_is_reported_at_once(config_dir: Path) -> None:
    edit(config_dir, "policy.toml", "ramp_penalty = 0.25", "ramp_penalty = -1")
    edit(config_dir, "lanes.toml", "quality_floor = 75", "quality_floor = 175")
    edit(config_dir, "catalog.toml", "context_window = 1050000", "context_window = 0")
    found = problems(config_dir)
    assert any("context_window: 0 is below the minimum 1" in p for p in found)
    assert any("max_output_tokens: is larger than context_window" in p for p in found)
    assert len(found) == 4
    assert {Path(p.split(":")[0]).name for p in found} == {"policy.toml", "lanes.toml", "catalog.toml"}


def test_a_rule_between_fields_is_checked_beside_a_wrong_field(config_dir: Path) -> None:
    edit(config_dir, "lanes.toml", "quality_floor = 75", 'quality_floor = "high"')
    edit(config_dir, "lanes.toml", 'static_fallback = "claude-sonnet-5-5"', 'static_fallback = "gpt-6-luna"')
    assert problems(config_dir) == [
        f"{config_dir / 'lanes.toml'}: lanes.claude.quality_floor: must be a number, not str",
        f"{config_dir / 'lanes.toml'}: lanes.claude.static_fallback: 'gpt-6-luna' is not in allowed_models",
    ]


def test_a_problem_in_one_file_hides_none_in_another(config_dir: Path) -> None:
    edit(config_dir, "catalog.toml", "quality = 84.8", 'quality = "high"')  # gpt-6-astra still exists
    edit(config_dir, "lanes.toml", 'default_profile = "strong"', 'default_profile = "turbo"')  # claude too
    edit(config_dir, "policy.toml", 'hosted = ["codex"', 'hosted = ["cdx"')
    assert problems(config_dir) == [
        f"{config_dir / 'catalog.toml'}: models[0].quality: must be a number, not str",
        f"{config_dir / 'lanes.toml'}: lanes.claude.default_profile: 'turbo' is not one of fast, strong",
        f"{config_dir / 'policy.toml'}: scale.groups.hosted: 'cdx' is not a lane",
    ]


def test_optional_fields_take_their_defaults(shipped_config: Config) -> None:
    models = {m.id: m for m in shipped_config.models}
    assert models["gpt-6-astra"].ttft_s == shipped_config.policy.default_ttft_s  # no ttft_s in the catalog
    assert models["claude-opus-5-5"].ttft_s == 12.49
    local = shipped_config.lanes["local"]
    assert (local.quality_floor, local.critical, local.enabled, local.origin_bias) == (0.0, False, True, {})
    assert shipped_config.policy.budgets.lane_daily_usd == {}


def test_missing_and_malformed_files(config_dir: Path) -> None:
    (config_dir / "lanes.toml").unlink()
    (config_dir / "policy.toml").write_text("[routing\nenabled = true\n")
    found = problems(config_dir)
    assert any(p.startswith(str(config_dir / "lanes.toml")) and "file not found" in p for p in found)
    assert any(p.startswith(str(config_dir / "policy.toml")) and "cannot be read" in p for p in found)


def test_check_config_command(config_dir: Path) -> None:
    command = [sys.executable, "-m", "orxaq_grpc.cli", "check-config"]
    good = subprocess.run([*command, str(CONFIG_DIR)], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr
    assert "ok, version" in good.stdout
    edit(config_dir, "lanes.toml", 'default_profile = "strong"', 'default_profile = "turbo"')
    bad = subprocess.run([*command, str(config_dir)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "lanes.claude.default_profile: 'turbo' is not one of fast, strong" in bad.stderr


def test_a_profile_that_zeroes_an_objective_is_refused(config_dir: Path) -> None:
    edit(
        config_dir,
        "policy.toml",
        "quality = { cost = 0.10, speed = 0.20, quality = 0.70 }",
        "quality = { cost = 0.0, speed = 0.0, quality = 1.0 }",
    )
    edit(
        config_dir,
        "policy.toml",
        "fast = { cost = 1.10, speed = 1.20, quality = 0.75 }",
        "fast = { cost = 1.10, speed = 1.20, quality = 0.0 }",
    )
    assert problems(config_dir) == [
        f"{config_dir / 'policy.toml'}: profiles.fast: leaves objective quality with no weight above 0"
    ]


def test_scale_and_stop_loss_settings_load_with_lane_overrides(shipped_config: Config) -> None:
    scale = shipped_config.policy.scale
    assert scale.limits_for(("codex",)).max_parallel_agents == 8
    assert scale.limits_for(("local",)).max_parallel_agents == 2  # override; the rest inherited
    assert scale.limits_for(("local",)).max_subagents_per_agent == 4
    assert scale.limits_for(("codex", "local")).baseline_parallel_agents == 1
    assert scale.groups["hosted"] == ("codex", "gemini", "claude")
    assert scale.health_window_s == shipped_config.policy.detection.window_s
    assert shipped_config.policy.stop_loss.enabled


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "min_npv_threshold_usd = 5.0",
            "min_npv_threshold_usd = -1.0",
            "scale.min_npv_threshold_usd: must be at least 0",
        ),
        ("discount_rate = 0.10", "discount_rate = -1.0", "scale.discount_rate: must be greater than -1"),
        (
            "baseline_parallel_agents = 2\n",
            "baseline_parallel_agents = 9\n",
            "scale.baseline_parallel_agents: is above",
        ),
        ("[scale.lanes.local]", "[scale.lanes.nope]", "scale.lanes.nope: is not a lane in lanes.toml"),
        ('hosted = ["codex"', 'hosted = ["cdx"', "scale.groups.hosted: 'cdx' is not a lane"),
        (
            "[scale.groups]\n",
            '[scale.groups]\ncodex = ["codex"]\n',
            "scale.groups.codex: is also a lane's id",
        ),
        ("pass_rate_drop = 0.10", "pass_rate_drop = 0", "stop_loss.pass_rate_drop: must be greater than 0"),
        ("hysteresis = 0.5", "hysteresis = 1.5", "stop_loss.hysteresis: must be at most 0.9"),
        ("cool_off_s = 1800", "cool_off_secs = 1800", "stop_loss.cool_off_secs: is not a known field"),
        (
            "uncertainty_ratio = 0.25",
            "uncertainty_ratio = 2",
            "strong_or_weak.uncertainty_ratio: must be at most 1",
        ),
    ],
)
def test_bad_scale_settings_are_refused(config_dir: Path, old: str, new: str, expected: str) -> None:
    edit(config_dir, "policy.toml", old, new)
    found = problems(config_dir)
    assert any(expected in p and p.startswith(str(config_dir / "policy.toml")) for p in found), found
