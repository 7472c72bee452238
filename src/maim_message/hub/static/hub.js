// Live page of the maim_message hub: polls /api/stats and /api/admin/connections once a
// second (the hub answers one HTTP request per connection, so no SSE). Plain JS, no build
// step, no external resources. The admin token comes from the URL fragment (#token=...,
// never sent to the server, removed from the address bar at once) or the login form, and
// is kept in sessionStorage for this tab only; requests carry it as a Bearer token.
"use strict";

const HISTORY = 120;
const history = [];
const TOKEN_KEY = "maim-hub-admin-token";

function takeTokenFromFragment() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    window.history.replaceState(null, "", location.pathname + location.search);
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

class Unauthorized extends Error {}

async function api(path, body) {
  const init = { cache: "no-store", headers: { "Authorization": "Bearer " + token() } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}

function showLogin(message) {
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  document.body.dataset.state = "login";
  const status = $("status");
  status.textContent = "admin token needed";
  status.className = "badge bad";
}

function $(id) { return document.getElementById(id); }

function setValue(id, value, text) {
  const el = $(id);
  if (!el) return;
  el.dataset.value = String(value);
  el.textContent = text === undefined ? String(value) : text;
}

function fmtRate(x) { return x >= 100 ? x.toFixed(0) : x.toFixed(1); }

function fmtUptime(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60), sec = s % 60;
  return (d ? d + "d " : "") + (h || d ? h + "h " : "") + m + "m " + sec + "s";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function fillUsers(stats) {
  const body = $("user-rows");
  body.replaceChildren();
  for (const entry of stats.by_user) {
    for (const [platform, count] of Object.entries(entry.platforms)) {
      const tr = document.createElement("tr");
      cell(tr, entry.user); cell(tr, platform); cell(tr, String(count));
      body.appendChild(tr);
    }
  }
  if (!body.children.length) {
    const tr = document.createElement("tr");
    cell(tr, "nobody connected", "empty"); cell(tr, ""); cell(tr, "");
    body.appendChild(tr);
  }
}

function fillPlatforms(stats) {
  const body = $("platform-rows");
  body.replaceChildren();
  for (const [platform, count] of Object.entries(stats.platforms).sort()) {
    const tr = document.createElement("tr");
    cell(tr, platform); cell(tr, String(count));
    body.appendChild(tr);
  }
  if (!body.children.length) {
    const tr = document.createElement("tr");
    cell(tr, "none", "empty"); cell(tr, "");
    body.appendChild(tr);
  }
}

function fmtSince(epoch, now) { return fmtUptime(Math.max(0, now - epoch)); }

async function disconnect(uuid, button) {
  button.disabled = true;
  try {
    await api("/api/admin/disconnect", { uuid: uuid });
  } catch (err) {
    if (err instanceof Unauthorized) { showLogin("token refused"); return; }
  }
  tick();
}

function fillConnections(rows, now) {
  const body = $("connection-rows");
  body.replaceChildren();
  for (const c of rows) {
    const tr = document.createElement("tr");
    tr.dataset.uuid = c.uuid;
    cell(tr, c.user); cell(tr, c.platform); cell(tr, c.key); cell(tr, c.remote);
    cell(tr, c.generation); cell(tr, fmtSince(c.connected_at, now));
    cell(tr, String(c.messages_in)); cell(tr, String(c.messages_out));
    cell(tr, String(c.outbox_depth));
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.className = "danger disconnect";
    button.textContent = "disconnect";
    button.title = "close this connection (code 4001); the client may reconnect";
    button.addEventListener("click", () => disconnect(c.uuid, button));
    td.appendChild(button);
    tr.appendChild(td);
    body.appendChild(tr);
  }
  if (!body.children.length) {
    const tr = document.createElement("tr");
    cell(tr, "nobody connected", "empty");
    body.appendChild(tr);
  }
  body.dataset.count = String(rows.length);
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...history.map(p => Math.max(p.in, p.out))) * 1.25;
  ctx.strokeStyle = "#27313b";
  ctx.beginPath(); ctx.moveTo(0, h - 0.5); ctx.lineTo(w, h - 0.5); ctx.stroke();
  ctx.fillStyle = "#8b98a5"; ctx.font = "11px sans-serif";
  ctx.fillText(fmtRate(max) + "/s", 4, 12);
  for (const [key, color] of [["in", "#4fc3f7"], ["out", "#aed581"]]) {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    history.forEach((p, i) => {
      const x = w - (history.length - 1 - i) * (w / (HISTORY - 1));
      const y = h - 2 - (p[key] / max) * (h - 18);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function render(stats) {
  setValue("connections", stats.connections);
  setValue("users", stats.users);
  setValue("rate-in", stats.rate_in, fmtRate(stats.rate_in));
  setValue("rate-out", stats.rate_out, fmtRate(stats.rate_out));
  setValue("outbox-depth", stats.outbox.depth);
  setValue("outbox-bytes", stats.outbox.bytes);
  setValue("acks-pending", stats.acks_pending);
  setValue("messages-in", stats.messages_in);
  setValue("messages-out", stats.messages_out);
  setValue("queued", stats.queued);
  setValue("unroutable", stats.unroutable);
  const rejected = Object.values(stats.rejected).reduce((a, b) => a + b, 0);
  setValue("rejected", rejected);
  $("frames").textContent = stats.frames_in + " / " + stats.frames_out;
  $("uptime").textContent = fmtUptime(stats.uptime);
  $("version").textContent = "v" + stats.version + " \u00b7 outbox: " + stats.outbox.backend;
  fillUsers(stats);
  fillPlatforms(stats);
  history.push({ in: stats.rate_in, out: stats.rate_out });
  if (history.length > HISTORY) history.shift();
  drawChart();
  const status = $("status");
  status.textContent = stats.state === "ready" ? "live" : stats.state;
  status.className = "badge " + (stats.state === "ready" ? "ok" : "bad");
  document.body.dataset.state = stats.state;
  document.body.dataset.updated = String(stats.now);
}

async function tick() {
  if (!token()) { showLogin(); return; }
  try {
    const [stats, connections] = await Promise.all(
      [api("/api/stats"), api("/api/admin/connections")]);
    $("login").hidden = true;
    render(stats);
    fillConnections(connections, stats.now);
  } catch (err) {
    if (err instanceof Unauthorized) { showLogin("token refused"); return; }
    const status = $("status");
    status.textContent = "hub unreachable";
    status.className = "badge bad";
    document.body.dataset.state = "unreachable";
  }
}

$("login").addEventListener("submit", (event) => {  // the script is deferred: DOM is ready
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  tick();
});

takeTokenFromFragment();
tick();
setInterval(tick, 1000);
