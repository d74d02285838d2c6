// Status page of the CoAP–MQTT bridge: polls the read-only JSON API and
// renders it. Every value from the bridge (device names, addresses, error
// texts) is set as text, never as markup.
"use strict";

const POLL_MS = 2000;
const PAGE = 50;
const view = { offset: 0, q: "", state: "", total: 0 };
let timer = null;
let inflight = false;

const $ = (id) => document.getElementById(id);

function text(id, v) { $(id).textContent = v; }

function cell(tr, value, cls) {
  const td = document.createElement("td");
  td.textContent = value === undefined || value === null ? "" : String(value);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function emptyRow(tbody, cols, msg) {
  const tr = document.createElement("tr");
  tr.className = "empty";
  const td = cell(tr, msg);
  td.colSpan = cols;
  tbody.appendChild(tr);
}

function fmtRate(r) { return r >= 10 ? r.toFixed(0) : r.toFixed(2); }
function fmtCount(n) { return Math.round(n).toLocaleString("en-US"); }

function ago(iso, now) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s ago";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m ago";
  return Math.floor(s / 86400) + "d ago";
}

function timeOf(iso) { return iso ? new Date(iso).toLocaleTimeString("en-GB") : ""; }

function renderStatus(st) {
  const now = Date.parse(st.time);
  const d = st.devices;
  text("dev-total", fmtCount(d.total));
  text("dev-online", d.presence ? d.online : "–");
  text("dev-asleep", d.presence ? d.asleep : "–");
  text("dev-offline", d.presence ? d.offline : "–");
  text("dev-presence", d.presence ? d.learned + " learned, " + d.listed + " listed"
    : "presence not tracked");
  text("observations", fmtCount(st.observations));
  text("queued", fmtCount(st.queued_commands));
  const m = st.mqtt;
  text("mqtt-state", m.state);
  $("mqtt-state").className = "value state " + (m.connected ? "online" : "offline");
  text("mqtt-broker", m.broker);
  text("mqtt-buffer", m.buffer_size ? m.buffer_depth + " / " + m.buffer_size : "n/a");
  text("mqtt-counts", "published " + fmtCount(m.published) + ", buffered " + fmtCount(m.buffered) +
    ", reconnects " + m.reconnects);
  text("errors-total", fmtCount(st.errors_total));
  const c = st.cluster;
  $("cluster-card").hidden = !c;
  if (c) {
    text("cluster-members", c.joined ? c.members.length + " members" : "joining");
    text("cluster-detail", c.name + ": " + c.instance + " owns " + fmtCount(c.owned_devices) +
      " devices; " + c.members.join(", "));
  }

  // A reload that was not applied: the rules shown are those loaded before.
  const rl = st.reload;
  const failed = !!rl && rl.result !== "ok";
  $("reload").hidden = !failed;
  if (failed) {
    text("reload-title", "Rule files not applied (" + rl.result + " at " + timeOf(rl.time) +
      "); the rules below are the ones loaded before:");
    const list = $("reload-errors");
    list.replaceChildren();
    for (const e of rl.errors || []) {
      const li = document.createElement("li");
      li.textContent = e;
      list.appendChild(li);
    }
  }

  const rules = $("rules").tBodies[0];
  rules.replaceChildren();
  for (const r of st.rules || []) {
    const tr = document.createElement("tr");
    tr.dataset.rule = r.name;
    cell(tr, r.name);
    cell(tr, r.kind);
    cell(tr, fmtCount(r.messages), "num messages");
    cell(tr, fmtRate(r.message_rate), "num message-rate");
    cell(tr, fmtRate(r.filter_rate), "num filter-rate");
    cell(tr, fmtCount(r.errors), "num errors");
    cell(tr, fmtRate(r.error_rate), "num error-rate");
    const e = r.last_error;
    cell(tr, e ? e.reason + (e.coap_code ? " " + e.coap_code : "") + " · " + ago(e.time, now) : "", "wrap");
    rules.appendChild(tr);
  }
  if (!rules.rows.length) emptyRow(rules, 8, "no rules");

  const errs = $("errors").tBodies[0];
  errs.replaceChildren();
  for (const e of st.errors || []) {
    const tr = document.createElement("tr");
    cell(tr, timeOf(e.time)).title = e.time;
    cell(tr, e.rule || "—");
    cell(tr, e.device || "");
    cell(tr, e.reason);
    cell(tr, e.coap_code || "");
    cell(tr, e.error || "", "wrap");
    cell(tr, e.repeats || "", "num");
    errs.appendChild(tr);
  }
  if (!errs.rows.length) emptyRow(errs, 7, "no errors");
}

function renderDevices(page, now) {
  view.total = page.total;
  const tbody = $("devices").tBodies[0];
  tbody.replaceChildren();
  for (const d of page.devices) {
    const tr = document.createElement("tr");
    tr.dataset.device = d.name;
    cell(tr, d.name, "name");
    const state = d.state || "unknown";
    const st = cell(tr, state + (d.reason ? " (" + d.reason + ")" : ""), "state " + state);
    st.dataset.state = state;
    cell(tr, d.address || "", "address");
    cell(tr, d.via || "");
    const seen = cell(tr, ago(d.last_seen, now), "last-seen");
    seen.title = d.last_seen || "";
    seen.dataset.ts = d.last_seen || "";
    const o = d.observations;
    cell(tr, o ? o.active : "", "num");
    cell(tr, o ? o.reregistrations : "", "num");
    cell(tr, o ? o.reobserved : "", "num");
    cell(tr, o ? o.stale_dropped : "", "num");
    cell(tr, d.queueing ? d.queued_commands + " (offline)" : d.queued_commands, "num queued");
    tbody.appendChild(tr);
  }
  if (!page.devices.length) emptyRow(tbody, 10, page.total ? "no devices on this page" : "no devices");
  const first = page.total ? page.offset + 1 : 0;
  text("page", first + "–" + (page.offset + page.devices.length) + " of " + fmtCount(page.total));
  $("prev").disabled = page.offset === 0;
  $("next").disabled = page.offset + page.devices.length >= page.total;
}

async function getJSON(url) {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(url + ": " + res.status);
  return res.json();
}

async function refresh() {
  if (inflight) return;
  inflight = true;
  try {
    const qs = new URLSearchParams({ offset: view.offset, limit: PAGE });
    if (view.q) qs.set("q", view.q);
    if (view.state) qs.set("state", view.state);
    const [st, page] = await Promise.all([getJSON("/api/status"), getJSON("/api/devices?" + qs)]);
    renderStatus(st);
    renderDevices(page, Date.parse(st.time));
    text("updated", "updated " + timeOf(st.time));
    text("live", "live");
    $("live").className = "badge ok";
  } catch (err) {
    text("live", "disconnected");
    $("live").className = "badge bad";
  } finally {
    inflight = false;
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(async () => {
    if (!document.hidden) await refresh();
    schedule();
  }, POLL_MS);
}

function now() { refresh(); schedule(); }

let typing = null;
$("q").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => { view.q = $("q").value.trim(); view.offset = 0; now(); }, 250);
});
$("state").addEventListener("change", () => { view.state = $("state").value; view.offset = 0; now(); });
$("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - PAGE); now(); });
$("next").addEventListener("click", () => { if (view.offset + PAGE < view.total) { view.offset += PAGE; now(); } });
document.addEventListener("visibilitychange", () => { if (!document.hidden) now(); });
now();
