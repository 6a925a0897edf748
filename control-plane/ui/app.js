// The Switchboard console: one page per resource, all through the admin
// REST API with the signed-in admin's token. What the role may not do is not
// offered, and the API refuses it anyway.

import { bars, line, spark } from "./charts.js";

const API = "/api/v1";
const REFRESH_MS = 5000;
const state = { token: sessionStorage.getItem("switchboard-token"), me: null, timer: null, history: [] };

// ---- plumbing

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: { authorization: `Bearer ${state.token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new ApiError(response.status, data?.error?.message || response.statusText, data?.error?.code);
  }
  return data;
}

const get = (path, query) => api("GET", query ? `${path}?${new URLSearchParams(clean(query))}` : path);

function clean(query) {
  return Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ""));
}

// An element: h("p", {class: "x"}, "text", child, ...).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function text(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (Array.isArray(value)) return value.length ? value.map(text).join(", ") : "–";
  if (typeof value === "object") {
    const entries = Object.entries(value);
    return entries.length ? entries.map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("; ") : "–";
  }
  return String(value);
}

// A table of rows; columns: [key, label, render?]; actions(row) gives buttons.
function table(caption, rows, columns, actions) {
  const head = h("tr", {}, columns.map(([, label]) => h("th", { scope: "col" }, label)), actions ? h("th", { scope: "col" }, "Actions") : null);
  const body = rows.map((row) =>
    h("tr", {}, columns.map(([key, , render]) => h("td", {}, render ? render(row[key], row) : text(row[key]))),
      actions ? h("td", { class: "actions" }, actions(row)) : null));
  return h("div", { class: "table-wrap" },
    h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body.length ? body : h("tr", {}, h("td", { colspan: columns.length + (actions ? 1 : 0) }, "None yet.")))));
}

// A form; fields: {name, label, type?, options?, required?, placeholder?}.
function form(title, fields, submit, onSubmit) {
  const status = h("p", { class: "status", role: "status" });
  const el = h("form", { class: "card", "aria-label": title },
    h("h2", {}, title),
    h("div", { class: "fields" }, fields.map((f) => {
      const id = `f-${title.replace(/\W+/g, "-")}-${f.name}`.toLowerCase();
      const input = f.options
        ? h("select", { id, name: f.name }, f.options.map(([value, label]) => h("option", { value }, label)))
        : h("input", { id, name: f.name, type: f.type || "text", required: f.required, placeholder: f.placeholder, step: f.step });
      return h("div", { class: "field" }, h("label", { for: id }, f.label), input);
    })),
    h("button", { type: "submit" }, submit),
    status);
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "";
    status.className = "status";
    const values = Object.fromEntries(new FormData(el).entries());
    try {
      await onSubmit(values);
      el.reset();
    } catch (error) {
      status.textContent = error.message;
      status.className = "status error";
    }
  });
  return el;
}

function list(text) {
  return (text || "").split(",").map((s) => s.trim()).filter(Boolean);
}

function limitsFrom(values) {
  const limits = {};
  for (const name of ["rpm", "tpm"]) if (values[name]) limits[name] = Number(values[name]);
  return limits;
}

function budgetFrom(values) {
  return values.budget ? { amount: values.budget, period: values.period || "monthly" } : null;
}

const BUDGET_FIELDS = [
  { name: "rpm", label: "Requests per minute", type: "number" },
  { name: "tpm", label: "Tokens per minute", type: "number" },
  { name: "budget", label: "Budget (USD)", placeholder: "25.00" },
  { name: "period", label: "Budget period", options: [["monthly", "monthly"], ["weekly", "weekly"], ["daily", "daily"], ["none", "lifetime"]] },
];

function showSecret(secret) {
  const value = document.getElementById("secret-value");
  const dialog = document.getElementById("secret-dialog");
  value.textContent = secret;
  // Gone from the page once the admin says it is stored.
  dialog.addEventListener("close", () => { value.textContent = ""; }, { once: true });
  dialog.showModal();
}

function role() {
  return state.me?.role;
}

// Which writes the role may make here (the API checks again).
function mayWrite(resource) {
  if (role() === "admin") return true;
  if (role() === "team_admin") return resource === "keys" || resource === "users";
  return false;
}

function readOnlyNote(resource) {
  return h("p", { class: "note" }, `Your role (${role()}) may read ${resource} but not change them.`);
}

function page(title, ...children) {
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", {}, title), ...children);
  document.title = `${title} · Switchboard`;
}

function failure(error) {
  return h("p", { class: "error", role: "alert" }, error.status === 403 ? `Not visible to your role: ${error.message}` : error.message);
}

function isoDaysAgo(days) {
  const d = new Date(Date.now() - days * 86400000);
  return d.toISOString().slice(0, 10);
}

function startOfTodayUtc() {
  return new Date().toISOString().slice(0, 10) + "T00:00:00Z";
}

function money(totals) {
  const costs = totals?.costs || {};
  const parts = Object.entries(costs).map(([currency, amount]) => `${amount} ${currency}`);
  return parts.length ? parts.join(" + ") : "0.00";
}

function teamNames(teams) {
  return Object.fromEntries(teams.map((t) => [t.id, t.name]));
}

// ---- pages

async function overview() {
  const figures = h("div", { class: "figures", "aria-live": "off" });
  const health = h("div");
  const planes = h("div");
  const updated = h("p", { class: "note", role: "status" });
  page("Overview", updated, figures, h("h2", {}, "Providers, last 5 minutes"), health, h("h2", {}, "Data planes"), planes);
  state.history = [];
  const refresh = async () => {
    const since = new Date(Date.now() - 300000).toISOString();
    try {
      const [recent, today, providers, dataplanes] = await Promise.all([
        get("/usage", { since }),
        get("/usage", { since: startOfTodayUtc() }),
        get("/usage", { since, group_by: "provider" }),
        // A team admin may not see the data planes: the rest still shows.
        get("/dataplanes").catch((error) => error),
      ]);
      const openOn = breakersByProvider(dataplanes);
      const rate = recent.requests / 300;
      state.history = [...state.history.slice(-29), rate];
      const errorRate = recent.requests ? (100 * recent.errors) / recent.requests : 0;
      const figure = (label, value, extra) => h("div", { class: "figure" }, h("span", { class: "figure-label" }, label), h("span", { class: "figure-value" }, value), extra);
      figures.replaceChildren(
        figure("Requests/s", rate.toFixed(2), spark(state.history, "Requests per second")),
        figure("Error rate", `${errorRate.toFixed(1)} %`),
        figure("Latency P50 / P99", `${recent.latency_ms_p50} / ${recent.latency_ms_p99} ms`),
        figure("Time to first token P50 / P99", recent.ttft_ms_p99 === null ? "no streams" : `${recent.ttft_ms_p50} / ${recent.ttft_ms_p99} ms`),
        figure("Tokens/min", Math.round(recent.total_tokens / 5).toLocaleString()),
        figure("Requests today", today.requests.toLocaleString()),
        figure("Cost today", money(today)),
      );
      health.replaceChildren(table("Provider health over the last 5 minutes", providers.rows, [
        ["provider", "Provider"],
        ["requests", "Requests"],
        ["errors", "Errors"],
        ["retried", "Retried"],
        ["latency_ms_p50", "P50 ms"],
        ["latency_ms_p99", "P99 ms"],
        ["health", "Health", (_, row) => healthBadge(row)],
        ["breakers", "Open breakers", (_, row) => openOn[row.provider] || "none"],
      ]));
      planes.replaceChildren(dataplanes instanceof Error ? failure(dataplanes) : dataPlanes(dataplanes));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`;
    } catch (error) {
      figures.replaceChildren(failure(error));
    }
  };
  await refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

