"""What open Routing Monitor pages cost routing: Route's server CPU per call with none, and with ten.

The routing server is the production one (`server.py --serve asyncio`, a subprocess). The web page
is served by its companion, `orxaq-grpc web`, another process, which holds one WatchHealth stream
to the service and asks Economics every `--refresh-s` seconds (here 1 s, five times its default:
the harder case) whatever the number of pages. A "page" here is what a browser tab costs the
companion and, through it, the service: it fetches the page and its scripts once, then keeps the
server-sent-events stream open and reads every snapshot. The routing server's CPU per Route call
is read from /proc (utime + stime of all its threads) around each cell.

Each round starts a fresh routing server and runs three cells of Route calls, in alternating
order: no companion at all; the companion with ten pages open; none again. The two "none" cells
show the round's own noise; the bar is that ten pages stay within it.

    .venv/bin/python benchmarks/web_pages.py
    .venv/bin/python benchmarks/web_pages.py --quick
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cells import Cell, checked_decision, connect, drive, measure, pooled, server_process

SERVER_SCRIPT = str(Path(__file__).resolve().parent / "server.py")
CLI = [str(Path(sys.executable).with_name("orxaq-grpc"))]  # the venv's console script
PAGES = 10
REFRESH_S = 1.0
ASSETS = ("/", "/static/app.js", "/static/style.css")
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def companion(service_port: int) -> Iterator[int]:
    """`orxaq-grpc web` against the service; yields its HTTP port once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [
            *CLI,
            "web",
            "--address",
            f"127.0.0.1:{service_port}",
            "--listen",
            f"127.0.0.1:{port}",
            "--refresh-s",
            str(REFRESH_S),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if _get(port, "/api/snapshot") == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"orxaq-grpc web did not start: {process.stderr.read() if process.stderr else ''}"
                )
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class Page:
    """One open tab: the page and its scripts fetched, then the event stream read as it comes."""

    def __init__(self, port: int) -> None:
        for path in ASSETS:
            status = _get(port, path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")
        self.snapshots = 0
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._connection.request("GET", "/events", headers={"Accept": "text/event-stream"})
        self._response = self._connection.getresponse()
        if self._response.status != 200:
            raise RuntimeError(f"GET /events answered {self._response.status}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response:
                if line.startswith(b"event: snapshot"):
                    self.snapshots += 1
        except (OSError, ValueError, http.client.HTTPException):
            pass  # ended by close(): an incomplete chunk, or the socket gone

    def close(self) -> None:
        """Ends the stream as a closed tab does: the reader sees the end, then the socket goes."""
        if self._connection.sock is not None:
            self._connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self._connection.close()


@contextmanager
def open_pages(service_port: int, count: int) -> Iterator[list[Page]]:
    with companion(service_port) as port:
        pages = [Page(port) for _ in range(count)]
        try:
            yield pages
        finally:
            for page in pages:
                page.close()


def _round(
    index: int, pool: ThreadPoolExecutor, calls: int, warmup: int, concurrency: int
) -> dict[str, Cell]:
    with ExitStack() as stack:
        pid, port = stack.enter_context(server_process(SERVER_SCRIPT, "--serve", "asyncio"))
        server = connect(stack, "asyncio", pid, port)
        checked_decision(server)
        drive(pool, server.calls["Route"], warmup, concurrency)
        cells: dict[str, Cell] = {}
        order = ["none", "ten pages", "none again"]
        for name in order[::-1] if index % 2 else order:
            if name == "ten pages":
                with open_pages(port, PAGES) as pages:
                    time.sleep(2 * REFRESH_S)  # every page has its first snapshots
                    cells[name] = measure(server, "Route", pool, calls, concurrency)
                    seen = min(page.snapshots for page in pages)
                    if seen < 2:
                        raise RuntimeError(f"a page saw {seen} snapshots in the cell: the stream is not live")
            else:
                cells[name] = measure(server, "Route", pool, calls, concurrency)
        return cells


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, default=4000, help="Route calls per cell per round (default %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=6, help="rounds, each on a fresh server (default %(default)s)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="1,000 calls a cell over 3 rounds: a smoke run")
    args = parser.parse_args()
    rounds, calls = (3, 1000) if args.quick else (args.rounds, args.calls)

    results: dict[str, list[Cell]] = {}
    with ThreadPoolExecutor(args.concurrency, thread_name_prefix="client") as pool:
        for index in range(rounds):
            for name, cell in _round(index, pool, calls, 400, args.concurrency).items():
                results.setdefault(name, []).append(cell)
            print(
                f"round {index + 1}/{rounds}: "
                + ", ".join(f"{name} {cells[-1].server_us:.0f} µs" for name, cells in results.items()),
                flush=True,
            )

    none = pooled(results["none"] + results["none again"])
    pages = pooled(results["ten pages"])
    noise = [a.server_us / b.server_us for a, b in zip(results["none"], results["none again"], strict=True)]
    effect = [
        p.server_us / ((a.server_us + b.server_us) / 2)
        for p, a, b in zip(results["ten pages"], results["none"], results["none again"], strict=True)
    ]
    print(
        f"\n{calls} Route calls a cell, {rounds} rounds of fresh servers, {args.concurrency} in flight, "
        f"{os.cpu_count()} CPUs; the companion refreshes Economics every {REFRESH_S:g} s"
    )
    print(f"Route server CPU per call: no page {none.server_us:.0f} µs, ten pages {pages.server_us:.0f} µs")
    ratio = pages.server_us / none.server_us
    print(f"ten pages / no page: {ratio:.3f}x (rounds {min(effect):.3f}-{max(effect):.3f}x)")
    spread = max(abs(r - 1) for r in noise)
    print(f"noise, no page / no page again in the same round: {min(noise):.3f}-{max(noise):.3f}x")
    within = abs(ratio - 1) <= spread
    print(f"Bar: ten open pages within the noise ({spread:.1%}): {'met' if within else 'NOT met'}")


if __name__ == "__main__":
    main()
