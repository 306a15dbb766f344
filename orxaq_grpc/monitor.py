"""The Routing Monitor: a live terminal view of the service for operators.

Fed by two calls: a `WatchHealth` stream (states, budgets, breakers, stop-loss, the last
decisions; every change comes at once) and `Economics`, asked again each refresh (tokens,
spend, cost per 1M tokens, routing, fallback and error rates by provider and lane). A frame is
plain text; live, it is redrawn in place with ANSI cursor moves on the terminal's alternate
screen, which any terminal over SSH understands. `--once` prints one frame and exits.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, Connection, RoutingClient
from orxaq_grpc.render import enum_word, learning_line, money, share, stop_loss_line, table, when

# Alternate screen and hidden cursor while live; home, then each line cleared to its end.
_ENTER, _LEAVE = "\x1b[?1049h\x1b[?25l", "\x1b[?25h\x1b[?1049l"
_HOME, _CLEAR_LINE, _CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def _window(economics: pb.EconomicsResponse, name: str) -> pb.EconomicsWindow | None:
    return next((w for w in economics.windows if w.window == name), None)


def _per_mtok(usd_per_mtok: float, tokens: int) -> str:
    return f"${usd_per_mtok:.3f}/1M" if tokens else "-"


def frame(
    health: pb.HealthResponse | None,
    economics: pb.EconomicsResponse | None,
    *,
    address: str,
    window: str = "today",
    problem: str = "",
    width: int = 0,
) -> str:
    """One screen of the monitor; `width` > 0 cuts lines to the terminal."""
    lines = [f"orxaq-grpc routing monitor  {address}  {when(time.time())}"]
    if problem:
        lines.append(f"!! {problem}")
    if health is not None:
        lines += _health_lines(health)
    if economics is not None:
        lines += _economics_lines(economics, window, health)
    if health is not None:
        lines += _guardrail_lines(health)
        lines += _recent_lines(health)
    text = "\n".join(lines)
    if width > 0:  # tables are blocks of lines: cut each line, not the block
        text = "\n".join(line[:width] for line in text.splitlines())
    return text


def _health_lines(h: pb.HealthResponse) -> list[str]:
    overall = h.overall
    return [
        f"overall {overall.state.upper()}: {overall.reason}",
        f"config {h.config_version}, up {h.uptime_s:.0f} s, {h.scoring_kernel} kernel, "
        f"routing {'on' if h.routing_enabled else 'OFF'}, pid {h.pid}",
        learning_line(h.learning),
        stop_loss_line(h.guardrails),
    ]


def _economics_lines(
    economics: pb.EconomicsResponse, window_name: str, health: pb.HealthResponse | None
) -> list[str]:
    window = _window(economics, window_name)
    if window is None:
        return ["", f"no economics window {window_name!r}"]
    o = window.overall
    estimated = _per_mtok(o.estimated_usd_per_mtok, o.estimated_tokens)
    blended = _per_mtok(o.blended_usd_per_mtok, o.reported_tokens)
    lines = [
        "",
        f"economics ({window_name}): {o.decisions} decisions, est. tokens {o.estimated_tokens:,}, "
        f"est. spend {money(o.estimated_cost_usd)} ({estimated})",
        f"  reported tokens {o.reported_tokens:,}, spend {money(o.spend_usd)}, blended {blended}, "
        f"fallback {share(o.fallback_rate, o.decisions)}, "
        f"router errors {share(o.router_error_rate, o.decisions)}, errors {share(o.error_rate, o.reports)}",
    ]
    provider_states = {p.name: p.state for p in health.providers} if health else {}
    rows = [
        (
            p.name,
            provider_states.get(p.name, "-"),
            f"{p.figures.decisions / o.decisions:.1%}" if o.decisions else "-",
            share(p.figures.fallback_rate, p.figures.decisions),
            share(p.figures.error_rate, p.figures.reports),
            f"{p.figures.estimated_tokens:,}",
            _per_mtok(p.figures.blended_usd_per_mtok, p.figures.reported_tokens),
            money(p.figures.spend_usd),
        )
        for p in window.providers
    ]
    header = ("provider", "state", "routed", "fallback", "errors", "est. tokens", "$/1M", "spend")
    lines += ["", table(header, rows) if rows else "no provider traffic"]

    lane_states = {lane.lane: lane.state for lane in health.lanes} if health else {}
    budgets = {b.name: b for b in health.budgets if b.scope == "lane"} if health else {}
    lane_rows = []
    for lane in window.lanes:
        f = lane.figures
        budget = budgets.get(lane.name)
        lane_rows.append(
            (
                lane.name,
                lane_states.get(lane.name, "-"),
                f"{f.decisions}",
                share(f.fallback_rate, f.decisions),
                share(f.disruptive_fallback_rate, f.decisions),
                share(f.router_error_rate, f.decisions),
                share(f.error_rate, f.reports),
                money(f.spend_usd),
                f"{budget.used_share:.0%}" if budget else "-",
            )
        )
    lane_header = (
        "lane",
        "state",
        "decisions",
        "fallback",
        "disruptive",
        "router err",
        "errors",
        "spend",
        "budget",
    )
    lines += ["", table(lane_header, lane_rows) if lane_rows else "no lane traffic"]
    return lines


def _guardrail_lines(h: pb.HealthResponse) -> list[str]:
    lines: list[str] = []
    if h.budgets:
        rows = [
            (
                b.scope,
                b.name or "-",
                f"{money(b.spent_usd + b.reserved_usd)} of {money(b.limit_usd)}",
                f"{b.used_share:.0%}"
                + (" WARNING" if b.warning else "")
                + (" EXHAUSTED" if b.exhausted else ""),
            )
            for b in h.budgets
        ]
        lines += ["", table(("budget", "name", "used", "share"), rows)]
    triggers = [
        (
            t.trigger,
            "not judged" if not t.judged else "HOLDING" if t.holding else "clear" if t.clear else "near",
            f"{t.figure:.3f}" if t.judged else "-",
            f"{t.threshold:.3f}",
        )
        for t in h.guardrails.triggers
    ]
    if triggers:
        lines += ["", table(("guardrail", "reading", "figure", "threshold"), triggers)]
    tripped = [b for b in h.breakers if b.state != "closed"]
    if tripped:
        rows = [(b.scope, b.name, b.state, b.reason) for b in tripped]
        lines += ["", table(("breaker", "name", "state", "why"), rows)]
    return lines


def _recent_lines(h: pb.HealthResponse) -> list[str]:
    if not h.recent_decisions:
        return ["", "no decisions yet"]
    rows = [
        (
            time.strftime("%H:%M:%S", time.gmtime(d.at_unix)),
            d.lane,
            d.model or "(refused)",
            enum_word(pb.Strategy, d.strategy) if d.model else "-",
            enum_word(pb.FallbackReason, d.fallback_reason),
            money(d.estimated_cost_usd),
            f"{d.estimated_tokens:,}",
        )
        for d in h.recent_decisions
    ]
    return ["", table(("last decisions", "lane", "model", "strategy", "fallback", "est. $", "tokens"), rows)]


class _Feed:
    """The newest WatchHealth snapshot, kept by a thread that reconnects when the stream ends."""

    def __init__(self, client: RoutingClient, retry_s: float) -> None:
        self.latest: pb.HealthResponse | None = None
        self.problem = ""
        self._client = client
        self._retry_s = retry_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="watch-health", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stopped.is_set():
            try:
                # The service's default heartbeat: changes come at once whatever it is.
                for snapshot in self._client.watch_health():
                    self.latest, self.problem = snapshot, ""
            except CallFailed as exc:
                self.problem = f"WatchHealth: {exc}"
            self._stopped.wait(self._retry_s)

    def stop(self) -> None:
        self._stopped.set()


def run(
    service: str | Connection, *, refresh_s: float, window: str, once: bool, out: TextIO = sys.stdout
) -> int:
    """Shows the monitor until Ctrl-C (live) or prints one frame (`once`); 1 if the service cannot be read."""
    economics: pb.EconomicsResponse | None  # None in a live frame when the call failed
    connection = service if isinstance(service, Connection) else Connection(service)
    address = connection.address
    with RoutingClient(connection, timeout_s=max(5.0, refresh_s)) as client:
        if once:
            try:
                health, economics = client.health(), client.economics()
            except CallFailed as exc:
                print(f"orxaq-grpc: {exc}", file=sys.stderr)
                return 1
            print(frame(health, economics, address=address, window=window), file=out)
            return 0
        feed = _Feed(client, retry_s=refresh_s)
        try:
            with _screen(out) as draw:
                while True:
                    economics, problem = None, feed.problem
                    try:
                        economics = client.economics()
                    except CallFailed as exc:
                        problem = f"Economics: {exc}"
                    width = shutil.get_terminal_size().columns if out.isatty() else 0
                    draw(
                        frame(
                            feed.latest,
                            economics,
                            address=address,
                            window=window,
                            problem=problem,
                            width=width,
                        )
                    )
                    time.sleep(refresh_s)
        except KeyboardInterrupt:
            return 0
        finally:
            feed.stop()  # closing the client below ends its stream


@contextlib.contextmanager
def _screen(out: TextIO) -> Iterator[Callable[[str], None]]:
    """Redraws in place on a terminal (restored on the way out, Ctrl-C included); elsewhere
    each frame is printed after the last, for logs and pipes."""
    live = out.isatty()

    def draw(text: str) -> None:
        if live:
            out.write(_HOME + text.replace("\n", _CLEAR_LINE + "\n") + _CLEAR_LINE + _CLEAR_BELOW)
        else:
            out.write(text + "\n\n")
        out.flush()

    if live:
        out.write(_ENTER)
    try:
        yield draw
    finally:
        if live:
            out.write(_LEAVE)
            out.flush()