function dataPlanes(answer) {
  return table(`Config version ${answer.current_version}`, answer.data_planes, [
    ["id", "Data plane"],
    ["hostname", "Host"],
    ["applied_version", "Applied version"],
    ["lag", "Lag", (_, row) => String(answer.current_version - row.applied_version)],
    ["connected", "Connected", (v) => (v ? "yes" : "no")],
    ["last_seen", "Last seen"],
    ["control_plane", "Control plane"],
    ["open_breakers", "Open breakers", (open) => open.map((b) => `${b.provider}/${b.model}`).join(", ") || "none"],
  ]);
}

// provider -> "model (on N data planes), ...", from the data planes' reports.
function breakersByProvider(answer) {
  if (answer instanceof Error) return {};
  const count = {};
  for (const plane of answer.data_planes.filter((p) => p.connected)) {
    for (const b of plane.open_breakers) {
      const key = `${b.provider}\u0000${b.model}`;
      count[key] = (count[key] || 0) + 1;
    }
  }
  const open = {};
  for (const [key, planes] of Object.entries(count)) {
    const [provider, model] = key.split("\u0000");
    open[provider] = [...(open[provider] ? [open[provider]] : []), `${model} (on ${planes} data plane${planes > 1 ? "s" : ""})`].join(", ");
  }
  return open;
}

