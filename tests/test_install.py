"""Installed elsewhere: `--version`, the default config the package carries and the commands' fallback to
it from a directory without `config/`, and `init` writing an editable copy of it.

(.ci/wheel does the same with a real wheel in a fresh venv; here the editable install's copy is used.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import RoutingClient
from orxaq_grpc.defaults import (
    CONFIG_ENV,
    PACKAGED_CONFIG_DIR,
    PACKAGED_PROTOS_DIR,
    PACKAGED_SOURCE,
    choose_config_dir,
    find_scenario,
)
from tests.conftest import CLI, CONFIG_DIR, REPO, ServerProcess

# The environment a user elsewhere has: nothing pointing at this checkout's config.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in (CONFIG_ENV, "ORXAQ_ADDRESS", "ORXAQ_DATA_DIR")}
SHIPPED = sorted(
    p.relative_to(CONFIG_DIR)
    for pattern in ("*.toml", "dashboards/*", "scenarios/*.toml")
    for p in CONFIG_DIR.glob(pattern)
)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env or CLEAN_ENV, capture_output=True, text=True, timeout=120, check=False
    )


def files_under(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    done = cli("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"orxaq-grpc {metadata.version('orxaq-grpc')}\n"


def test_the_package_carries_the_shipped_config_and_protos() -> None:
    """The build's copy is config/ and protos/ as they are (stale: `make install` regenerates it)."""
    shipped = {p: (CONFIG_DIR / p).read_bytes() for p in SHIPPED}
    stale = "the packaged copy differs from config/ or protos/: `make install` regenerates it"
    assert files_under(PACKAGED_CONFIG_DIR) == shipped, stale
    assert files_under(PACKAGED_PROTOS_DIR) == files_under(REPO / "protos"), stale
    expected = {"catalog.toml", "lanes.toml", "policy.toml", "dashboards", "scenarios"}
    assert {p.parts[0] for p in shipped} >= expected


