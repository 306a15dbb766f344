"""`orxaq-grpc`: run the service, ask it for a route or a capacity decision, watch it, check a config.

Without --config (or ORXAQ_CONFIG_DIR), serve, check-config and simulate use ./config when it exists,
else the default config the package carries; `orxaq-grpc init DIR` writes an editable copy of it."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # the commands import what they need when they run: `--help` stays fast
    from google.protobuf.message import Message

    from orxaq.routing.v1 import routing_pb2 as pb
    from orxaq_grpc.client import CallFailed, Connection, RoutingClient
    from orxaq_grpc.defaults import ConfigChoice
    from orxaq_grpc.simulate.kpis import Collector

DEFAULT_ADDRESS = "127.0.0.1:50051"
CONFIG_DEFAULT_HELP = "default ./config if it exists, else the packaged defaults"
DEFAULT_DATA_DIR = "data"
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command its reader left
SIMULATIONS_DIR = "simulations"  # where `simulate` writes its KPIs unless told
ECONOMICS_WINDOWS = ("last_hour", "today", "7d", "30d")  # as the service names them
DEFAULT_WEB_LISTEN = "127.0.0.1:8089"  # where `web` serves its page unless told

_Response = TypeVar("_Response", bound="Message")
TIMEOUT_HELP = "seconds before the call gives up (default %(default)s)"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"orxaq-grpc: {name}={value!r} is not a whole number") from None


class ConnectionSettingsError(Exception):
    """Settings a connection cannot be made with (a TLS or token file that cannot be read)."""


TOKEN_ENV = "ORXAQ_TOKEN"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags (and variables) that say how to reach the service, for every command that calls it."""
    parser.add_argument(
        "--tls", action="store_true", default=_env_flag("ORXAQ_TLS"), help="call over TLS (env ORXAQ_TLS=1)"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=_env_path("ORXAQ_TLS_CA"),
        help="PEM CA to trust; implies --tls (env ORXAQ_TLS_CA; default: the system's roots)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=_env_path("ORXAQ_TLS_CLIENT_CERT"),
        help="PEM client certificate for mutual TLS, with --tls-key (env ORXAQ_TLS_CLIENT_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        default=_env_path("ORXAQ_TLS_CLIENT_KEY"),
        help="the client certificate's PEM key (env ORXAQ_TLS_CLIENT_KEY)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=_env_path("ORXAQ_TOKEN_FILE"),
        help=f"a file holding the bearer token (env ORXAQ_TOKEN_FILE; or the token itself in {TOKEN_ENV})",
    )


def connection_from(args: argparse.Namespace) -> Connection:
    """The connection the parsed flags describe, its files read now; the token from --token-file,
    else $ORXAQ_TOKEN. Raises ConnectionSettingsError naming the flag and file that cannot be used."""
    from orxaq_grpc.client import Connection

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConnectionSettingsError("a client certificate takes its key: give --tls-cert and --tls-key")
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file is not None:
        token = _read(args.token_file, "--token-file").decode("utf-8", "replace").strip() or None
    try:
        return Connection(
            args.address,
            tls=args.tls,
            ca=_read(args.tls_ca, "--tls-ca") if args.tls_ca else None,
            cert=_read(args.tls_cert, "--tls-cert") if args.tls_cert else None,
            key=_read(args.tls_key, "--tls-key") if args.tls_key else None,
            token=token,
        )
    except ValueError as exc:  # a token that would go out in plaintext
        raise ConnectionSettingsError(str(exc)) from None


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConnectionSettingsError(f"{flag} {path}: cannot be read: {exc.strerror or exc}") from None


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise SystemExit(f"orxaq-grpc: {name}={value!r} is neither 1/true/yes/on nor 0/false/no/off")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


