"""`orxaq-grpc`: run the service, ask it for a route, check a config directory."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_CONFIG_DIR = "config"
DEFAULT_DATA_DIR = "data"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"orxaq-grpc: {name}={value!r} is not a whole number") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orxaq-grpc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the routing service")
    serve.add_argument(
        "--address",
        default=os.environ.get("ORXAQ_ADDRESS", DEFAULT_ADDRESS),
        help="host:port to listen on; port 0 picks a free one (env ORXAQ_ADDRESS; default %(default)s)",
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("ORXAQ_CONFIG_DIR", DEFAULT_CONFIG_DIR)),
        help="config directory (env ORXAQ_CONFIG_DIR; default %(default)s)",
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("ORXAQ_DATA_DIR", DEFAULT_DATA_DIR)),
        help="where the ledger lives, created on first start (env ORXAQ_DATA_DIR; default %(default)s)",
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
    serve.add_argument("--log-level", default=os.environ.get("ORXAQ_LOG_LEVEL", "INFO"))

    check = commands.add_parser("check-config", help="validate a config directory; non-zero exit on problems")
    check.add_argument("directory", nargs="?", type=Path, default=Path(DEFAULT_CONFIG_DIR))

    route = commands.add_parser("route", help="ask a running service which model a task should use")
    route.add_argument("--address", default=os.environ.get("ORXAQ_ADDRESS", DEFAULT_ADDRESS))
    route.add_argument("--timeout", type=float, default=10.0, help="seconds before the call gives up")
    route.add_argument("--lane", required=True)
    route.add_argument("--task-id", default="")
    route.add_argument("--kind", default="")
    route.add_argument("--title", default="")
    prompt = route.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="")
    prompt.add_argument("--prompt-file", type=Path, help="read the prompt from a file ('-' for stdin)")
    route.add_argument("--label", action="append", default=[], help="repeatable")
    route.add_argument("--input-tokens", type=int, default=0, help="0 estimates from the text")
    route.add_argument("--output-tokens", type=int, default=0, help="0 uses the policy default")
    route.add_argument("--difficulty", type=float, help="0-100; omitted estimates from the text")
    route.add_argument("--value-usd", type=float, help="what a successful task is worth (not yet used)")
    route.add_argument("--objective", choices=["cost_speed", "balanced", "quality"])
    route.add_argument("--profile", choices=["fast", "strong"])
    route.add_argument("--model", default="", help="requested model")
    route.add_argument("--max-cost", type=float, help="USD, expected cost of this request")
    route.add_argument("--min-quality", type=float, help="0-100")
    route.add_argument("--max-latency", type=float, help="seconds")
    route.add_argument("--capability", action="append", default=[], help="required capability; repeatable")
    route.add_argument("--explain", action="store_true", help="list every candidate and filtered model")
    route.add_argument("--json", action="store_true", help="print the decision as JSON")

    economics = commands.add_parser(
        "economics", help="spend, tokens, cost per 1M and rates from a running service"
    )
    economics.add_argument("--address", default=os.environ.get("ORXAQ_ADDRESS", DEFAULT_ADDRESS))
    economics.add_argument("--timeout", type=float, default=10.0)
    economics.add_argument(
        "--window", choices=["last_hour", "today", "7d", "30d"], default="today", help="default %(default)s"
    )
    economics.add_argument("--json", action="store_true", help="print the whole response as JSON")

    health = commands.add_parser("health", help="detection states, breakers and budgets of a running service")
    health.add_argument("--address", default=os.environ.get("ORXAQ_ADDRESS", DEFAULT_ADDRESS))
    health.add_argument("--timeout", type=float, default=10.0)
    health.add_argument("--json", action="store_true")
    health.add_argument(
        "--watch", action="store_true", help="print a snapshot on every change (Ctrl-C stops)"
    )
    health.add_argument("--heartbeat", type=float, default=0.0, help="--watch: seconds between heartbeats")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "check-config":
        return _check_config(args.directory)
    if args.command == "economics":
        return _economics(args)
    if args.command == "health":
        return _health(args)
    return _route(args)


def _serve(args: argparse.Namespace) -> int:
    from orxaq_grpc.config.load import ConfigError
    from orxaq_grpc.service.server import LOG_FORMAT, serve
    from orxaq_grpc.store import StoreError

    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)

    if args.workers < 1:
        print("orxaq-grpc: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        serve(args.config, args.data_dir, args.address, args.workers, args.grace, args.drain)
    except ConfigError as exc:
        print(f"orxaq-grpc: config refused:\n{exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, StoreError) as exc:
        print(f"orxaq-grpc: {exc}", file=sys.stderr)
        return 1
    return 0


def _route(args: argparse.Namespace) -> int:
    from orxaq.routing.v1 import routing_pb2 as pb
    from orxaq_grpc.client import CallFailed, RoutingClient
    from orxaq_grpc.render import decision_text, to_json

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
        objective=pb.Objective.Value(f"OBJECTIVE_{args.objective.upper()}") if args.objective else 0,
        profile=pb.Profile.Value(f"PROFILE_{args.profile.upper()}") if args.profile else 0,
        requested_model=args.model,
        constraints=constraints,
        explain=args.explain,
    )
    with RoutingClient(args.address, timeout_s=args.timeout) as client:
        try:
            decision = client.route(request)
        except CallFailed as exc:
            print(f"orxaq-grpc: {exc.code.name}: {exc.details}", file=sys.stderr)
            for field, problem in exc.violations:
                print(f"  {field}: {problem}", file=sys.stderr)
            return 2 if exc.violations else 1
    print(to_json(decision) if args.json else decision_text(decision))
    return 0


def _economics(args: argparse.Namespace) -> int:
    from orxaq_grpc.client import CallFailed, RoutingClient
    from orxaq_grpc.render import economics_text, to_json

    with RoutingClient(args.address, timeout_s=args.timeout) as client:
        try:
            response = client.economics()
        except CallFailed as exc:
            print(f"orxaq-grpc: {exc}", file=sys.stderr)
            return 1
    print(to_json(response) if args.json else economics_text(response, args.window))
    return 0


def _health(args: argparse.Namespace) -> int:
    from orxaq_grpc.client import CallFailed, RoutingClient
    from orxaq_grpc.render import health_text, to_json

    show = to_json if args.json else health_text
    with RoutingClient(args.address, timeout_s=args.timeout) as client:
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


def _check_config(directory: Path) -> int:
    from orxaq_grpc.config.load import ConfigError, load_config

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


if __name__ == "__main__":
    sys.exit(main())