def test_init_writes_an_editable_copy_that_checks(tmp_path: Path) -> None:
    target = tmp_path / "new" / "orxaq"
    done = cli("init", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = files_under(target)
    assert {p for p in written if p.parts[0] != "protos"} == set(SHIPPED)
    assert all(written[p] == (CONFIG_DIR / p).read_bytes() for p in SHIPPED)
    assert (
        written[Path("protos/orxaq/routing/v1/routing.proto")]
        == (REPO / "protos/orxaq/routing/v1/routing.proto").read_bytes()
    )
    assert sorted(done.stdout.split()) == sorted(str(target / p) for p in written)

    checked = cli("check-config", str(target), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{target}: ok, version")


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "cfg"
    assert cli("init", str(target), cwd=tmp_path).returncode == 0
    (target / "policy.toml").write_text("# mine\n")
    (target / "scenarios" / "restart.toml").unlink()

    refused = cli("init", str(target), cwd=tmp_path)
    assert refused.returncode == 1
    assert "exist already; nothing written (--force overwrites them)" in refused.stderr
    assert str(target / "policy.toml") in refused.stderr
    assert (target / "policy.toml").read_text() == "# mine\n"
    assert not (target / "scenarios" / "restart.toml").exists()  # nothing written, not even the missing

    forced = cli("init", str(target), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (target / "policy.toml").read_bytes() == (CONFIG_DIR / "policy.toml").read_bytes()
    assert (target / "scenarios" / "restart.toml").is_file()


def test_init_into_a_bad_target_writes_nothing(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x\n")
    done = cli("init", str(a_file), cwd=tmp_path)
    assert done.returncode == 1
    assert f"init {a_file}: {a_file} exists and is not a directory" in done.stderr
    assert a_file.read_text() == "x\n"

    under_a_file = cli("init", str(a_file / "cfg"), cwd=tmp_path)
    assert under_a_file.returncode == 1
    assert "cannot write into" in under_a_file.stderr

    blocked = tmp_path / "blocked"
    (blocked / "catalog.toml").mkdir(parents=True)
    in_the_way = cli("init", str(blocked), "--force", cwd=tmp_path)
    assert in_the_way.returncode == 1
    assert "catalog.toml is a directory where a file goes; nothing written" in in_the_way.stderr
    assert files_under(blocked) == {}

    assert cli("init", cwd=tmp_path).returncode == 2  # DIR is required


def test_check_config_without_config_here_checks_the_packaged_defaults(tmp_path: Path) -> None:
    done = cli("check-config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{PACKAGED_CONFIG_DIR}: ok, version")
    assert f"checking config directory {PACKAGED_CONFIG_DIR} ({PACKAGED_SOURCE})" in done.stderr


def test_a_local_config_or_the_environment_comes_before_the_packaged_defaults(tmp_path: Path) -> None:
    assert cli("init", "config", cwd=tmp_path).returncode == 0
    (tmp_path / "config" / "lanes.toml").unlink()
    local = cli("check-config", cwd=tmp_path)
    assert local.returncode == 1  # ./config is used, broken as it is: never silently another one
    assert "lanes.toml" in local.stderr
    assert PACKAGED_SOURCE not in local.stderr

    elsewhere = tmp_path / "elsewhere"
    assert cli("init", str(elsewhere), cwd=tmp_path).returncode == 0
    from_env = cli("check-config", cwd=tmp_path, env={**CLEAN_ENV, CONFIG_ENV: str(elsewhere)})
    assert from_env.returncode == 0, from_env.stderr
    assert f"({CONFIG_ENV})" in from_env.stderr


def test_choose_config_dir_order(tmp_path: Path) -> None:
    given = tmp_path / "given"
    assert choose_config_dir(given, environ={CONFIG_ENV: "env"}, cwd=tmp_path).directory == given
    assert choose_config_dir(None, environ={CONFIG_ENV: "env"}, cwd=tmp_path).source == CONFIG_ENV
    packaged = choose_config_dir(None, environ={CONFIG_ENV: ""}, cwd=tmp_path)  # empty is unset
    assert (packaged.directory, packaged.packaged) == (PACKAGED_CONFIG_DIR, True)
    (tmp_path / "config").mkdir()
    assert choose_config_dir(None, environ={}, cwd=tmp_path).directory == tmp_path / "config"


class ServerElsewhere(ServerProcess):
    """The suite's server process, started as a user elsewhere would: in `cwd`, no config env."""

    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [*CLI, "serve", "--address", "127.0.0.1:0", "--grace", "1"],
            cwd=cwd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=CLEAN_ENV,
            start_new_session=True,  # its own process group: kill() reaches the workers too
        )
        self.log = []
        self.port = 0


def test_serve_without_config_here_serves_the_packaged_defaults(tmp_path: Path) -> None:
    server = ServerElsewhere(tmp_path)
    try:
        server.wait_for_log(rf"config directory {PACKAGED_CONFIG_DIR} \({PACKAGED_SOURCE}\)")
        server.wait_until_serving()
        with RoutingClient(server.address, timeout_s=10) as client:
            decision = client.route(pb.RouteRequest(lane="codex", task=pb.Task(title="Fix a typo")))
        assert decision.model and decision.lane == "codex"
        server.process.send_signal(signal.SIGTERM)
        code, log = server.finish()
        assert code == 0, log
        assert (tmp_path / "data").is_dir()  # the ledger went where it was started, not into the package
    finally:
        server.kill()


@pytest.mark.parametrize("named", ["restart", "config/scenarios/restart.toml"])
def test_simulate_without_config_here_runs_a_packaged_scenario(tmp_path: Path, named: str) -> None:
    out = tmp_path / "kpis.json"
    done = cli("simulate", named, "--set", "duration_s=60", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"scenario {PACKAGED_CONFIG_DIR / 'scenarios' / 'restart.toml'}" in done.stderr
    kpis = json.loads(out.read_text())
    assert (kpis["scenario"], kpis["duration_s"]) == ("restart", 60.0)
    assert kpis["expectations"] and all(v["holds"] for v in kpis["expectations"])


def test_simulate_of_an_unknown_scenario_still_says_so(tmp_path: Path) -> None:
    assert find_scenario(Path("no-such-scenario"), environ={}, cwd=tmp_path) == (
        Path("no-such-scenario"),
        None,
    )
    done = cli("simulate", "no-such-scenario", "--quiet", cwd=tmp_path)
    assert done.returncode == 2
    assert "no-such-scenario" in done.stderr