class _Version(argparse.Action):
    """`--version`: looks the installed version up only when asked, so `--help` stays fast."""

    def __init__(
        self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("orxaq-grpc")
        except PackageNotFoundError:  # run from a checkout that was never installed
            installed = "unknown (not installed)"
        print(f"{parser.prog} {installed}")
        parser.exit()


def _address(default: str, help: str | None = None) -> argparse.ArgumentParser:
    """A parent parser holding `--address`, its one definition: `serve` listens there, the rest call it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--address", default=default, help=help)
    return parent


def _parser() -> argparse.ArgumentParser:
    """Each command's parser sets `run`, the function `main` hands the parsed arguments to."""
    parser = argparse.ArgumentParser(prog="orxaq-grpc", description=__doc__)
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    address = os.environ.get("ORXAQ_ADDRESS", DEFAULT_ADDRESS)
    listens = _address(
        address, "host:port to listen on; port 0 picks a free one (env ORXAQ_ADDRESS; default %(default)s)"
    )
    calls = _address(address, "host:port of the service (env ORXAQ_ADDRESS; default %(default)s)")
    add_connection_arguments(calls)

    configured = argparse.ArgumentParser(add_help=False)
    configured.add_argument(
        "--config",
        type=Path,
        help=f"config directory (env ORXAQ_CONFIG_DIR; {CONFIG_DEFAULT_HELP})",
    )
    ledger = argparse.ArgumentParser(add_help=False)
    ledger.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("ORXAQ_DATA_DIR", DEFAULT_DATA_DIR)),
        help="where the ledger lives, created on first start (env ORXAQ_DATA_DIR; default %(default)s)",
    )
    serve = commands.add_parser(
        "serve", parents=[listens, configured, ledger], help="run the routing service"
    )
    serve.set_defaults(run=_serve)
    serve.add_argument(
        "--ledger",
        metavar="URL",
        default=os.environ.get("ORXAQ_LEDGER") or None,
        # No %(default)s: a URL from the environment may hold a password.
        help="the ledger: postgresql://user@host/db for one shared by replicas (the postgresql extra), "
        "or sqlite:DIR (env ORXAQ_LEDGER; default: SQLite in --data-dir)",
    )
    serve.add_argument(
        "--shared",
        metavar="URL",
        default=os.environ.get("ORXAQ_SHARED") or None,
        help="a Redis (redis://host:port/db; the redis extra) the replicas and workers share budgets, "
        "breakers' evidence, economics and decision lookup through (env ORXAQ_SHARED; default: none)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=_env_int("ORXAQ_WORKERS", 1),
        help="server processes sharing the port, an event loop each (env ORXAQ_WORKERS; default %(default)s)",
    )
    serve.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on shutdown")
    serve.add_argument(
        "--drain",
        type=float,
        default=0.0,
        help="seconds to report NOT_SERVING before refusing new calls (give load balancers time)",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        default=_env_path("ORXAQ_TLS_CERT"),
        help="PEM certificate chain: serve TLS (env ORXAQ_TLS_CERT; with --tls-key)",
    )
    serve.add_argument(
        "--tls-key", type=Path, default=_env_path("ORXAQ_TLS_KEY"), help="PEM private key (env ORXAQ_TLS_KEY)"
    )
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        default=_env_path("ORXAQ_TLS_CLIENT_CA"),
        help="PEM CA: mutual TLS, clients must show a certificate it signed (env ORXAQ_TLS_CLIENT_CA)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="listen beyond loopback without TLS or credentials (anyone who reaches the port can steer)",
    )
    serve.add_argument(
        "--log-level",
        default=os.environ.get("ORXAQ_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (env ORXAQ_LOG_LEVEL; default %(default)s)",
    )

    token = commands.add_parser(
        "token",
        help="make a bearer token and the [[access.credentials]] entry that admits it",
        description="Prints the entry for policy.toml (the token's SHA-256, never the token) and "
        "writes the token to FILE (created, readable by its owner only), or prints it with --print.",
    )
    token.set_defaults(run=_token)
    token.add_argument("name", help="who holds it, for the logs (lower-case letters, digits, . _ : / -)")
    role = token.add_mutually_exclusive_group(required=True)
    role.add_argument("--lane", help="a lane credential: Route and Report for this lane only")
    role.add_argument("--operator", action="store_true", help="an operator credential: every call")
    where = token.add_mutually_exclusive_group(required=True)
    where.add_argument("--write", type=Path, metavar="FILE", help="write the token here (must not exist)")
    where.add_argument("--print", action="store_true", help="print the token on standard output")

    check = commands.add_parser("check-config", help="validate a config directory; non-zero exit on problems")
    check.set_defaults(run=_check_config)
    check.add_argument(
        "directory",
        nargs="?",
        type=Path,
        help=f"the directory serve would use: env ORXAQ_CONFIG_DIR, {CONFIG_DEFAULT_HELP}",
    )

    init = commands.add_parser(
        "init",
        help="write an editable copy of the packaged default config (and the protos) into DIR",
        description="Writes the default config into DIR (then: orxaq-grpc serve --config DIR) and the "
        ".proto files into DIR/protos. Refuses, writing nothing, when any of those files exists, "
        "unless --force.",
    )
    init.set_defaults(run=_init)
    init.add_argument("target", type=Path, metavar="DIR", help="created if missing")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    route = commands.add_parser(
        "route", parents=[calls], help="ask a running service which model a task should use"
    )
    route.set_defaults(run=_route)
    route.add_argument("--timeout", type=float, default=10.0, help=TIMEOUT_HELP)
    route.add_argument("--lane", required=True, help="the lane asking, as lanes.toml names it")
    route.add_argument("--task-id", default="", help="the lane's own id for the task, for the logs")
    route.add_argument(
        "--kind",
        default="",
        help="the task's kind; the policy's task kinds (test, docs, architecture, ...) decide the "
        "objective, any other kind only labels the task (the answer says which rule decided)",
    )
    route.add_argument("--title", default="", help="the task's title (keywords in it count)")
    prompt = route.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="the task's prompt text")
    prompt.add_argument("--prompt-file", type=Path, help="read the prompt from a file ('-' for stdin)")
    route.add_argument("--label", action="append", default=[], help="repeatable")
    route.add_argument("--input-tokens", type=int, default=0, help="0 estimates from the text")
    route.add_argument("--output-tokens", type=int, default=0, help="0 uses the policy default")
    route.add_argument("--difficulty", type=float, help="0-100; omitted estimates from the text")
    route.add_argument(
        "--value-usd", type=float, help="what a successful task is worth: decides strong or weak model"
    )
    route.add_argument(
        "--objective", choices=["cost_speed", "balanced", "quality"], help="omitted: the policy decides"
    )
    route.add_argument("--profile", choices=["fast", "strong"], help="omitted: the lane's default")
    route.add_argument("--model", default="", help="requested model")
    route.add_argument("--max-cost", type=float, help="USD, expected cost of this request")
    route.add_argument("--min-quality", type=float, help="0-100")
    route.add_argument("--max-latency", type=float, help="seconds")
    route.add_argument("--capability", action="append", default=[], help="required capability; repeatable")
    route.add_argument("--explain", action="store_true", help="list every candidate and filtered model")
    route.add_argument("--json", action="store_true", help="print the decision as JSON")

    route_batch = commands.add_parser(
        "route-batch",
        parents=[calls],
        help="route many tasks in one call: JSON Lines in, one JSON result per line out",
        description="Reads FILE ('-' for stdin): one route request per line, with the fields `route` takes "
        "named as its flags (lane, task_id, kind, title, prompt or prompt_file, label, input_tokens, "
        "output_tokens, difficulty, value_usd, objective, profile, model, max_cost, min_quality, "
        "max_latency, capability, explain) or in the proto's JSON form (a RouteRequest, with its task). "
        'Prints one line per request, in order: {"line": N, "decision": {...}} or '
        '{"line": N, "error": {...}}. A bad line refuses the file (FILE:LINE: field: problem), exit 2; '
        "exit 1 when any request got an error, else 0.",
    )
    route_batch.set_defaults(run=_route_batch)
    route_batch.add_argument("file", type=Path, metavar="FILE", help="JSON Lines of route requests")
    route_batch.add_argument("--timeout", type=float, default=30.0, help=TIMEOUT_HELP)
    route_batch.add_argument("--lane", default="", help="the lane of a line that names none")
    route_batch.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="requests per call, at most the service's limits.max_batch_items (default %(default)s)",
    )

    economics = commands.add_parser(
        "economics", parents=[calls], help="spend, tokens, cost per 1M and rates from a running service"
    )
    economics.set_defaults(run=_economics)
    economics.add_argument("--timeout", type=float, default=10.0, help=TIMEOUT_HELP)
    economics.add_argument(
        "--window",
        choices=ECONOMICS_WINDOWS,
        help="the window to print (default today; with --json, every window unless one is named)",
    )
    economics.add_argument("--json", action="store_true", help="print the response as JSON")

    scale = commands.add_parser(
        "scale",
        parents=[calls],
        help="ask whether a lane or group may grow (NPV gate)",
        description="Value and cost each take one form: --X-once USD[@DAY], --X-daily USD --horizon DAYS, "
        "or --X-flow DAY:USD repeated (a schedule).",
    )
    scale.set_defaults(run=_scale)
    scale.add_argument("--timeout", type=float, default=10.0, help=TIMEOUT_HELP)
    target = scale.add_mutually_exclusive_group(required=True)
    target.add_argument("--lane", help="the lane to grow")
    target.add_argument("--group", help="a scaling group from policy.toml")
    scale.add_argument("--agents", type=int, required=True, help="current parallel agents")
    scale.add_argument("--to", type=int, required=True, help="requested parallel agents")
    scale.add_argument("--subagents", type=int, default=0, help="current subagents per agent")
    scale.add_argument("--to-subagents", type=int, help="requested subagents per agent (default: current)")
    for side in ("value", "cost"):
        forms = scale.add_mutually_exclusive_group()
        forms.add_argument(f"--{side}-once", metavar="USD[@DAY]", help=f"{side} on one day (default day 0)")
        forms.add_argument(
            f"--{side}-daily", type=float, metavar="USD", help=f"{side} per day over --horizon"
        )
        forms.add_argument(
            f"--{side}-flow", action="append", metavar="DAY:USD", help="repeatable: a schedule"
        )
    scale.add_argument("--horizon", type=int, default=0, help="days, for the daily forms")
    scale.add_argument("--value-horizon", type=int, help="days for --value-daily (default --horizon)")
    scale.add_argument("--cost-horizon", type=int, help="days for --cost-daily (default --horizon)")
    uncertainty = scale.add_mutually_exclusive_group()
    uncertainty.add_argument("--penalty", type=float, metavar="USD", help="uncertainty penalty")
    uncertainty.add_argument(
        "--uncertainty-ratio",
        type=float,
        help="with --confidence: penalty = value x ratio x (1 - confidence)",
    )
    scale.add_argument("--confidence", type=float, help="0-1, with --uncertainty-ratio")
    scale.add_argument("--discount-rate", type=float, help="annual; default: the policy's")
    scale.add_argument("--request-id", default="", help="the supervisor's own id, for the decision log")
    scale.add_argument("--json", action="store_true", help="print the decision as JSON")

    stop_loss = commands.add_parser(
        "stop-loss", parents=[calls], help="show, enter or end stop-loss on a running service"
    )
    stop_loss.set_defaults(run=_stop_loss)
    stop_loss.add_argument("--timeout", type=float, default=10.0, help=TIMEOUT_HELP)
    action = stop_loss.add_mutually_exclusive_group()
    action.add_argument("--enter", action="store_true", help="roll back to static routing now")
    action.add_argument("--exit", action="store_true", help="end stop-loss now")
    stop_loss.add_argument("--note", default="", help="why, for the decision log")
    stop_loss.add_argument("--json", action="store_true", help="print the answer as JSON")

    _add_operator_controls(commands, calls)

    health = commands.add_parser(
        "health", parents=[calls], help="detection states, breakers and budgets of a running service"
    )
    health.set_defaults(run=_health)
    health.add_argument("--timeout", type=float, default=10.0, help=TIMEOUT_HELP)
    health.add_argument("--json", action="store_true", help="print each snapshot as JSON")
    health.add_argument(
        "--watch", action="store_true", help="print a snapshot on every change (Ctrl-C stops)"
    )
    health.add_argument("--heartbeat", type=float, default=0.0, help="--watch: seconds between heartbeats")

    monitor = commands.add_parser(
        "monitor",
        parents=[calls],
        help="live view: states, economics by provider and lane, budgets, guardrails, decisions",
    )
    monitor.set_defaults(run=_monitor)
    monitor.add_argument("--refresh", type=float, default=2.0, help="seconds between frames (0.1-3600)")
    monitor.add_argument(
        "--window",
        choices=ECONOMICS_WINDOWS,
        default="today",
        help="the economics window (default %(default)s)",
    )
    monitor.add_argument("--once", action="store_true", help="print one frame and exit (for scripts)")
    web = commands.add_parser(
        "web",
        parents=[calls],
        help="the monitor as a web page, with the operator controls: serves it on --listen",
        description="A companion process: one WatchHealth stream and one Economics call every --refresh-s "
        "to the service, whatever the number of open pages, each page kept live over server-sent events. "
        "Operator actions on the page forward the operator token pasted there, for that call only; the "
        "token given here (--token-file, ORXAQ_TOKEN) is used for reads.",
    )
    web.set_defaults(run=_web)
    web.add_argument(
        "--listen",
        default=DEFAULT_WEB_LISTEN,
        metavar="HOST:PORT",
        help="where the page is served; port 0 picks a free one (default %(default)s)",
    )
    web.add_argument(
        "--refresh-s",
        type=float,
        default=5.0,
        help="seconds between Economics calls (0.1-3600; default %(default)s)",
    )
    web.add_argument(
        "--insecure",
        action="store_true",
        help="listen beyond loopback: operator tokens then reach the page over plain HTTP",
    )
    simulate = commands.add_parser(
        "simulate",
        help="drive the service with a simulated fleet (config/scenarios/*.toml) and print its KPIs; "
        "exit 1 when one of the scenario's expectations does not hold",
    )
    simulate.set_defaults(run=_simulate)
    simulate.add_argument(
        "scenario",
        type=Path,
        help="a scenario file, e.g. config/scenarios/budget-race.toml, or a shipped scenario's name "
        "(budget-race); with no ./config, config/... and names are found in the packaged defaults",
    )
    simulate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a scenario field by dotted path, the value in TOML syntax "
        "(e.g. policy.overrides.policy.budgets.on_exhausted='\"error\"' or seed=3); repeatable",
    )
    simulate.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where the KPIs go as JSON (default simulations/NAME-seedN.json under the current directory)",
    )
    simulate.add_argument("--plot", type=Path, metavar="PATH", help="also draw the run over time as a PNG")
    simulate.add_argument("--quiet", action="store_true", help="no progress lines")

    evaluate = commands.add_parser(
        "evaluate",
        parents=[configured],
        help="the success model as a strong-or-weak router on held-out per-prompt outcomes: "
        "APGR and CPT against random routing and the oracle",
        description="Learns the training part of OUTCOMES through the ledger path reports take, routes "
        "the rest, and prints RouteLLM's figures. OUTCOMES: JSON Lines, one prompt per line, "
        '{"prompt": "...", "outcomes": {"model-a": true, "model-b": false}} with optional id, title, '
        "kind and labels.",
    )
    evaluate.set_defaults(run=_evaluate)
    evaluate.add_argument("outcomes", type=Path, metavar="OUTCOMES", help="the outcomes file")
    evaluate.add_argument(
        "--train-share", type=float, default=0.5, help="share of prompts learned (default %(default)s)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="of the split (default %(default)s)")
    evaluate.add_argument(
        "--models",
        metavar="STRONG,WEAK",
        help="the pair to route between (default: the most and least accurate on the training part)",
    )
    evaluate.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    evaluate.add_argument("--plot", type=Path, metavar="PATH", help="draw the curves (.png or .svg)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress lines")

    calibrate = commands.add_parser(
        "calibrate",
        parents=[configured, ledger],
        help="the router-learned-<threshold> that would have sent a share of recent traffic to the "
        "strong model",
    )
    calibrate.set_defaults(run=_calibrate)
    calibrate.add_argument(
        "--strong-share", type=float, required=True, help="share of recent tasks for the strong model, 0-1"
    )
    calibrate.add_argument(
        "--recent",
        type=int,
        default=1000,
        help="how many recent decisions to calibrate on (default %(default)s)",
    )
    _add_autonomy(commands, calls)
    _add_prices(commands)
    return parser


def _add_prices(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`orxaq-grpc prices {check,update}`: the catalog's list prices against a maintained price map."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        help="the config directory (default: ORXAQ_CONFIG_DIR, ./config, else the packaged defaults)",
    )
    common.add_argument(
        "--source",
        default="litellm",
        help="'litellm' (the map the installed litellm package ships: pip install 'orxaq-grpc[prices]') "
        "or a file in LiteLLM's model_prices_and_context_window.json format (default %(default)s)",
    )
    prices = commands.add_parser(
        "prices",
        help="compare the catalog's prices with LiteLLM's price map (check) and write the drift (update)",
    )
    actions = prices.add_subparsers(dest="action", required=True, metavar="ACTION", help="check or update")
    check = actions.add_parser(
        "check", parents=[common], help="list where the catalog and the map disagree; exit 1 when they do"
    )
    check.add_argument("--json", action="store_true", help="print the comparison as JSON")
    update = actions.add_parser(
        "update",
        parents=[common],
        help="write the map's figures into catalog.toml with their source and date (validated first)",
    )
    update.add_argument("--model", action="append", default=[], help="only this model (repeatable)")
    update.add_argument(
        "--field",
        action="append",
        default=[],
        choices=["input", "output", "cached_input", "cache_write"],
        help="only this price (repeatable)",
    )
    update.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    prices.set_defaults(run=_prices)


def _prices(args: argparse.Namespace) -> int:
    from orxaq_grpc.prices import commands

    choice = _config_choice(args.config, "--config")
    if choice is None:
        return 2
    if args.action == "check":
        return commands.check(choice.directory, args.source, sys.stdout, sys.stderr, args.json)
    if choice.packaged and not args.dry_run:
        print(
            f"orxaq-grpc: will not edit the packaged config ({choice.directory}): "
            "`orxaq-grpc init DIR` writes an editable copy, then --config DIR",
            file=sys.stderr,
        )
        return 2
    return commands.update(
        choice.directory,
        args.source,
        sys.stdout,
        sys.stderr,
        models=args.model,
        fields=[f"{field}_usd_per_mtok" for field in args.field],
        dry_run=args.dry_run,
    )


DEFAULT_QUEUE = "autonomy/queue.toml"  # the queue `autonomy` runs unless told (env ORXAQ_QUEUE)


def _add_autonomy(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], calls: argparse.ArgumentParser
) -> None:
    """`orxaq-grpc autonomy {discover,prepare,dry-run,run,status}` over a task queue file."""
    queue = argparse.ArgumentParser(add_help=False)
    queue.add_argument(
        "--queue",
        type=Path,
        default=Path(os.environ.get("ORXAQ_QUEUE", DEFAULT_QUEUE)),
        help="the task queue file (env ORXAQ_QUEUE; default %(default)s)",
    )
    queue.add_argument(
        "--state-dir",
        type=Path,
        help="where the journal, logs and worktrees go (default: the queue's state_dir, "
        ".orxaq-autonomy next to the queue file)",
    )
    autonomy = commands.add_parser(
        "autonomy",
        help="run a queue of tasks unattended: discover, prepare, dry-run, run, status",
        description="Lanes that run unattended over a task queue file (config/autonomy/queue.example.toml "
        "documents the format).",
    )
    steps = autonomy.add_subparsers(
        dest="step", required=True, metavar="STEP", help="discover, prepare, dry-run, run or status"
    )
    discover = steps.add_parser(
        "discover", parents=[queue], help="validate the queue and list the ready tasks"
    )
    discover.add_argument("--json", action="store_true", help="print the ready tasks as JSON")
    steps.add_parser(
        "prepare",
        parents=[queue, calls],
        help="preflight: the service serving, each lane's agent found, gates defined, worktrees made",
    )
    steps.add_parser(
        "dry-run",
        parents=[queue, calls],
        help="Route every ready task and ask Scale per lane, print the plan; no agent runs (the Routes "
        "reserve their estimates until the service's reservation_ttl_s)",
    )
    run = steps.add_parser(
        "run",
        parents=[queue, calls],
        help="run the queue in cycles until it is done or nothing is ready; one JSON line per cycle",
    )
    run.add_argument("--retry-failed", action="store_true", help="give tasks that failed another go")
    run.add_argument("--max-cycles", type=int, default=0, help="stop after this many cycles (0: no limit)")
    status = steps.add_parser("status", parents=[queue], help="progress, spend, pass rate, last cycle")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    autonomy.set_defaults(run=_autonomy)