function healthBadge(row) {
  const rate = row.requests ? row.errors / row.requests : 0;
  const [label, tone] = rate >= 0.5 ? ["failing", "bad"] : rate >= 0.05 ? ["degraded", "warn"] : ["healthy", "good"];
  return h("span", { class: `badge ${tone}` }, label);
}

const GROUPS = [["day", "day"], ["model", "model"], ["provider", "provider"], ["team", "team"], ["user", "user"], ["key", "key"]];

async function cost() {
  const controls = form("Range", [
    { name: "since", label: "From (UTC)", type: "date" },
    { name: "until", label: "To (UTC, inclusive)", type: "date" },
    { name: "group", label: "Group by", options: GROUPS },
  ], "Show", async (values) => show(values));
  controls.since.value = isoDaysAgo(6);
  controls.until.value = isoDaysAgo(0);
  const results = h("div");
  page("Cost analysis", controls, results);

  async function show(values) {
    const range = {
      since: `${values.since || isoDaysAgo(6)}T00:00:00Z`,
      until: new Date(new Date(`${values.until || isoDaysAgo(0)}T00:00:00Z`).getTime() + 86400000).toISOString(),
    };
    const group = values.group || "day";
    const [grouped, byDay, teams, keys, users] = await Promise.all([
      get("/usage", { ...range, group_by: group }),
      get("/usage", { ...range, group_by: "day" }),
      get("/teams"),
      get("/keys"),
      get("/users"),
    ]);
    const names = { ...teamNames(teams), ...Object.fromEntries(keys.map((k) => [k.id, k.name])), ...Object.fromEntries(users.map((u) => [u.id, u.name])) };
    const field = { key: "key_id", user: "user_id", team: "team_id" }[group] || group;
    const label = (row) => (row[field] === null ? "(none)" : group === "day" ? row.day.slice(0, 10) : names[row[field]] || row[field]);
    const rows = [...grouped.rows].sort((a, b) => Number(b.cost || 0) - Number(a.cost || 0));
    const csv = h("button", { type: "button", onclick: () => download(`switchboard-cost-by-${group}.csv`, toCsv(grouped.rows, field, label)) }, "Export CSV");
    results.replaceChildren(
      h("h2", {}, "Cost by day"),
      line(byDay.rows.map((r) => ({ x: r.day.slice(0, 10), y: Number(r.cost || 0) })), "Cost by day"),
      h("h2", {}, `Cost by ${group}`),
      bars(rows.map((r) => ({ label: label(r), value: Number(r.cost || 0) })), `Cost by ${group}`),
      csv,
      table(`Usage by ${group}`, rows, [
        [field, group, (_, row) => label(row)],
        ["requests", "Requests"],
        ["prompt_tokens", "Prompt tokens"],
        ["completion_tokens", "Completion tokens"],
        ["total_tokens", "Total tokens"],
        ["errors", "Errors"],
        ["cost", "Cost"],
        ["currency", "Currency"],
      ]),
      h("h2", {}, "Top spenders"),
      await topSpenders(range, names),
      h("h2", {}, "Budgets"),
      await budgets(teams, users, keys),
    );
  }
  await show({});
}

async function topSpenders(range, names) {
  const groups = await Promise.all(["team", "user", "key"].map(async (group) => {
    const field = `${group}_id`;
    const answer = await get("/usage", { ...range, group_by: group });
    const top = answer.rows.filter((r) => r[field]).sort((a, b) => Number(b.cost || 0) - Number(a.cost || 0)).slice(0, 5);
    return table(`Top ${group}s by cost`, top, [
      [field, group, (id) => names[id] || id],
      ["requests", "Requests"],
      ["total_tokens", "Tokens"],
      ["cost", "Cost"],
      ["currency", "Currency"],
    ]);
  }));
  return h("div", { class: "columns" }, groups);
}

