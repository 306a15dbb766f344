"""The web monitor in a real browser (headless Chromium through Selenium), served by a real companion
process from a real routing service: the figures on the page are the RPCs' own, new traffic shows
without a reload, and the operator controls act with the operator's token and show the refusal
without it."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from orxaq.routing.v1 import routing_pb2 as pb
from tests.test_web_api import LANE_TOKEN, OPERATOR_TOKEN, Served, report_for, serving, traffic, wait_until

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if missing := [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]:  # .ci/run installs both
    pytest.skip(
        f"no {' and '.join(missing)}: apt-get install chromium chromium-driver", allow_module_level=True
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("web-page")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, served: Served) -> WebDriver:
    """The monitor, opened afresh, once it shows live data."""
    browser.get(served.companion.url + "/")
    wait_until(lambda: shown(browser, "health.config_version"), "the page to show the service")
    return browser


FIGURES = """
const found = {};
for (const e of document.querySelectorAll("[data-figure]")) {
  if (!(e.dataset.figure in found)) found[e.dataset.figure] = e.dataset.value;
}
return found;
"""


def figures_on(driver: WebDriver) -> dict[str, str]:
    """Every figure on the page, key to raw value (data-value), read at one moment."""
    found: dict[str, str] = driver.execute_script(FIGURES)
    return found


def shown(driver: WebDriver, key: str) -> str | None:
    return figures_on(driver).get(key)


def page_equals(driver: WebDriver, expected: dict[str, object]) -> dict[str, tuple[str | None, str]]:
    """Each key whose value on the page is not the expected one: (on the page, expected)."""
    on_page = figures_on(driver)
    wrong = {}
    for key, value in expected.items():
        found = on_page.get(key)
        if isinstance(value, bool):
            if found != str(value).lower():
                wrong[key] = (found, str(value).lower())
        elif isinstance(value, int | float):
            if found is None or float(found) != float(value):
                wrong[key] = (found, repr(value))
        elif found != value:
            wrong[key] = (found, str(value))
    return wrong


def wait_for_page(driver: WebDriver, expected: dict[str, object]) -> None:
    """Waits until every figure on the page is the expected one; fails naming those that are not."""
    try:
        wait_until(lambda: not page_equals(driver, expected), "the page to show the RPCs' figures")
    except AssertionError:
        wrong = page_equals(driver, expected)
        pytest.fail(f"figures on the page differ from the RPCs' (on the page, expected): {wrong}")


def figures_of(served: Served, window: str = "today") -> dict[str, object]:
    """What the page must show, keyed as it keys its figures, from Economics and Health now."""
    with served.client() as client:
        economics, health = client.economics(), client.health()
    expected: dict[str, object] = {
        "health.config_version": health.config_version,
        "health.overall.state": health.overall.state,
        "health.overall.decisions": health.overall.decisions,
        "guardrails.stop_loss_active": health.guardrails.stop_loss_active,
    }
    for lane in health.lanes:
        expected[f"health.lanes.{lane.lane}.state"] = lane.state
        expected[f"health.lanes.{lane.lane}.paused"] = lane.paused
    for provider in health.providers:
        expected[f"health.providers.{provider.name}.state"] = provider.state
        expected[f"health.providers.{provider.name}.decisions"] = provider.decisions
    for budget in health.budgets:
        key = f"health.budgets.{budget.scope}.{budget.name or '_'}"
        expected[f"{key}.used_share"] = budget.used_share
        expected[f"{key}.limit_usd"] = budget.limit_usd
    w = next(w for w in economics.windows if w.window == window)
    base = f"economics.{window}"
    for field in ("decisions", "estimated_tokens", "reported_tokens", "spend_usd", "blended_usd_per_mtok"):
        expected[f"{base}.overall.{field}"] = getattr(w.overall, field)
    for group in ("providers", "lanes", "models"):
        for named in getattr(w, group):
            for field in ("decisions", "spend_usd", "blended_usd_per_mtok"):
                expected[f"{base}.{group}.{named.name}.{field}"] = getattr(named.figures, field)
    for named in w.providers:
        expected[f"{base}.providers.{named.name}.decisions_share"] = (
            named.figures.decisions / w.overall.decisions
        )
    return expected


def test_the_figures_on_the_page_are_the_rpcs(page: WebDriver, served: Served) -> None:
    with served.client() as client:
        traffic(client)
    expected = figures_of(served)
    assert any(key.startswith("health.budgets.lane.codex") for key in expected)  # budgets in use are compared
    wait_for_page(page, expected)
    assert page.find_element(By.ID, "live").get_attribute("data-live") == "live"
    # The formatted text follows the page's rules.
    text, value = page.execute_script(
        "const e = document.querySelector('[data-figure=\"economics.today.overall.spend_usd\"]');"
        "return [e.textContent, e.dataset.value];"
    )
    assert text == f"${float(value):.4f}"

    Select(page.find_element(By.ID, "window")).select_by_value("last_hour")
    wait_for_page(page, figures_of(served, "last_hour"))


def test_new_traffic_shows_without_a_reload(page: WebDriver, served: Served) -> None:
    page.execute_script("window.__sameDocument = true")
    with served.client() as client:
        (decision,) = traffic(client, ("claude",))
    key = f"health.recent_decisions.{decision.decision_id}.model"
    wait_until(lambda: shown(page, key), "the new decision to appear")
    assert shown(page, key) == decision.model
    wait_for_page(page, figures_of(served))
    assert page.execute_script("return window.__sameDocument === true"), "the page was reloaded"


def click(page: WebDriver, selector: str) -> None:
    """Clicks the element, found again if a new snapshot replaced it in between."""

    def clicked() -> bool:
        try:
            page.find_element(By.CSS_SELECTOR, selector).click()
        except StaleElementReferenceException:
            return False
        return True

    wait_until(clicked, f"a click on {selector}")


def press(page: WebDriver, selector: str, token: str, note: str) -> tuple[str, str, str]:
    """Types the token and the note, presses the button, and reads the message it leads to:
    (outcome, code, text)."""
    for field, text in (("token", token), ("note", note)):
        box = page.find_element(By.ID, field)
        box.clear()
        if text:
            box.send_keys(text)
    message = page.find_element(By.ID, "message")
    page.execute_script("arguments[0].dataset.outcome = ''; arguments[0].textContent = ''", message)
    click(page, selector)
    wait_until(lambda: message.get_attribute("data-outcome"), "the action's answer")
    return message.get_attribute("data-outcome") or "", message.get_attribute("data-code") or "", message.text


def stop_loss_active(served: Served) -> bool:
    with served.client() as client:
        return client.health().guardrails.stop_loss_active


def test_the_operator_enters_and_ends_stop_loss_from_the_page(page: WebDriver, served: Served) -> None:
    outcome, code, text = press(page, "#enter-stop-loss", OPERATOR_TOKEN, "page: provider incident")
    assert (outcome, code) == ("ok", "OK"), text
    assert stop_loss_active(served)
    wait_for_page(
        page,
        {"guardrails.stop_loss_active": True, "health.operator_actions.0.note": "page: provider incident"},
    )
    # The token stays in this tab's session storage, nowhere else.
    assert page.execute_script("return sessionStorage.getItem('orxaq.operatorToken')") == OPERATOR_TOKEN
    assert not page.get_cookies()
    assert OPERATOR_TOKEN not in urllib.parse.unquote(page.current_url)

    outcome, code, text = press(page, "#exit-stop-loss", OPERATOR_TOKEN, "page: resolved")
    assert outcome == "ok", text
    assert not stop_loss_active(served)
    wait_for_page(
        page, {"guardrails.stop_loss_active": False, "health.operator_actions.0.action": "stop_loss_exit"}
    )


@pytest.mark.parametrize(("token", "code"), [("", "UNAUTHENTICATED"), (LANE_TOKEN, "PERMISSION_DENIED")])
def test_the_same_control_without_the_operator_token_shows_the_refusal(
    page: WebDriver, served: Served, token: str, code: str
) -> None:
    outcome, shown_code, text = press(page, "#enter-stop-loss", token, "page: should be refused")
    assert (outcome, shown_code) == ("refused", code), text
    assert f"refused: {code}" in text
    assert not stop_loss_active(served)
    assert shown(page, "guardrails.stop_loss_active") == "false"


def test_a_note_is_asked_for_before_anything_is_sent(page: WebDriver, served: Served) -> None:
    outcome, _, text = press(page, "#enter-stop-loss", OPERATOR_TOKEN, "")
    assert outcome == "error" and "note" in text
    assert not stop_loss_active(served)


def test_lanes_pause_and_resume_from_their_row(page: WebDriver, served: Served) -> None:
    for paused in (True, False):
        button = f'button[data-action="pause-lane"][data-lane="local"][data-paused="{str(paused).lower()}"]'
        outcome, _, text = press(page, button, OPERATOR_TOKEN, "page: lane maintenance")
        assert outcome == "ok", text
        with served.client() as client:
            assert next(lane for lane in client.health().lanes if lane.lane == "local").paused is paused
        wait_for_page(page, {"health.lanes.local.paused": paused})


# Every runbook entry the page's badges can lead to, whatever state the service is in.
RUNBOOK_ENTRIES = (
    "state-healthy",
    "state-idle",
    "state-elevated_fallback",
    "state-degraded",
    "stop-loss",
    "stop-loss-operator-only",
    "breaker-open",
    "breaker-half_open",
    "budget-warning",
    "budget-exhausted",
    "lane-paused",
    "lane-disabled",
    "routing-off",
    "shared-away",
    "ledger-behind",
    "service-unreachable",
)


def test_every_state_badge_leads_to_its_runbook_entry(page: WebDriver, served: Served) -> None:
    with served.client() as client:  # an open breaker adds its badge
        decision = client.route(pb.RouteRequest(lane="gemini", task=pb.Task(title="Rate limited")))
        client.report(report_for(decision, outcome=pb.OUTCOME_RATE_LIMITED, retry_after_s=600.0))
    wait_until(lambda: shown(page, f"health.breakers.model.{decision.model}.state"), "the open breaker")
    hrefs = page.execute_script('return [...document.querySelectorAll("a.badge")].map((a) => a.href)')
    anchors = {urllib.parse.urlsplit(href).fragment for href in hrefs}
    assert {"state-healthy", "stop-loss", "breaker-open"} <= anchors <= set(RUNBOOK_ENTRIES)
    page.get(served.companion.url + "/runbook")
    assert not [entry for entry in RUNBOOK_ENTRIES if not page.find_elements(By.ID, entry)]
