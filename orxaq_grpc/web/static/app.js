// The Routing Monitor page: renders each snapshot the companion sends over /events (Health and
// Economics as the RPCs answer them, in their proto JSON form) and forwards the operator actions.
//
// Format rules (the text shown; every figure's raw value is in its data-value attribute, unformatted):
//   money              "$" and 4 decimals: $0.1234, -$0.1234
//   cost per 1M tokens "$" and 3 decimals with "/1M": $2.460/1M; "-" when no tokens stand behind it
//   rates and shares   percent with 1 decimal: 12.5%; "-" when there is nothing to divide by (a decision
//                      rate without decisions, a report rate without reports)
//   counts and tokens  whole numbers grouped by thousands: 12,345
//   seconds            whole seconds: 42 s
//   times              UTC: HH:MM:SS in tables, YYYY-MM-DD HH:MM:SS UTC in the header
//   words              enums without their prefix, lower case (STRATEGY_STATIC_FALLBACK: static_fallback)
// Every element showing a figure has data-figure="<key>" (stable keys, e.g.
// economics.today.providers.openai.blended_usd_per_mtok, health.lanes.codex.state); a budget without a
// name (the overall one) is keyed "_": health.budgets.overall._.used_share.
"use strict";

const RUNBOOK = "/runbook";
const LEDGER_BEHIND = 1000; // writes waiting for a group commit: normally a handful
const TOKEN_KEY = "orxaq.operatorToken"; // sessionStorage only: gone with the tab
const RESULTS_KEPT = 6;

const view = { snapshot: null, window: "today", charts: {} };
const $ = (id) => document.getElementById(id);

// ---- formatting ----------------------------------------------------------------------------------

const num = (v) => Number(v ?? 0);
const money = (v) => (num(v) < 0 ? "-$" : "$") + Math.abs(num(v)).toFixed(4);
const perMtok = (v, tokens) => (num(tokens) ? "$" + num(v).toFixed(3) + "/1M" : "-");
const rate = (v, of) => (num(of) ? (100 * num(v)).toFixed(1) + "%" : "-");
const count = (v) => num(v).toLocaleString("en-US", { maximumFractionDigits: 0 });
const seconds = (v) => Math.round(num(v)).toLocaleString("en-US") + " s";

function clock(unix) {
  return unix ? new Date(num(unix) * 1000).toISOString().slice(11, 19) : "-";
}