// Every holder with a budget: spent against the amount this period, and the
// day-by-day burn against it.
async function budgets(teams, users, keys) {
  const holders = [
    ...teams.map((t) => ({ kind: "team", query: { team_id: t.id }, ...t })),
    ...users.map((u) => ({ kind: "user", query: { user_id: u.id }, ...u })),
    ...keys.filter((k) => !k.revoked).map((k) => ({ kind: "key", query: { key_id: k.id }, ...k })),
  ].filter((holder) => holder.budget);
  if (!holders.length) return h("p", { class: "note" }, "No team, user or key has a budget.");
  const cards = await Promise.all(holders.slice(0, 12).map(async (holder) => {
    const amount = Number(holder.budget.amount);
    const spent = Number(holder.spend?.spent || 0);
    const since = holder.spend?.period_start || isoDaysAgo(29) + "T00:00:00Z";
    const days = await get("/usage", { ...holder.query, since, group_by: "day" });
    let total = 0;
    const points = days.rows.map((r) => ({ x: r.day.slice(0, 10), y: Number((total += Number(r.cost || 0)).toFixed(6)) }));
    const title = `${holder.kind} ${holder.name}`;
    return h("div", { class: "card" },
      h("h3", {}, title),
      h("p", {}, `${holder.spend?.spent ?? "0.00"} of ${holder.budget.amount} ${holder.budget.currency} (${holder.budget.period})`,
        holder.spend?.exhausted ? h("span", { class: "badge bad" }, "exhausted") : null),
      h("progress", { max: amount, value: Math.min(spent, amount), "aria-label": `${title} budget used` }),
      line(points, `${title}: cumulative cost this period`, amount));
  }));
  return h("div", { class: "columns" }, cards);
}

function toCsv(rows, field, label) {
  const columns = ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "errors", "cost", "currency"];
  const quote = (v) => (/[",\n]/.test(String(v ?? "")) ? `"${String(v).replace(/"/g, '""')}"` : String(v ?? ""));
  const lines = [[field, ...columns].join(",")];
  for (const row of rows) lines.push([label(row), ...columns.map((c) => row[c])].map(quote).join(","));
  return lines.join("\n") + "\n";
}

function download(name, content) {
  const link = h("a", { href: URL.createObjectURL(new Blob([content], { type: "text/csv" })), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

async function keys() {
  const [all, teams] = await Promise.all([get("/keys"), get("/teams")]);
  const names = teamNames(teams);
  const reload = () => route();
  const actions = mayWrite("keys")
    ? (key) => key.revoked ? "revoked" : [
      h("button", { type: "button", onclick: async () => {
        if (!confirm(`Rotate key ${key.name}? The old secret keeps working for an hour.`)) return;
        const rotated = await api("POST", `/keys/${encodeURIComponent(key.id)}/rotate`, {});
        showSecret(rotated.key);
      } }, "Rotate"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Revoke key ${key.name}? Requests with it are refused at once.`)) return;
        await api("DELETE", `/keys/${encodeURIComponent(key.id)}`);
        reload();
      } }, "Revoke"),
    ]
    : null;
  const create = mayWrite("keys")
    ? form("Create a key", [
      { name: "name", label: "Name", required: true },
      { name: "team_id", label: "Team", options: [["", role() === "team_admin" ? "my team" : "no team"], ...teams.map((t) => [t.id, t.name])] },
      { name: "models", label: "Models (comma-separated; empty: all the team may use)" },
      ...BUDGET_FIELDS,
    ], "Create key", async (values) => {
      // No models named: what the team may call.
      const team = teams.find((t) => t.id === values.team_id);
      const created = await api("POST", "/keys", {
        name: values.name,
        team_id: values.team_id || null,
        models: list(values.models).length ? list(values.models) : team?.models || [],
        limits: limitsFrom(values),
        budget: budgetFrom(values),
      });
      showSecret(created.key);
      document.getElementById("secret-dialog").addEventListener("close", reload, { once: true });
    })
    : readOnlyNote("keys");
  page("API keys", create, table("API keys", all, [
    ["name", "Name"],
    ["prefix", "Prefix"],
    ["team_id", "Team", (id) => names[id] || text(id)],
    ["models", "Models"],
    ["limits", "Limits"],
    ["budget", "Budget", (b) => (b ? `${b.amount} ${b.currency} ${b.period}` : "–")],
    ["spend", "Spent", (s) => (s ? `${s.spent} ${s.currency}` : "–")],
    ["revoked", "State", (revoked, key) => (revoked ? "revoked" : key.expires_at ? `expires ${key.expires_at}` : "active")],
  ], actions));
}

