"""Screenshots of the web monitor (`orxaq-grpc web`) on realistic traffic, at laptop and phone size.

Starts a routing service on loopback with a temporary config and ledger (daily budgets set), drives
traffic through four lanes (reports with failures, a rate limit that opens a breaker, Scale questions,
operator actions), starts the web companion, and saves full-height PNGs of the page and the runbook
with headless Chromium (Debian's chromium and chromedriver, as tests/test_web.py uses them).

    .venv/bin/python tools/web_screenshots.py [--out screenshots]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from orxaq.routing.v1 import routing_pb2 as pb
from orxaq_grpc.client import CallFailed, RoutingClient

CLI = [sys.executable, "-m", "orxaq_grpc.cli"]
SIZES = {"laptop": (1440, 900), "phone": (390, 844)}
START_S = 60.0
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TITLES = [
    ("fix", "Fix the flaky integration test"),
    ("docs", "Document the retry policy"),
    ("architecture", "Split the billing service"),
    ("test", "Add property tests for the parser"),
    ("refactor", "Extract the cache layer"),
    ("security", "Review the token handling for a security hole"),
]


def say(text: str) -> None:
    print(f"web-screenshots: {text}", flush=True)


def started(args: list[str], log: Path, pattern: str) -> tuple[subprocess.Popen[bytes], re.Match[str]]:
    """Starts a CLI command, its log in `log`, and waits for the line that says it is ready."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CLI, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if match := re.search(pattern, log.read_text(errors="replace")):
            return process, match
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop(process)
    raise SystemExit(
        f"web-screenshots: {' '.join(args[:1])} did not start:\n{log.read_text(errors='replace')}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def config_with_budgets(root: Path) -> Path:
    """The packaged config, with daily budgets so the page has some in use."""
    config = root / "config"
    subprocess.run([*CLI, "init", str(config)], check=True, capture_output=True)
    policy = config / "policy.toml"
    text = policy.read_text()
    for old, new in (
        ("daily_usd = 0\n", "daily_usd = 6.0\n"),
        ("lanes = {}\n", "lanes = { codex = 1.2, claude = 2.5 }\n"),
        ("providers = {}\n", "providers = { google = 1.0 }\n"),
    ):
        if old not in text:
            raise SystemExit(f"web-screenshots: {policy} has no {old.strip()!r} to change")
        text = text.replace(old, new, 1)
    policy.write_text(text)
    return config


def drive(client: RoutingClient) -> None:
    """Some hours' worth of a small fleet, compressed: every lane, good and bad outcomes."""
    rate_limited = False
    for i in range(48):
        lane = ("codex", "claude", "gemini", "local")[i % 4]
        kind, title = TITLES[i % len(TITLES)]
        task = pb.Task(id=f"T-{100 + i}", kind=kind, title=title, input_tokens=4_000 + 900 * (i % 7))
        if i % 5 == 0:
            task.value_usd = 40.0
        try:
            decision = client.route(pb.RouteRequest(lane=lane, task=task))
        except CallFailed as exc:
            say(f"route {lane}: {exc}")
            continue
        report = pb.ReportRequest(
            decision_id=decision.decision_id,
            lane=lane,
            provider=decision.provider,
            model=decision.model,
            input_tokens=task.input_tokens + 300 * (i % 3),
            output_tokens=1_200 + 150 * (i % 5),
            latency_s=20.0 + i % 9,
            outcome=pb.OUTCOME_SUCCESS,
            validation_passed=i % 6 != 0,
            first_time_pass=i % 4 != 0,
        )
        if i % 11 == 3:
            report.outcome, report.validation_passed, report.first_time_pass = (
                pb.OUTCOME_TIMEOUT,
                False,
                False,
            )
        if lane == "gemini" and not rate_limited:  # one rate limit opens the model's breaker at once
            report.outcome, report.retry_after_s = pb.OUTCOME_RATE_LIMITED, 600.0
            report.validation_passed = report.first_time_pass = False
            rate_limited = True
        if i % 9 != 8:  # a few stay unreported: their estimates stay reserved
            client.report(report)
    for to, value in ((3, 100.0), (9, 5.0)):
        client.scale(
            pb.ScaleRequest(
                lane="codex",
                current_parallel_agents=2,
                requested_parallel_agents=to,
                value=pb.Flows(daily=pb.DailyFlow(usd_per_day=value, horizon_days=7)),
                cost=pb.Flows(daily=pb.DailyFlow(usd_per_day=30.0, horizon_days=7)),
                request_id=f"supervisor-{to}",
            )
        )


def operate(client: RoutingClient) -> None:
    """Operator actions for the ledger's list; the newer RPCs are skipped where the service lacks them."""
    client.set_stop_loss(True, note="provider incident INC-2231")
    client.set_stop_loss(False, note="provider back, INC-2231 closed")
    for name, action in (
        ("reload", lambda: client.reload_config(note="raised the codex budget")),
        ("pause", lambda: client.pause_lane("local", True, note="GPU host maintenance")),
    ):
        try:
            action()
        except CallFailed as exc:
            say(f"{name}: {exc.code.name} (the service does not offer it yet)")


@contextlib.contextmanager
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: webdriver.Chrome, url: str, size: tuple[int, int], out: Path, wait_for_data: bool) -> None:
    """The page at `size` (CSS pixels), its full height in one PNG."""
    width, height = size
    phone = width < 700
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 2 if phone else 1, "mobile": phone},
    )
    driver.get(url)
    if wait_for_data:
        WebDriverWait(driver, 30).until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, '[data-figure="health.config_version"]')
                and d.find_elements(By.CSS_SELECTOR, "#chart-spend canvas")
            )
        )
        time.sleep(1.0)  # the charts' first resize
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    content = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": content["height"], "scale": 1},
        },
    )
    out.write_bytes(base64.b64decode(shot["data"]))
    say(f"{out} ({width}x{int(content['height'])} CSS px)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("screenshots"), help="where the PNGs go (default %(default)s)"
    )
    args = parser.parse_args()
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            raise SystemExit(
                f"web-screenshots: {binary} is missing (apt-get install chromium chromium-driver)"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orxaq-web-") as scratch:
        root = Path(scratch)
        config = config_with_budgets(root)
        say("starting the routing service")
        service, match = started(
            ["serve", "--config", str(config), "--data-dir", str(root / "data"), "--address", "127.0.0.1:0"],
            root / "serve.log",
            r"serving \S+ on (127\.0\.0\.1:\d+)",
        )
        try:
            address = match.group(1)
            with RoutingClient(address) as client:
                say(f"driving traffic at {address}")
                drive(client)
                operate(client)
            say("starting the web companion")
            web, found = started(
                ["web", "--address", address, "--listen", "127.0.0.1:0", "--refresh-s", "1"],
                root / "web.log",
                r"on (http://127\.0\.0\.1:\d+/)",
            )
            try:
                url = found.group(1)
                with browser() as driver:
                    for name, size in SIZES.items():
                        shoot(driver, url, size, args.out / f"monitor-{name}.png", wait_for_data=True)
                    shoot(driver, url + "runbook", SIZES["phone"], args.out / "runbook-phone.png", False)
            finally:
                stop(web)
        finally:
            stop(service)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