function stamp(unix) {
  return unix ? new Date(num(unix) * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "-";
}

// "STRATEGY_STATIC_FALLBACK" -> "static_fallback"; a value without the prefix stays as it is.
function word(value, prefix) {
  const text = String(value ?? "");
  return (text.startsWith(prefix) ? text.slice(prefix.length) : text).toLowerCase();
}

// ---- DOM helpers -----------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A figure: its formatted text, its stable key and its raw value.
function fig(key, raw, text) {
  return el("span", { "data-figure": key, "data-value": String(raw ?? ""), text: text ?? String(raw ?? "") });
}

function cell(content, numeric) {
  return el("td", numeric ? { class: "num" } : {}, content);
}

function row(...cells) {
  return el("tr", {}, ...cells);
}

// A row's long text (a reason, a detail) on a line of its own under it, the table's full width.
function withDetail(main, columns, ...content) {
  if (!content.some((c) => c !== "" && c !== null && c !== undefined)) return [main];
  main.classList.add("has-detail");
  // The div stays in view (sticky, at most the screen's width) when a wide table scrolls sideways.
  return [main, el("tr", { class: "detail" }, el("td", { colspan: columns }, el("div", {}, ...content)))];
}

// Rows that did not change are kept as they are: a button being pressed is not swapped under the pointer.
function fill(tbody, rows, columns, empty) {
  const shown = rows.flat();
  if (!shown.length) shown.push(row(el("td", { colspan: columns, class: "none", text: empty })));
  if (tbody.innerHTML !== shown.map((r) => r.outerHTML).join("")) tbody.replaceChildren(...shown);
}

// A coloured state that links to what to do about it.
function badge(text, kind, anchor, attrs) {
  return el("a", { class: "badge badge-" + kind, href: RUNBOOK + "#" + anchor, ...(attrs || {}) }, text);
}

const STATE_KINDS = { healthy: "ok", idle: "idle", elevated_fallback: "warn", degraded: "bad" };

function stateBadge(state, key) {
  const shown = state || "unknown";
  const attrs = key ? { "data-figure": key, "data-value": shown } : {};
  return badge(shown, STATE_KINDS[shown] || "idle", "state-" + shown, attrs);
}

function fact(label, content) {
  return el("div", {}, el("dt", { text: label }), el("dd", {}, content));
}

// ---- rendering ---------------------------------------------------------------------------------------

function render(snapshot) {
  view.snapshot = snapshot;
  const health = snapshot.health;
  const economics = snapshot.economics;
  document.body.classList.toggle("stale", !snapshot.service.reachable);
  renderHeader(snapshot);
  if (health) {
    const guardrails = health.guardrails || {};
    renderDetection(health);
    renderStopLoss(guardrails);
    renderBudgets(health);
    renderBreakers(health);
    renderLanes(health);
    renderDecisions(health);
    renderScale(guardrails);
    renderActions(health);
    renderService(health, snapshot.service);
  }
  if (economics) renderEconomics(economics, health);
  renderCharts(health, economics);
  renderAlerts(snapshot);
}

function renderHeader(snapshot) {
  const { service, health } = snapshot;
  $("address").replaceChildren(fig("service.address", service.address));
  $("config-version").replaceChildren(health ? fig("health.config_version", health.config_version) : "-");
  $("reachable").replaceChildren(
    fig("service.reachable", service.reachable, service.reachable ? "yes" : "no"),
    service.reachable ? "" : el("span", { class: "problem", title: service.problem }, ": ", fig("service.problem", service.problem)),
  );
  $("reachable").classList.toggle("bad", !service.reachable);
  $("updated").replaceChildren(fig("snapshot.at_unix", snapshot.at_unix, stamp(snapshot.at_unix)));
  $("overall-badge").replaceChildren(health ? stateBadge(health.overall?.state, "health.overall.state") : "");
}

function renderDetection(health) {
  const d = health.detection || {};
  $("detection-caption").replaceChildren(
    "Over the last ",
    fig("health.detection.window_s", d.window_s, seconds(d.window_s)),
    ": degraded at a router-error rate of ",
    fig("health.detection.degraded_router_error_rate", d.degraded_router_error_rate, rate(d.degraded_router_error_rate, 1)),
    ", elevated_fallback at a disruptive fallback rate of ",
    fig("health.detection.elevated_fallback_rate", d.elevated_fallback_rate, rate(d.elevated_fallback_rate, 1)),
    ". Health states a lane's detection state only; its rates are under Economics, by lane.",
  );
  const detected = (scope, key, s) =>
    withDetail(
      row(
        cell(scope),
        cell(s.name || "all"),
        cell(key === "health.overall" ? stateBadge(s.state) : stateBadge(s.state, key + ".state")),
        cell(fig(key + ".decisions", s.decisions, count(s.decisions)), true),
        cell(fig(key + ".router_error_rate", s.router_error_rate, rate(s.router_error_rate, s.decisions)), true),
        cell(fig(key + ".disruptive_fallback_rate", s.disruptive_fallback_rate, rate(s.disruptive_fallback_rate, s.decisions)), true),
      ),
      6,
      s.reason ? fig(key + ".reason", s.reason) : "",
    );
  const rows = [detected("overall", "health.overall", health.overall || {})];
  for (const lane of health.lanes || []) {
    rows.push(
      row(cell("lane"), cell(lane.lane), cell(stateBadge(lane.state, `health.lanes.${lane.lane}.state`)),
        cell("-", true), cell("-", true), cell("-", true)),
    );
  }
  for (const provider of health.providers || []) {
    rows.push(detected("provider", `health.providers.${provider.name}`, provider));
  }
  fill($("detection-rows"), rows, 6, "no detection states");
}

function triggerReading(t) {
  if (!t.judged) return "not judged";
  if (t.holding) return "holding";
  return t.clear ? "clear" : "near";
}

function renderStopLoss(g) {
  const active = Boolean(g.stop_loss_active);
  const parts = [
    active ? badge("stop-loss active", "bad", "stop-loss") : badge("stop-loss off", "ok", "stop-loss"),
    fig("guardrails.stop_loss_active", active, ""),
  ];
  if (active) {
    parts.push(
      " since ", fig("guardrails.since_unix", g.since_unix, stamp(g.since_unix)),
      ", trigger ", fig("guardrails.trigger", g.trigger),
      ": ", fig("guardrails.reason", g.reason), ". ",
    );
    if (g.operator_only) parts.push(badge("operator only", "bad", "stop-loss-operator-only"), " only an operator can end it.");
    else if (g.exits_by_itself) parts.push("Ends by itself in ", fig("guardrails.exits_in_s", g.exits_in_s, seconds(g.exits_in_s)), ".");
    else parts.push("Waits for every trigger to clear.");
  }
  parts.push(fig("guardrails.operator_only", Boolean(g.operator_only), ""));
  $("stop-loss-state").replaceChildren(el("p", {}, ...parts));
  const rows = (g.triggers || []).map((t) => {
    const key = `guardrails.triggers.${t.trigger}`;
    const reading = triggerReading(t);
    return withDetail(
      row(
        cell(t.trigger),
        cell(el("span", { class: "reading reading-" + reading.replace(" ", "-") }, fig(key + ".reading", reading))),
        cell(t.judged ? fig(key + ".figure", t.figure, num(t.figure).toFixed(3)) : "-", true),
        cell(fig(key + ".threshold", t.threshold, num(t.threshold).toFixed(3)), true),
      ),
      4,
      t.detail || "",
    );
  });
  fill($("trigger-rows"), rows, 4, "no triggers");
  $("stop-loss-events").replaceChildren(
    ...(g.events || []).slice(0, 4).map((e) =>
      el("li", {}, `${stamp(e.at_unix)} ${e.kind} (${e.trigger})${e.note ? ": " + e.note : ""}`),
    ),
  );
}

function windowOf(economics) {
  return (economics.windows || []).find((w) => w.window === view.window);
}

const OVERALL_FIGURES = [
  ["decisions", "decisions", (f) => count(f.decisions)],
  ["estimated_tokens", "est. tokens", (f) => count(f.estimated_tokens)],
  ["estimated_cost_usd", "est. spend", (f) => money(f.estimated_cost_usd)],
  ["estimated_usd_per_mtok", "est. $/1M", (f) => perMtok(f.estimated_usd_per_mtok, f.estimated_tokens)],
  ["reports", "reports", (f) => count(f.reports)],
  ["reported_tokens", "reported tokens", (f) => count(f.reported_tokens)],
  ["spend_usd", "spend", (f) => money(f.spend_usd)],
  ["blended_usd_per_mtok", "blended $/1M", (f) => perMtok(f.blended_usd_per_mtok, f.reported_tokens)],
  ["exact_spend_share", "exact spend", (f) => rate(f.exact_spend_share, f.spend_usd)],
  ["cache_share", "cache share", (f) => rate(f.cache_share, f.reported_input_tokens)],
  ["fallback_rate", "fallback", (f) => rate(f.fallback_rate, f.decisions)],
  ["disruptive_fallback_rate", "disruptive fallback", (f) => rate(f.disruptive_fallback_rate, f.decisions)],
  ["router_error_rate", "router errors", (f) => rate(f.router_error_rate, f.decisions)],
  ["error_rate", "errors", (f) => rate(f.error_rate, f.reports)],
  ["acceptance_rate", "pass", (f) => rate(f.acceptance_rate, f.reports)],
  ["first_time_pass_rate", "first-time pass", (f) => rate(f.first_time_pass_rate, f.reports)],
  ["unknown_decision_reports", "unknown-decision reports", (f) => count(f.unknown_decision_reports)],
  ["bounded_cost_reports", "bounded-cost reports", (f) => count(f.bounded_cost_reports)],
];

// Each figure's text, by field, for the rows by provider, lane and model too.
const FIGURE_TEXT = Object.fromEntries(OVERALL_FIGURES.map(([field, , text]) => [field, text]));
const TRAFFIC = ["estimated_tokens", "reported_tokens", "spend_usd", "blended_usd_per_mtok"];

function figureCells(key, f, fields) {
  return fields.map((field) => cell(fig(`${key}.${field}`, f[field], FIGURE_TEXT[field](f)), true));
}

function renderEconomics(economics, health) {
  const w = windowOf(economics);
  const body = [$("economics-overall"), $("provider-rows"), $("lane-figure-rows"), $("model-rows")];
  if (!w) {
    body[0].replaceChildren(fact("window", `no window ${view.window}`));
    return;
  }
  const base = `economics.${w.window}`;
  const o = w.overall || {};
  body[0].replaceChildren(
    fact("since", fig(`${base}.since_unix`, w.since_unix, stamp(w.since_unix))),
    ...OVERALL_FIGURES.map(([field, label, text]) => fact(label, fig(`${base}.overall.${field}`, o[field], text(o)))),
  );
  const providerStates = Object.fromEntries((health?.providers || []).map((p) => [p.name, p.state]));
  const laneStates = Object.fromEntries((health?.lanes || []).map((l) => [l.lane, l.state]));
  const laneBudgets = Object.fromEntries(
    (health?.budgets || []).filter((b) => b.scope === "lane").map((b) => [b.name, b]),
  );
  fill(body[1], (w.providers || []).map(({ name, figures: f }) => {
    const key = `${base}.providers.${name}`;
    const share = num(o.decisions) ? num(f.decisions) / num(o.decisions) : 0;
    return row(
      cell(name), cell(providerStates[name] ? stateBadge(providerStates[name]) : "-"),
      cell(fig(`${key}.decisions_share`, share, rate(share, o.decisions)), true),
      ...figureCells(key, f, ["decisions", "fallback_rate", "router_error_rate", "error_rate", ...TRAFFIC]),
    );
  }), 11, "no provider traffic in this window");
  fill(body[2], (w.lanes || []).map(({ name, figures: f }) => {
    const key = `${base}.lanes.${name}`;
    const budget = laneBudgets[name];
    return row(
      cell(name), cell(laneStates[name] ? stateBadge(laneStates[name]) : "-"),
      ...figureCells(key, f, [
        "decisions", "fallback_rate", "disruptive_fallback_rate", "router_error_rate", "error_rate", ...TRAFFIC,
      ]),
      cell(budget ? rate(budget.used_share, 1) : "-", true),
    );
  }), 12, "no lane traffic in this window");
  fill(body[3], (w.models || []).map(({ name, figures: f }) => {
    const key = `${base}.models.${name}`;
    return row(
      cell(name),
      ...figureCells(key, f, [
        "decisions", "reports", "acceptance_rate", "first_time_pass_rate", "error_rate", ...TRAFFIC,
      ]),
    );
  }), 10, "no model traffic in this window");
}

function budgetBadge(b) {
  if (b.exhausted) return badge("exhausted", "bad", "budget-exhausted");
  if (b.warning) return badge("warning", "warn", "budget-warning");
  return el("span", { class: "badge badge-ok", text: "ok" });
}

function renderBudgets(health) {
  const rows = (health.budgets || []).map((b) => {
    const key = `health.budgets.${b.scope}.${b.name || "_"}`;
    return row(
      cell(b.scope), cell(b.name || "all"),
      cell(fig(key + ".limit_usd", b.limit_usd, money(b.limit_usd)), true),
      cell(fig(key + ".spent_usd", b.spent_usd, money(b.spent_usd)), true),
      cell(fig(key + ".reserved_usd", b.reserved_usd, money(b.reserved_usd)), true),
      cell(el("span", { class: "meter" }, el("span", { class: "meter-track" }, meterBar(b.used_share)),
        fig(key + ".used_share", b.used_share, rate(b.used_share, 1))), true),
      cell(el("span", {}, budgetBadge(b),
        fig(key + ".warning", Boolean(b.warning), ""), fig(key + ".exhausted", Boolean(b.exhausted), ""))),
    );
  });
  fill($("budget-rows"), rows, 7, "no daily budgets configured ([budgets] in policy.toml)");
}

// Its width set through the CSSOM: the page's content policy refuses style attributes in markup.
function meterBar(share) {
  const bar = el("span", { class: "meter-bar" });
  bar.style.width = (100 * Math.min(1, num(share))).toFixed(1) + "%";
  return bar;
}

function renderBreakers(health) {
  const all = health.breakers || [];
  const tripped = all.filter((b) => b.state !== "closed");
  $("breakers-caption").textContent =
    `${tripped.length} of ${all.length} circuits not closed` + (all.length ? "" : " (none has seen a failure yet)");
  const rows = tripped.map((b) => {
    const key = `health.breakers.${b.scope}.${b.name}`;
    const kind = b.state === "open" ? "bad" : "warn";
    return withDetail(
      row(
        cell(b.scope), cell(b.name),
        cell(badge(b.state, kind, "breaker-" + b.state, { "data-figure": key + ".state", "data-value": b.state })),
        cell(fig(key + ".reopens_in_s", b.reopens_in_s, seconds(b.reopens_in_s)), true),
        cell(fig(key + ".openings", b.openings, count(b.openings)), true),
        cell(el("button", {
          type: "button", class: "small", "data-action": "close-breaker", "data-scope": b.scope, "data-name": b.name,
          text: "close",
        })),
      ),
      6,
      b.reason || "",
    );
  });
  fill($("breaker-rows"), rows, 6, "every circuit is closed");
}

function renderLanes(health) {
  const rows = (health.lanes || []).map((lane) => {
    const key = `health.lanes.${lane.lane}`;
    let routing;
    if (lane.paused) routing = badge("paused", "warn", "lane-paused");
    else if (!lane.enabled) routing = badge("disabled", "warn", "lane-disabled");
    else routing = el("span", { class: "badge badge-ok", text: "scored" });
    return row(
      cell(lane.lane), cell(stateBadge(lane.state)),
      cell(el("span", {}, routing, fig(key + ".paused", Boolean(lane.paused), ""), fig(key + ".enabled", Boolean(lane.enabled), ""))),
      cell(count(lane.allowed_models), true),
      cell(lane.static_fallback),
      cell(el("button", {
        type: "button", class: "small", "data-action": "pause-lane", "data-lane": lane.lane,
        "data-paused": lane.paused ? "false" : "true", text: lane.paused ? "resume" : "pause",
      })),
    );
  });
  fill($("lane-rows"), rows, 6, "no lanes");
}

function renderDecisions(health) {
  const rows = (health.recent_decisions || []).map((d) => {
    const key = `health.recent_decisions.${d.decision_id}`;
    const strategy = d.model ? word(d.strategy, "STRATEGY_") : "refused";
    const reason = word(d.fallback_reason, "FALLBACK_REASON_");
    return row(
      cell(clock(d.at_unix)), cell(d.lane),
      cell(fig(key + ".model", d.model, d.model || "(refused)")),
      cell(d.provider || "-"),
      cell(fig(key + ".strategy", strategy)),
      cell(fig(key + ".fallback_reason", reason)),
      cell(fig(key + ".estimated_cost_usd", d.estimated_cost_usd, money(d.estimated_cost_usd)), true),
      cell(fig(key + ".estimated_tokens", d.estimated_tokens, count(d.estimated_tokens)), true),
    );
  });
  fill($("decision-rows"), rows, 8, "no decisions yet");
}

function renderScale(g) {
  const rows = (g.scale_decisions || []).map((s) => {
    const key = `guardrails.scale_decisions.${s.decision_id}`;
    const blocking = (s.blocking || []).map((b) =>
      el("span", { class: "block" }, el("span", { class: "tag", text: word(b.block, "SCALE_BLOCK_") }), " ", b.detail || ""),
    );
    return withDetail(
      row(
        cell(clock(s.at_unix)), cell(s.target),
        cell(fig(key + ".action", word(s.action, "SCALE_ACTION_"))),
        cell(`${s.current_parallel_agents} → ${s.allowed_parallel_agents} (asked ${s.requested_parallel_agents})`, true),
        cell(fig(key + ".marginal_npv_usd", s.marginal_npv_usd, money(s.marginal_npv_usd)), true),
      ),
      5,
      ...blocking,
    );
  });
  fill($("scale-rows"), rows, 5, "no Scale decisions yet");
}

function renderActions(health) {
  const rows = (health.operator_actions || []).map((a, i) => {
    const key = `health.operator_actions.${i}`;
    return withDetail(
      row(
        cell(clock(a.at_unix)),
        cell(fig(key + ".who", a.who, a.who || "(open service)")),
        cell(fig(key + ".action", a.action)),
        cell(fig(key + ".target", a.target, a.target || "service")),
        cell(el("span", { class: "pre" }, fig(key + ".outcome", a.outcome))),
      ),
      5,
      el("q", {}, fig(key + ".note", a.note)),
    );
  });
  fill($("action-rows"), rows, 5, "no operator actions in the ledger");
}

function renderService(health, service) {
  const ledger = health.ledger || {};
  const learning = health.learning || {};
  const facts = [
    fact("release", fig("health.version", health.version)),
    fact("process", el("span", {}, "pid ", fig("health.pid", health.pid), ", up ", fig("health.uptime_s", health.uptime_s, seconds(health.uptime_s)))),
    fact("kernel", el("span", {}, fig("health.scoring_kernel", health.scoring_kernel), ", protobuf ", health.protobuf_backend)),
    fact("routing", fig("health.routing_enabled", Boolean(health.routing_enabled), health.routing_enabled ? "scored" : "OFF: static chains")),
    fact("catalog", `${health.enabled_models} of ${health.catalog_models} models enabled, ${health.lane_count} lanes`),
    fact("success model", el("span", {}, fig("health.learning.mode", learning.mode), ", ledger position ", count(learning.ledger_position))),
    fact("ledger", ledger.location || "-"),
    fact("ledger writes", el("span", {},
      fig("health.ledger.commits", ledger.commits, count(ledger.commits)), " commits, ",
      fig("health.ledger.queued", ledger.queued, count(ledger.queued)), " queued, ",
      fig("health.ledger.dropped_decisions", ledger.dropped_decisions, count(ledger.dropped_decisions)), " decisions dropped")),
  ];
  const shared = health.shared;
  if (shared) {
    facts.push(fact("shared state", el("span", {},
      fig("health.shared.connected", Boolean(shared.connected), shared.connected ? "connected" : "AWAY"),
      ` ${shared.location}, `, fig("health.shared.replicas", shared.replicas, count(shared.replicas)), " replicas, ",
      fig("health.shared.pending", shared.pending, count(shared.pending)), " pending, ",
      fig("health.shared.dropped", shared.dropped, count(shared.dropped)), " dropped",
      shared.error ? ": " + shared.error : "")));
  } else {
    facts.push(fact("shared state", "none (this replica shares no state)"));
  }
  facts.push(fact("data dir", health.data_dir || "-"));
  facts.push(fact("pages open", fig("service.pages", service.pages, count(service.pages))));
  $("service-facts").replaceChildren(...facts);
}

function renderAlerts(snapshot) {
  const { service, health } = snapshot;
  const alerts = [];
  if (!service.reachable) alerts.push(badge("service unreachable", "bad", "service-unreachable"));
  if (health) {
    const g = health.guardrails || {};
    if (g.stop_loss_active) alerts.push(badge("stop-loss active", "bad", "stop-loss"));
    if (g.stop_loss_active && g.operator_only) alerts.push(badge("stop-loss: operator only", "bad", "stop-loss-operator-only"));
    if (!health.routing_enabled) alerts.push(badge("routing off", "warn", "routing-off"));
    for (const b of health.breakers || []) {
      if (b.state !== "closed") alerts.push(badge(`${b.scope} ${b.name} ${b.state}`, b.state === "open" ? "bad" : "warn", "breaker-" + b.state));
    }
    for (const b of health.budgets || []) {
      const name = `${b.scope} ${b.name || "all"}`.trim();
      if (b.exhausted) alerts.push(badge(`budget ${name} exhausted`, "bad", "budget-exhausted"));
      else if (b.warning) alerts.push(badge(`budget ${name} ${rate(b.used_share, 1)}`, "warn", "budget-warning"));
    }
    for (const lane of health.lanes || []) {
      if (lane.paused) alerts.push(badge(`lane ${lane.lane} paused`, "warn", "lane-paused"));
      else if (!lane.enabled) alerts.push(badge(`lane ${lane.lane} disabled`, "warn", "lane-disabled"));
    }
    if (health.shared && !health.shared.connected) alerts.push(badge("shared state away", "bad", "shared-away"));
    const ledger = health.ledger || {};
    if (num(ledger.dropped_decisions)) alerts.push(badge("ledger dropped decisions", "bad", "ledger-behind"));
    else if (num(ledger.queued) >= LEDGER_BEHIND) alerts.push(badge("ledger behind", "warn", "ledger-behind"));
  }
  $("alerts").replaceChildren(...(alerts.length ? alerts : [el("span", { class: "calm", text: "nothing needs attention" })]));
}

// ---- charts (uPlot) ---------------------------------------------------------------------------------

const COLORS = { spend: "#2563eb", blended: "#d97706", fallback: "#7c3aed", disruptive: "#dc2626", router: "#0891b2", bar: "#2563eb" };
const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
const percentAxis = (u, values) => values.map((v) => v + "%");
const usdAxis = (u, values) => values.map((v) => "$" + v);

function chartSize(box) {
  return { width: Math.max(240, box.clientWidth), height: window.innerWidth < 700 ? 190 : 230 };
}

// A chart over categories (models, strategies): bars at x = 0, 1, ... named by `view.charts[name].names`.
// `rotated`: long names (models) slant so that they do not overlap.
function barOptions(name, label, yAxis, box, rotated) {
  const names = () => view.charts[name].names;
  return {
    ...chartSize(box),
    scales: { x: { time: false, range: () => [-0.5, Math.max(names().length, 1) - 0.5] }, y: { range: (u, min, max) => [0, Math.max(max, 1)] } },
    axes: [
      {
        splits: () => names().map((_, i) => i),
        values: (u, splits) => splits.map((i) => names()[i] ?? ""),
        rotate: rotated ? -40 : 0,
        size: rotated ? 96 : 36,
        gap: 4,
      },
      { values: yAxis, size: 56 },
    ],
    legend: { show: false },
    cursor: { show: false },
    padding: [12, rotated ? 36 : 12, 0, 0], // room for the last slanted name
    series: [{}, { label, fill: COLORS.bar + "cc", stroke: COLORS.bar, paths: uPlot.paths.bars({ size: [0.6, 64] }), points: { show: false } }],
  };
}

function hourlyOptions(box, series, axes) {
  return { ...chartSize(box), tzDate: utc, series: [{}, ...series], axes, legend: { live: false } };
}

// `names`: a bar chart's categories, set before the data so its x range follows them.
function ensureChart(name, makeOptions, data, names) {
  const box = $("chart-" + name);
  let chart = view.charts[name];
  if (!chart) {
    chart = view.charts[name] = { names: names || [], plot: null };
    chart.plot = new uPlot(makeOptions(box), data, box);
    new ResizeObserver(() => chart.plot.setSize(chartSize(box))).observe(box);
  } else {
    chart.names = names || [];
    chart.plot.setData(data);
  }
  box.dataset.series = JSON.stringify(names ? { names, values: data[1] } : data);
  return chart;
}

function renderCharts(health, economics) {
  if (typeof uPlot === "undefined") return; // the library did not load: tables still show everything
  const hourly = economics?.hourly || [];
  const hours = hourly.map((h) => num(h.hour_unix));
  const per = (pick) => hourly.map((h) => pick(h.figures || {}));
  const perDecision = (field) => per((f) => (num(f.decisions) ? 100 * num(f[field]) : null));
  ensureChart("spend", (box) => hourlyOptions(box, [
    { label: "spend", scale: "usd", stroke: COLORS.spend, width: 2, value: (u, v) => (v == null ? "-" : money(v)) },
    { label: "blended $/1M", scale: "mtok", stroke: COLORS.blended, width: 2, dash: [6, 4], value: (u, v) => (v == null ? "-" : "$" + v.toFixed(3)) },
  ], [{}, { scale: "usd", values: usdAxis, size: 64 }, { scale: "mtok", side: 1, values: usdAxis, grid: { show: false }, size: 56 }]),
  [hours, per((f) => num(f.spend_usd)), per((f) => (num(f.reported_tokens) ? num(f.blended_usd_per_mtok) : null))]);

  const d = health?.detection || {};
  const flat = (v) => hours.map(() => (v ? 100 * num(v) : null));
  ensureChart("rates", (box) => hourlyOptions(box, [
    { label: "fallback", stroke: COLORS.fallback, width: 1.5 },
    { label: "disruptive fallback", stroke: COLORS.disruptive, width: 2 },
    { label: "router errors", stroke: COLORS.router, width: 2 },
    { label: "elevated_fallback at", stroke: COLORS.disruptive, width: 1, dash: [4, 4], points: { show: false } },
    { label: "degraded at", stroke: COLORS.router, width: 1, dash: [4, 4], points: { show: false } },
  ], [{}, { values: percentAxis, size: 56 }]),
  [hours, perDecision("fallback_rate"), perDecision("disruptive_fallback_rate"), perDecision("router_error_rate"),
    flat(d.elevated_fallback_rate), flat(d.degraded_router_error_rate)]);
  $("rates-caption").textContent = "Per hour, last 24 h: fallback, disruptive fallback and router-error rates of the " +
    "decisions, against the detection thresholds (dashed): elevated_fallback at a disruptive fallback rate of " +
    rate(d.elevated_fallback_rate, 1) + ", degraded at a router-error rate of " + rate(d.degraded_router_error_rate, 1) + ".";

  renderPassChart(health, economics);
  renderStrategyChart(health);
}

function renderPassChart(health, economics) {
  const w = economics ? windowOf(economics) : null;
  let names = [];
  let values = [];
  let caption;
  const reported = (w?.models || []).filter((m) => num(m.figures?.reports));
  const learned = (health?.learning?.models || []).filter((m) => num(m.outcomes));
  if (reported.length) {
    names = reported.map((m) => m.name);
    values = reported.map((m) => 100 * num(m.figures.acceptance_rate));
    caption = `Pass rate per model: validation passed / reports, Economics window ${view.window} (models with reports).`;
  } else if (learned.length) {
    names = learned.map((m) => m.model);
    values = learned.map((m) => (100 * num(m.passes)) / num(m.outcomes));
    caption = "Pass rate per model: passes / outcomes the success model has learned (Health.learning).";
  } else {
    caption = `Pass rate per model: no reports in the ${view.window} window and no learned outcomes yet.`;
  }
  ensureChart("pass", (box) => barOptions("pass", "pass rate", percentAxis, box, true), [names.map((_, i) => i), values], names);
  $("pass-caption").textContent = caption;
}

function renderStrategyChart(health) {
  const decisions = health?.recent_decisions || [];
  const counts = new Map();
  for (const d of decisions) {
    const strategy = d.model ? word(d.strategy, "STRATEGY_") : "refused";
    counts.set(strategy, (counts.get(strategy) || 0) + 1);
  }
  const names = [...counts.keys()].sort();
  ensureChart("strategies", (box) => barOptions("strategies", "decisions", (u, v) => v.map(String), box, false),
    [names.map((_, i) => i), names.map((n) => counts.get(n))], names);
  $("strategies-caption").textContent = `Decisions by strategy over the last ${decisions.length} decisions (Health.recent_decisions).`;
}

// ---- operator actions --------------------------------------------------------------------------------

function say(outcome, text, code) {
  const message = $("message");
  message.dataset.outcome = outcome;
  message.dataset.code = code || "";
  message.textContent = text;
  const item = el("li", { class: "result-" + outcome }, el("time", { text: clock(Date.now() / 1000) }), " ", text);
  $("results").prepend(item);
  while ($("results").children.length > RESULTS_KEPT) $("results").lastChild.remove();
}

function describe(path, result) {
  switch (path) {
    case "stop-loss":
      return (result.guardrails?.stop_loss_active ? "stop-loss is active" : "stop-loss is off") +
        (result.changed ? "" : " (it already was)");
    case "reload":
      return result.reloaded
        ? `config ${result.config_version} in force (was ${result.previous_version})`
        : `refused, config ${result.config_version} stays: ${result.refusal}`;
    case "breakers/close":
      return result.changed ? "closed" : "it was closed already";
    case "lanes/pause":
      return (result.lane?.paused ? "paused" : "running") + (result.changed ? "" : " (it already was)");
    default:
      return "done";
  }
}

async function act(path, body, label, button) {
  const note = $("note").value.trim();
  if (!note) {
    say("error", `${label}: write a note first; the ledger keeps it with the action`);
    $("note").focus();
    return;
  }
  const token = $("token").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (button) button.disabled = true;
  try {
    const response = await fetch("/api/" + path, {
      method: "POST", headers, body: JSON.stringify({ ...body, note }), cache: "no-store", credentials: "omit",
    });
    const answer = await response.json();
    if (!answer.ok) {
      const fields = (answer.violations || []).map(([field, problem]) => `${field}: ${problem}`).join("; ");
      say("refused", `${label}: refused: ${answer.code} ${answer.message}${fields ? " (" + fields + ")" : ""}`, answer.code);
    } else if (path === "reload" && !answer.result.reloaded) {
      say("refused", `${label}: ${describe(path, answer.result)}`, "RELOAD_REFUSED");
    } else {
      say("ok", `${label}: ${describe(path, answer.result)}`, "OK");
    }
  } catch (error) {
    say("error", `${label}: no answer from the companion (${error})`);
  } finally {
    if (button) button.disabled = false;
  }
}

function wireControls() {
  const token = $("token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value.trim()));
  $("forget-token").addEventListener("click", () => {
    token.value = "";
    sessionStorage.removeItem(TOKEN_KEY);
  });
  $("control-form").addEventListener("submit", (event) => event.preventDefault());
  $("enter-stop-loss").addEventListener("click", (e) => act("stop-loss", { active: true }, "enter stop-loss", e.currentTarget));
  $("exit-stop-loss").addEventListener("click", (e) => act("stop-loss", { active: false }, "exit stop-loss", e.currentTarget));
  $("reload-config").addEventListener("click", (e) => act("reload", {}, "reload config", e.currentTarget));
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const data = button.dataset;
    if (data.action === "close-breaker") {
      act("breakers/close", { scope: data.scope, name: data.name }, `close ${data.scope} ${data.name}`, button);
    } else if (data.action === "pause-lane") {
      const paused = data.paused === "true";
      act("lanes/pause", { lane: data.lane, paused }, `${paused ? "pause" : "resume"} lane ${data.lane}`, button);
    }
  });
}

// ---- the live stream ---------------------------------------------------------------------------------

function setLive(state, text) {
  const live = $("live");
  live.dataset.live = state;
  live.textContent = text;
}

function follow() {
  const source = new EventSource("/events");
  source.addEventListener("open", () => setLive("live", "live"));
  source.addEventListener("error", () => setLive("reconnecting", "reconnecting…"));
  source.addEventListener("snapshot", (event) => {
    setLive("live", "live");
    try {
      render(JSON.parse(event.data));
    } catch (error) {
      setLive("error", "cannot show this snapshot: " + error);
      console.error(error);
    }
  });
}

$("window").addEventListener("change", (event) => {
  view.window = event.target.value;
  if (view.snapshot) render(view.snapshot);
});
wireControls();
follow();
