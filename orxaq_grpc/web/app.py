"""`orxaq-grpc web`: the Routing Monitor as a web page, served by a companion process.

The companion is a client of the routing service (one WatchHealth stream, one Economics poll: see
feed.py) and an HTTP server for the operators' browsers: the page and its static files, the latest
snapshot (`/api/snapshot`), each new one as server-sent events (`/events`), and the operator actions
(`POST /api/...`, controls.py).

Operators' tokens pass through it, so it listens on loopback unless told `--insecure`. There it
answers only requests addressed to a loopback name (a site in the operator's browser cannot reach it
through a DNS name of its own pointed here), and operator actions only from its own page: JSON bodies,
which another site cannot send without the browser asking first, and no foreign Origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from orxaq_grpc.access.addresses import is_loopback
from orxaq_grpc.client import Connection
from orxaq_grpc.web import rpc
from orxaq_grpc.web.controls import CONTROLS, Answer, Control, forward, parse_body, refused
from orxaq_grpc.web.feed import Feed

KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies and the browser from closing an idle stream
RECONNECT_MS = 2000  # what the browser waits before opening /events again
STATIC = resources.files("orxaq_grpc.web") / "static"
# The page loads only its own files and talks only to this companion; a token in it stays there.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_log = logging.getLogger(__name__)


class ListenRefused(Exception):
    """Listening beyond loopback without --insecure, or an address that is not HOST:PORT."""


def listen_address(listen: str, insecure: bool) -> tuple[str | None, int]:
    """(host, port) of HOST:PORT (IPv6 in brackets; no host: every interface, None); beyond loopback
    only when `insecure`."""
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ListenRefused(f"--listen {listen!r} is not HOST:PORT")
    if not insecure and not is_loopback(listen):
        raise ListenRefused(
            f"--listen {listen}: operator tokens pass through this page, so it listens on loopback "
            "(127.0.0.1, ::1, localhost) unless --insecure says otherwise; reach it from elsewhere "
            "through an SSH tunnel (ssh -L 8089:127.0.0.1:8089 host)"
        )
    return host.strip("[]") or None, int(port)


def create_app(feed: Feed, stub: rpc.ServiceStub, *, loopback_only: bool, plaintext: bool) -> web.Application:
    """`loopback_only`: answer only requests addressed to a loopback name. `plaintext`: the service
    is reached without TLS beyond loopback, so an operator's token is not forwarded there."""
    app = web.Application(middlewares=[_guard(loopback_only)])
    app.on_response_prepare.append(_secure_headers)
    app.router.add_get("/", _file("index.html"))
    app.router.add_get("/runbook", _file("runbook.html"))
    app.router.add_static("/static", str(STATIC))

    async def snapshot(_: web.Request) -> web.Response:
        return web.Response(text=feed.payload, content_type="application/json")

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(f"retry: {RECONNECT_MS}\n\n".encode())
        with feed.subscribe() as page:
            while True:
                try:
                    payload = await asyncio.wait_for(page.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if payload is None:  # the companion is stopping
                    break
                await response.write(f"event: snapshot\ndata: {payload}\n\n".encode())
        return response

    def action(control: Control) -> Handler:
        async def act(request: web.Request) -> web.Response:
            answer = await _act(request, control, stub, plaintext)
            if answer.body["ok"]:
                await feed.refresh_health()  # every page shows the new state at once
            return web.json_response(answer.body, status=answer.status)

        return act

    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/events", events)
    for path, control in CONTROLS.items():
        app.router.add_post(f"/api/{path}", action(control))
    return app


async def _act(request: web.Request, control: Control, stub: rpc.ServiceStub, plaintext: bool) -> Answer:
    if request.content_type != "application/json":
        return refused(415, "INVALID_ARGUMENT", "send the action as application/json")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme and (scheme.lower() != "bearer" or not token.strip()):
        return refused(401, "UNAUTHENTICATED", "Authorization must be `Bearer <operator token>`")
    if token and plaintext:
        return refused(
            403,
            "PERMISSION_DENIED",
            "the companion reaches the service without TLS beyond loopback: it will not forward a token "
            "in plaintext (start it with --tls or --tls-ca)",
        )
    body = parse_body(await request.read(), control.fields)
    if isinstance(body, Answer):
        return body
    # The page's credential for this call alone; without one, the service decides whether it may.
    return await forward(control, stub, body, rpc.bearer(token.strip() or None))


def _file(name: str) -> Handler:
    async def serve(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(str(STATIC / name))

    return serve


def _guard(loopback_only: bool) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback_only and not _loopback_host(request.host):
            raise web.HTTPMisdirectedRequest(text="this companion answers requests to a loopback name only")
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text="operator actions come from the companion's own page")
        return await handler(request)

    return guard


def _loopback_host(host: str) -> bool:
    """Whether a Host header (HOST or HOST:PORT, IPv6 in brackets) names this machine."""
    has_port = ":" in host and not host.endswith("]")
    return is_loopback(host if has_port else f"{host}:0")


async def _secure_headers(_: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def run(connection: Connection, listen: str, refresh_s: float, insecure: bool) -> int:
    """Serves the page until SIGINT or SIGTERM; raises ListenRefused before anything starts."""
    host, port = listen_address(listen, insecure)
    return asyncio.run(_serve(connection, host, port, refresh_s, loopback_only=not insecure))


async def _serve(
    connection: Connection, host: str | None, port: int, refresh_s: float, loopback_only: bool
) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    channel = connection.aio_channel()
    stub = rpc.stub(channel)
    feed = Feed(stub, connection.metadata(), connection.address, refresh_s)
    plaintext = not connection.secure and not is_loopback(connection.address)
    app = create_app(feed, stub, loopback_only=loopback_only, plaintext=plaintext)
    # A page that closes cancels its /events handler at once, which unsubscribes it.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0)
    await runner.setup()
    following = asyncio.create_task(feed.run())
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            _log.error("cannot listen on %s:%d: %s", host or "*", port, exc.strerror or exc)
            return 1
        for address in runner.addresses:
            shown = f"[{address[0]}]" if ":" in address[0] else address[0]
            _log.info("the Routing Monitor of %s on http://%s:%d/", connection.address, shown, address[1])
        await stopping.wait()
        return 0
    finally:
        feed.close()
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await runner.cleanup()
        await channel.close()