async function users() {
  const [all, teams] = await Promise.all([get("/users"), get("/teams")]);
  const names = teamNames(teams);
  const create = mayWrite("users")
    ? form("Create a user", [
      { name: "name", label: "Name", required: true },
      { name: "email", label: "Email", type: "email" },
      { name: "team_id", label: "Team", options: [["", role() === "team_admin" ? "my team" : "no team"], ...teams.map((t) => [t.id, t.name])] },
      { name: "external_id", label: "Identity provider subject" },
      ...BUDGET_FIELDS,
    ], "Create user", async (values) => {
      await api("POST", "/users", {
        name: values.name, email: values.email || null, team_id: values.team_id || null,
        external_id: values.external_id || null, limits: limitsFrom(values), budget: budgetFrom(values),
      });
      route();
    })
    : readOnlyNote("users");
  page("Users", create, table("Users", all, [
    ["name", "Name"], ["email", "Email"], ["team_id", "Team", (id) => names[id] || text(id)],
    ["external_id", "Subject"], ["models", "Models"], ["limits", "Limits"],
    ["budget", "Budget", (b) => (b ? `${b.amount} ${b.currency} ${b.period}` : "–")],
  ], mayWrite("users") ? (user) => deleteButton(`/users/${encodeURIComponent(user.id)}`, `user ${user.name}`) : null));
}

function deleteButton(path, what) {
  return h("button", { type: "button", class: "danger", onclick: async () => {
    if (!confirm(`Delete ${what}?`)) return;
    try {
      await api("DELETE", path);
      route();
    } catch (error) {
      alert(error.message);
    }
  } }, "Delete");
}

async function teams() {
  const all = await get("/teams");
  const create = mayWrite("teams")
    ? form("Create a team", [
      { name: "name", label: "Name", required: true },
      { name: "models", label: "Models (comma-separated; empty: all)" },
      ...BUDGET_FIELDS,
    ], "Create team", async (values) => {
      await api("POST", "/teams", { name: values.name, models: list(values.models), limits: limitsFrom(values), budget: budgetFrom(values) });
      route();
    })
    : readOnlyNote("teams");
  page("Teams", create, table("Teams", all, [
    ["name", "Name"], ["id", "Id"], ["models", "Models"], ["limits", "Limits"],
    ["budget", "Budget", (b) => (b ? `${b.amount} ${b.currency} ${b.period}` : "–")],
    ["spend", "Spent", (s) => (s ? `${s.spent} ${s.currency}` : "–")],
  ], mayWrite("teams") ? (team) => deleteButton(`/teams/${encodeURIComponent(team.id)}`, `team ${team.name}`) : null));
}

async function providers() {
  page("Providers", table("Providers (credentials are write-only and never shown)", await get("/providers"), [
    ["name", "Name"], ["kind", "Kind"], ["base_url", "Base URL"],
    ["has_api_key", "API key", (v) => (v ? "set" : "none")], ["settings", "Settings"], ["updated_at", "Updated"],
  ]));
}

async function routes() {
  page("Routes", table("Routes", await get("/routes"), [
    ["model", "Model"], ["strategy", "Strategy"],
    ["targets", "Targets", (targets) => targets.map((t) => `${t.provider}/${t.model} ×${t.weight}${t.priority ? ` p${t.priority}` : ""}`).join(", ")],
    ["fallbacks", "Fallbacks"], ["aliases", "Aliases"], ["retry", "Retry"], ["limits", "Limits"],
  ]));
}

async function prices() {
  page("Prices", table("Prices per million tokens", await get("/prices"), [
    ["model", "Model"], ["provider", "Provider"], ["input_per_million", "Input"],
    ["output_per_million", "Output"], ["cached_input_per_million", "Cached input"],
    ["cache_write_per_million", "Cache write"], ["currency", "Currency"],
  ]));
}

async function issuers() {
  page("JWT issuers", table("JWT issuers", await get("/jwt-issuers"), [
    ["name", "Name"], ["issuer", "Issuer"], ["audiences", "Audiences"], ["algorithms", "Algorithms"],
    ["jwks_url", "JWKS URL"], ["key_ids", "Keys"], ["jwks_error", "Last JWKS error"],
  ]));
}