def _autonomy(args: argparse.Namespace) -> int:
    from orxaq_grpc.autonomy import loop
    from orxaq_grpc.autonomy.queue import QueueError, load_queue

    try:
        queue = load_queue(args.queue, args.state_dir)
    except QueueError as exc:
        print(f"orxaq-grpc: queue refused, {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if args.step == "discover":
        return loop.discover(queue, sys.stdout, args.json)
    if args.step == "status":
        return loop.status(queue, sys.stdout, args.json)
    if args.step == "prepare":
        return loop.prepare(queue, args.connection, sys.stdout, sys.stderr)
    if args.step == "dry-run":
        return loop.dry_run(queue, args.connection, sys.stdout)
    if args.max_cycles < 0:
        print("orxaq-grpc: --max-cycles must be 0 (no limit) or more", file=sys.stderr)
        return 2
    return loop.run(queue, args.connection, sys.stdout, sys.stderr, args.retry_failed, args.max_cycles)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(args, "token_file"):  # a command that calls the service
        try:
            args.connection = connection_from(args)
        except ConnectionSettingsError as exc:
            print(f"orxaq-grpc: {exc}", file=sys.stderr)
            return 2
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        code = run(args)
        sys.stdout.flush()
    except BrokenPipeError:  # stdout closed early (`| head`): quiet, as a shell reports SIGPIPE
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so exit's flush fails not
        return EXIT_BROKEN_PIPE
    return code


def _config_choice(explicit: Path | None, option: str) -> ConfigChoice | None:
    """The config directory a command uses (see orxaq_grpc.defaults); None, said, when there is none."""
    from orxaq_grpc.defaults import DefaultsError, choose_config_dir

    try:
        return choose_config_dir(explicit, option=option)
    except DefaultsError as exc:
        print(f"orxaq-grpc: no ./config here and {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from orxaq_grpc.config.load import ConfigError
    from orxaq_grpc.service.server import LOG_FORMAT
    from orxaq_grpc.service.tls import ServerTls, TlsError
    from orxaq_grpc.service.workers import ExposureRefused, serve
    from orxaq_grpc.store import StoreError, check_ledger
    from orxaq_grpc.telemetry.export import TelemetryConfigError

    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)

    if args.workers < 1:
        print("orxaq-grpc: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        check_ledger(args.ledger)
    except StoreError as exc:
        print(f"orxaq-grpc: --ledger: {exc}", file=sys.stderr)
        return 2
    if args.shared:
        from orxaq_grpc.shared import SharedUnavailable, open_link

        try:
            open_link(args.shared).client.close()  # the URL and the package, before anything starts
        except SharedUnavailable as exc:
            print(f"orxaq-grpc: --shared: {exc}", file=sys.stderr)
            return 2
    choice = _config_choice(args.config, "--config")
    if choice is None:
        return 2
    logging.getLogger("orxaq_grpc.cli").info("%s", choice.describe())
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
        print(
            "orxaq-grpc: TLS takes --tls-cert and --tls-key together (and --tls-client-ca with them)",
            file=sys.stderr,
        )
        return 2
    tls = ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    try:
        serve(
            choice.directory,
            args.data_dir,
            args.address,
            args.workers,
            args.grace,
            args.drain,
            tls,
            args.insecure,
            args.ledger,
            args.shared,
        )
    except (ExposureRefused, TlsError) as exc:
        print(f"orxaq-grpc: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"orxaq-grpc: config refused:\n{exc}", file=sys.stderr)
        return 2
    except TelemetryConfigError as exc:
        print(f"orxaq-grpc: telemetry refused: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, StoreError) as exc:
        print(f"orxaq-grpc: {exc}", file=sys.stderr)
        return 1
    return 0


def _route(args: argparse.Namespace) -> int:
    from orxaq.routing.v1 import routing_pb2 as pb
    from orxaq_grpc.render import decision_text

    try:
        if args.prompt_file is None:
            prompt = args.prompt
        elif str(args.prompt_file) == "-":
            prompt = sys.stdin.read()
        else:
            prompt = args.prompt_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"orxaq-grpc: cannot read the prompt: {exc}", file=sys.stderr)
        return 2
    try:
        task = pb.Task(
            id=args.task_id,
            kind=args.kind,
            title=args.title,
            prompt=prompt,
            labels=args.label,
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
        )
    except ValueError as exc:  # e.g. a token count past int64
        print(f"orxaq-grpc: {exc}", file=sys.stderr)
        return 2
    if args.difficulty is not None:
        task.difficulty = args.difficulty
    if args.value_usd is not None:
        task.value_usd = args.value_usd
    constraints = pb.Constraints(required_capabilities=args.capability)
    for field, value in (
        ("max_cost_usd", args.max_cost),
        ("min_quality", args.min_quality),
        ("max_latency_s", args.max_latency),
    ):
        if value is not None:
            setattr(constraints, field, value)
    request = pb.RouteRequest(
        lane=args.lane,
        task=task,
        objective=f"OBJECTIVE_{(args.objective or 'unspecified').upper()}",  # enum fields take names too
        profile=f"PROFILE_{(args.profile or 'unspecified').upper()}",
        requested_model=args.model,
        constraints=constraints,
        explain=args.explain,
    )

    def routed(client: RoutingClient) -> pb.RouteDecision:
        decision = client.route(request)
        if args.kind and not args.objective and decision.objective_rule != pb.OBJECTIVE_RULE_TASK_KIND:
            rule = pb.ObjectiveRule.Name(decision.objective_rule).removeprefix("OBJECTIVE_RULE_").lower()
            print(
                f"orxaq-grpc: note: --kind {args.kind!r} is none of the policy's task kinds; the objective "
                f"was decided by {rule}",
                file=sys.stderr,
            )
        return decision

    return _show(args, routed, decision_text)


def _route_batch(args: argparse.Namespace) -> int:
    from orxaq.routing.v1 import routing_pb2 as pb
    from orxaq_grpc.batch_file import parse_requests, read_requests, result_line
    from orxaq_grpc.client import CallFailed, RoutingClient

    if args.batch_size < 1:
        print("orxaq-grpc: --batch-size must be at least 1", file=sys.stderr)
        return 2
    shown = str(args.file)
    if shown == "-":
        shown = "<stdin>"
        requests, problems = parse_requests(sys.stdin.read(), Path.cwd(), args.lane)
    else:
        requests, problems = read_requests(args.file, args.lane)
    for problem in problems:
        print(f"orxaq-grpc: {problem.text(shown)}", file=sys.stderr)
    if problems:
        return 2
    failed = False
    with RoutingClient(args.connection, timeout_s=args.timeout) as client:
        for start in range(0, len(requests), args.batch_size):
            chunk = requests[start : start + args.batch_size]
            try:
                results = client.route_batch(request for _, request in chunk)
            except CallFailed as exc:
                lines = f"lines {chunk[0][0]}-{chunk[-1][0]}" if chunk else "the file"
                print(f"orxaq-grpc: {shown}: {lines} refused", file=sys.stderr)
                return _failed(exc)
            for (line, _), result in zip(chunk, results, strict=True):
                failed = failed or not isinstance(result, pb.RouteDecision)
                print(result_line(line, result))
    return 1 if failed else 0


def _economics(args: argparse.Namespace) -> int:
    from orxaq_grpc.render import economics_text

    def only_the_window(response: pb.EconomicsResponse) -> pb.EconomicsResponse:
        """With --json and a named window, that window (and the hourly series) alone."""
        if args.window:
            kept = [w for w in response.windows if w.window == args.window]
            del response.windows[:]
            response.windows.extend(kept)
        return response

    return _show(
        args,
        lambda client: only_the_window(client.economics()),
        lambda r: economics_text(r, args.window or "today"),
    )


def _health(args: argparse.Namespace) -> int:
    from orxaq_grpc.client import CallFailed, RoutingClient
    from orxaq_grpc.render import health_text, to_json

    show = to_json if args.json else health_text
    with RoutingClient(args.connection, timeout_s=args.timeout) as client:
        try:
            if not args.watch:
                print(show(client.health()))
                return 0
            for snapshot in client.watch_health(args.heartbeat):
                print(show(snapshot), flush=True)
        except CallFailed as exc:
            print(f"orxaq-grpc: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from orxaq_grpc.monitor import run

    if not 0.1 <= args.refresh <= 3600:
        print("orxaq-grpc: --refresh must be between 0.1 and 3600 seconds", file=sys.stderr)
        return 2
    return run(args.connection, refresh_s=args.refresh, window=args.window, once=args.once)


def _web(args: argparse.Namespace) -> int:
    from orxaq_grpc.web.app import ListenRefused, run

    if not 0.1 <= args.refresh_s <= 3600:
        print("orxaq-grpc: --refresh-s must be between 0.1 and 3600 seconds", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args.connection, args.listen, args.refresh_s, args.insecure)
    except ListenRefused as exc:
        print(f"orxaq-grpc: {exc}", file=sys.stderr)
        return 2


def _flows(args: argparse.Namespace, side: str) -> pb.Flows | None:
    from orxaq.routing.v1 import routing_pb2 as pb

    once, daily, schedule = (getattr(args, f"{side}_{form}") for form in ("once", "daily", "flow"))
    if once is not None:
        usd, _, day = once.partition("@")
        return pb.Flows(once=pb.CashFlow(usd=float(usd), day=float(day or 0)))
    if daily is not None:
        horizon = getattr(args, f"{side}_horizon")
        return pb.Flows(
            daily=pb.DailyFlow(usd_per_day=daily, horizon_days=args.horizon if horizon is None else horizon)
        )
    if schedule:
        flows = []
        for item in schedule:
            day, sep, usd = item.partition(":")
            if not sep:
                raise ValueError(f"--{side}-flow {item!r} is not DAY:USD")
            flows.append(pb.CashFlow(day=float(day), usd=float(usd)))
        return pb.Flows(schedule=pb.CashFlowSchedule(flows=flows))
    return None


def _scale(args: argparse.Namespace) -> int:
    from orxaq.routing.v1 import routing_pb2 as pb
    from orxaq_grpc.render import scale_text

    if (args.uncertainty_ratio is None) != (args.confidence is None):
        print("orxaq-grpc: --uncertainty-ratio and --confidence go together", file=sys.stderr)
        return 2
    try:
        request = pb.ScaleRequest(
            lane=args.lane or "",
            group=args.group or "",
            current_parallel_agents=args.agents,
            requested_parallel_agents=args.to,
            current_subagents_per_agent=args.subagents,
            requested_subagents_per_agent=args.subagents if args.to_subagents is None else args.to_subagents,
            value=_flows(args, "value"),
            cost=_flows(args, "cost"),
            request_id=args.request_id,
        )
    except ValueError as exc:
        print(f"orxaq-grpc: {exc}", file=sys.stderr)
        return 2
    if args.penalty is not None:
        request.uncertainty.penalty_usd = args.penalty
    elif args.uncertainty_ratio is not None:
        request.uncertainty.confidence.uncertainty_ratio = args.uncertainty_ratio
        request.uncertainty.confidence.confidence = args.confidence
    if args.discount_rate is not None:
        request.discount_rate = args.discount_rate
    return _show(args, lambda client: client.scale(request), scale_text)


def _add_operator_controls(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], calls: argparse.ArgumentParser
) -> None:
    """reload, close-breaker, pause-lane and resume-lane: the operator's RPCs, each with its note."""
    reload = commands.add_parser(
        "reload",
        parents=[calls],
        help="reload a running service's config as SIGHUP does, logged with why",
    )
    reload.set_defaults(run=_reload)
    close = commands.add_parser(
        "close-breaker", parents=[calls], help="close a model's or provider's open circuit by hand"
    )
    close.set_defaults(run=_close_breaker)
    close.add_argument("scope", choices=("model", "provider"), help="the circuit's scope")
    close.add_argument("name", help="the model or provider, as the catalog names it")
    pause = commands.add_parser(
        "pause-lane", parents=[calls], help="pause a lane: every Route of it answers its static pin"
    )
    pause.set_defaults(run=_pause_lane, paused=True)
    resume = commands.add_parser("resume-lane", parents=[calls], help="resume a paused lane's scored routing")
    resume.set_defaults(run=_pause_lane, paused=False)
    for lane_command in (pause, resume):
        lane_command.add_argument("lane", help="the lane, as lanes.toml names it")
    for command in (reload, close, pause, resume):
        command.add_argument("--note", required=True, help="why, for the ledger (required)")
        command.add_argument("--timeout", type=float, default=10.0, help=TIMEOUT_HELP)
        command.add_argument("--json", action="store_true", help="print the answer as JSON")


def _reload(args: argparse.Namespace) -> int:
    from orxaq_grpc.client import CallFailed, RoutingClient
    from orxaq_grpc.render import to_json

    with RoutingClient(args.connection, timeout_s=args.timeout) as client:
        try:
            answer = client.reload_config(args.note)
        except CallFailed as exc:
            return _failed(exc)
    if args.json:
        print(to_json(answer))
    elif answer.reloaded:
        print(f"reloaded: config {answer.previous_version} -> {answer.config_version}")
    else:
        print(f"refused, config {answer.config_version} stays:\n{answer.refusal}")
    return 0 if answer.reloaded else 1


def _close_breaker(args: argparse.Namespace) -> int:
    def text(answer: pb.CloseBreakerResponse) -> str:
        done = "closed" if answer.changed else "was closed already"
        return f"{args.scope} {args.name}: {done}"

    return _show(args, lambda client: client.close_breaker(args.scope, args.name, args.note), text)


def _pause_lane(args: argparse.Namespace) -> int:
    def text(answer: pb.PauseLaneResponse) -> str:
        state = f"paused (static pin {answer.lane.static_fallback})" if answer.lane.paused else "scored again"
        return f"lane {args.lane}: {state}{'' if answer.changed else ', as it already was'}"

    return _show(args, lambda client: client.pause_lane(args.lane, args.paused, args.note), text)


def _stop_loss(args: argparse.Namespace) -> int:
    from orxaq_grpc.render import guardrails_text

    def call(client: RoutingClient) -> pb.Guardrails:
        if args.enter or args.exit:
            return client.set_stop_loss(args.enter, args.note).guardrails
        return client.health().guardrails

    return _show(args, call, guardrails_text)


def _show(
    args: argparse.Namespace,
    call: Callable[[RoutingClient], _Response],
    text: Callable[[_Response], str],
) -> int:
    """Makes one call and prints its answer as text, or as JSON with --json."""
    from orxaq_grpc.client import CallFailed, RoutingClient
    from orxaq_grpc.render import to_json

    with RoutingClient(args.connection, timeout_s=args.timeout) as client:
        try:
            response = call(client)
        except CallFailed as exc:
            return _failed(exc)
    print(to_json(response) if args.json else text(response))
    return 0


def _failed(exc: CallFailed) -> int:
    """Prints a failed call; 2 when the request was at fault (fields named), else 1."""
    print(f"orxaq-grpc: {exc.code.name}: {exc.details}", file=sys.stderr)
    for field, problem in exc.violations:
        print(f"  {field}: {problem}", file=sys.stderr)
    return 2 if exc.violations else 1


def _simulate(args: argparse.Namespace) -> int:
    import json

    from orxaq_grpc.defaults import find_scenario
    from orxaq_grpc.simulate.engine import run_scenario
    from orxaq_grpc.simulate.render import kpi_table, plot
    from orxaq_grpc.simulate.scenario import ScenarioError, load_scenario, parse_assignments

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # What would fail after the run fails before it.
    if problem := _plot_problem(args.plot, args.json):
        print(f"orxaq-grpc: {problem}", file=sys.stderr)
        return 2
    scenario_path, found_in = find_scenario(args.scenario)
    if found_in is not None and not args.quiet:
        print(f"simulate: scenario {scenario_path} (from the {found_in.describe()})", file=sys.stderr)
    try:
        scenario = load_scenario(scenario_path, parse_assignments(args.set))
        last_shown = [-1]

        def progress(t: float, kpis: Collector) -> None:
            tenth = int(10 * t / scenario.duration_s)
            if not args.quiet and tenth > last_shown[0]:
                last_shown[0] = tenth
                print(
                    f"simulate: {t:,.0f} of {scenario.duration_s:,.0f} s, {kpis.arrived} tasks, "
                    f"{sum(kpis.decisions_by_strategy.values())} decisions",
                    file=sys.stderr,
                )

        kpis = run_scenario(scenario, scenario_path, progress)
    except ScenarioError as exc:
        print(f"{len(exc.problems)} problem(s) in the scenario:", file=sys.stderr)
        for scenario_problem in exc.problems:
            print(f"  {scenario_problem}", file=sys.stderr)
        return 2
    print(kpi_table(kpis))
    out = args.json or Path(SIMULATIONS_DIR) / f"{scenario.name}-seed{scenario.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(kpis, indent=2) + "\n", encoding="utf-8")
    print(f"\nKPIs as JSON in {out}")
    if args.plot is not None:
        plot(kpis, args.plot)
    return 0 if all(v["holds"] for v in kpis["expectations"]) else 1


def _plot_problem(path: Path | None, *more: Path | None) -> str | None:
    """Why the figures could not be written after a long run: checked before it starts."""
    import importlib.util

    if path is not None and importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib: pip install 'orxaq-grpc[plot]'"
    for out in (path, *more):
        if out is not None and not out.parent.is_dir():
            return f"cannot write {out}: {out.parent} is not a directory"
    return None


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from orxaq_grpc.config.load import ConfigError, load_config
    from orxaq_grpc.evaluate.outcomes_file import read_outcomes
    from orxaq_grpc.evaluate.render import as_dict, plot, table
    from orxaq_grpc.evaluate.run import evaluate

    if problem := _plot_problem(args.plot, args.json):
        print(f"orxaq-grpc: {problem}", file=sys.stderr)
        return 2
    if not 0.0 < args.train_share < 1.0:
        print("orxaq-grpc: --train-share must be between 0 and 1", file=sys.stderr)
        return 2
    choice = _config_choice(args.config, "--config")
    if choice is None:
        return 2
    try:
        config = load_config(choice.directory)
        prompts = read_outcomes(args.outcomes)
    except ConfigError as exc:
        print(f"orxaq-grpc: refused:\n{exc}", file=sys.stderr)
        return 2
    pair = None
    if args.models:
        names = tuple(args.models.split(","))
        known = sorted(prompts[0].outcomes)
        if len(names) != 2 or any(n not in known for n in names):
            print(f"orxaq-grpc: --models must be STRONG,WEAK of {', '.join(known)}", file=sys.stderr)
            return 2
        pair = (names[0], names[1])

    def progress(stage: str, done: int, total: int) -> None:
        if not args.quiet:
            print(f"evaluate: {stage} {done:,} of {total:,} prompts", file=sys.stderr)

    result = evaluate(
        prompts, config, train_share=args.train_share, seed=args.seed, pair=pair, progress=progress
    )
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(as_dict(result), indent=2) + "\n", encoding="utf-8")
    if args.plot is not None:
        plot(result, args.plot)
        print(f"curves drawn in {args.plot}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from orxaq_grpc.application.learning import FILE_NAME, Learner
    from orxaq_grpc.config.load import ConfigError, load_config
    from orxaq_grpc.evaluate.calibrate import calibrate
    from orxaq_grpc.store import SqliteStore, StoreError

    if not 0.0 <= args.strong_share <= 1.0 or args.recent < 1:
        print("orxaq-grpc: --strong-share must be within 0-1 and --recent at least 1", file=sys.stderr)
        return 2
    choice = _config_choice(args.config, "--config")
    if choice is None:
        return 2
    if not args.data_dir.is_dir():
        print(f"orxaq-grpc: no ledger: {args.data_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        config = load_config(choice.directory)
        with SqliteStore(args.data_dir, config.policy.ledger_retention_days) as store:
            learner = Learner(store, config, args.data_dir / FILE_NAME)
            learner.catch_up()  # what the service has learned, and since its last save
            found = calibrate(store, learner.model, config, args.strong_share, args.recent)
    except ConfigError as exc:
        print(f"orxaq-grpc: config refused:\n{exc}", file=sys.stderr)
        return 2
    except (StoreError, ValueError) as exc:
        print(f"orxaq-grpc: {exc}", file=sys.stderr)
        return 1
    print(
        f"{found.router}: sends {found.strong_share:.1%} of the last {found.tasks} tasks to the strong model "
        f"(success model: {found.outcomes} outcomes learned)"
    )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from orxaq_grpc.config.load import ConfigError, load_config

    choice = _config_choice(args.directory, "argument")
    if choice is None:
        return 1
    directory = choice.directory
    if choice.source != "argument":
        print(f"checking {choice.describe()}", file=sys.stderr)
    try:
        config = load_config(directory)
    except ConfigError as exc:
        print(f"{len(exc.problems)} problem(s) in {directory}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    enabled = sum(1 for m in config.models if m.enabled)
    print(
        f"{directory}: ok, version {config.version}: {len(config.models)} models ({enabled} enabled), "
        f"{len(config.lanes)} lanes ({', '.join(config.lanes)})"
    )
    return 0


def _token(args: argparse.Namespace) -> int:
    import secrets

    from orxaq_grpc.config.model import token_digest
    from orxaq_grpc.config.schema import is_identifier

    for flag, value in (("name", args.name), ("--lane", args.lane)):
        if value is not None and not is_identifier(value):
            print(
                f"orxaq-grpc: {flag} {value!r}: lower-case letters, digits and . _ : / - only",
                file=sys.stderr,
            )
            return 2
    token = secrets.token_urlsafe(32)  # 256 random bits
    if args.write is not None:
        try:
            with open(os.open(args.write, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(token + "\n")
        except OSError as exc:
            print(f"orxaq-grpc: cannot write {args.write}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    role = 'role = "operator"' if args.operator else f'role = "lane"\nlane = "{args.lane}"'
    entry = f'[[access.credentials]]\nname = "{args.name}"\n{role}\nsha256 = "{token_digest(token).hex()}"'
    if args.print:
        print(token)
        print(entry, file=sys.stderr)
    else:
        print(entry)
    return 0


def _init(args: argparse.Namespace) -> int:
    from orxaq_grpc.defaults import DefaultsError, write_defaults

    try:
        written = write_defaults(args.target, force=args.force)
    except DefaultsError as exc:
        print(f"orxaq-grpc: init {args.target}: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(
        f"\n{len(written)} files written. Edit them, then: orxaq-grpc check-config {args.target} && "
        f"orxaq-grpc serve --config {args.target}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