async function admins() {
  const [all, teams] = await Promise.all([get("/admins"), get("/teams")]);
  const create = mayWrite("admins")
    ? form("Create an admin", [
      { name: "name", label: "Name", required: true },
      { name: "role", label: "Role", options: [["viewer", "viewer"], ["team_admin", "team admin"], ["admin", "admin"]] },
      { name: "team_id", label: "Team (team admins only)", options: [["", "none"], ...teams.map((t) => [t.id, t.name])] },
    ], "Create admin", async (values) => {
      const created = await api("POST", "/admins", { name: values.name, role: values.role, team_id: values.team_id || null });
      showSecret(created.token);
      document.getElementById("secret-dialog").addEventListener("close", () => route(), { once: true });
    })
    : readOnlyNote("admins");
  page("Admins", create, table("Admin principals", all, [
    ["name", "Name"], ["role", "Role"], ["team_id", "Team", (id) => teamNames(teams)[id] || text(id)], ["created_at", "Created"],
  ], mayWrite("admins") ? (admin) => deleteButton(`/admins/${encodeURIComponent(admin.id)}`, `admin ${admin.name}`) : null));
}

async function audit() {
  const results = h("div");
  const filters = form("Filter", [
    { name: "resource", label: "Resource", placeholder: "key/<id>, route/gpt-4o" },
    { name: "actor", label: "Actor", placeholder: "admin, admin/<id>" },
    { name: "since", label: "Since (local time)", type: "datetime-local" },
  ], "Filter", async (values) => show(values));
  page("Audit log", filters, results);
  async function show(values) {
    const since = values.since ? new Date(values.since).toISOString() : undefined;
    const answer = await get("/audit", { resource: values.resource, actor: values.actor, since, limit: 200 });
    results.replaceChildren(table("Admin writes, newest first", answer.rows, [
      ["at", "At"], ["actor", "Actor"], ["action", "Action"], ["resource", "Resource"], ["request_id", "Request id"],
      ["after", "Change", (_, row) => h("details", {}, h("summary", {}, "before / after"),
        h("pre", {}, JSON.stringify({ before: row.before, after: row.after }, null, 2)))],
    ]));
  }
  await show({});
}

const PAGES = {
  overview, cost, keys, users, teams, providers, routes, prices, "jwt-issuers": issuers, admins, audit,
};

// ---- shell

async function route() {
  clearInterval(state.timer);
  const name = location.hash.replace(/^#\//, "") || "overview";
  const render = PAGES[name] || overview;
  for (const link of document.querySelectorAll("nav a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${name}`);
    if (link.hasAttribute("aria-current")) link.setAttribute("aria-current", "page");
  }
  const main = document.getElementById("main");
  main.setAttribute("aria-busy", "true");
  delete main.dataset.ready;
  try {
    await render();
  } catch (error) {
    if (error.status === 401) return signOut("Your token is no longer accepted.");
    page("Error", failure(error));
  }
  main.setAttribute("aria-busy", "false");
  // The page is complete (tests wait for this).
  main.dataset.ready = name;
  main.focus({ preventScroll: true });
}

async function signIn(token) {
  state.token = token;
  state.me = await api("GET", "/whoami");
  sessionStorage.setItem("switchboard-token", token);
  document.getElementById("who").textContent = `${state.me.actor} · ${state.me.role.replace("_", " ")}`;
  document.getElementById("login").hidden = true;
  document.getElementById("shell").hidden = false;
  document.getElementById("logout").hidden = false;
  await route();
}

function signOut(message) {
  clearInterval(state.timer);
  sessionStorage.removeItem("switchboard-token");
  state.token = null;
  state.me = null;
  document.getElementById("shell").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn(document.getElementById("token").value.trim());
  } catch (error) {
    signOut(error.status === 401 ? "That token is not accepted." : error.message);
  }
});
document.getElementById("logout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);

// Back from the identity provider: a session token, or why there is none.
// Both come in the fragment, which no server sees; it is cleared at once.
const answer = new URLSearchParams(location.hash.startsWith("#session=") || location.hash.startsWith("#error=") ? location.hash.slice(1) : "");
if (answer.has("session") || answer.has("error")) history.replaceState(null, "", location.pathname);
fetch("/ui/oidc/config").then((r) => r.json()).then((c) => { document.getElementById("sso").hidden = !c.enabled; }).catch(() => {});

if (answer.has("session")) signIn(answer.get("session")).catch(() => signOut("The session was not accepted."));
else if (answer.has("error")) signOut(answer.get("error"));
else if (state.token) signIn(state.token).catch(() => signOut());
else signOut();
