// The autoballoon dashboard: polls /api/v1/dashboard and draws it. No libraries, no external requests.
"use strict";

// Drawn in this order: target's dashes over actual's solid line, so the two stay apart where they meet.
const SERIES = [
  ["max", "s-max"],
  ["used", "s-used"],
  ["actual", "s-actual"],
  ["target", "s-target"],
];
const CHART_W = 640;
const CHART_H = 120;
const PAD_L = 56;
const PAD_B = 16;
const SVG_NS = "http://www.w3.org/2000/svg";
const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
// The banner names at most this many suffering guests, then counts the rest.
const BANNER_NAMES = 12;

let pollMs = 1000;
let updates = 0;
let lastOk = 0;

function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (Math.abs(n) >= GIB) return (n / GIB).toFixed(2) + " GiB";
  if (Math.abs(n) >= MIB) return (n / MIB).toFixed(0) + " MiB";
  return (n / 1024).toFixed(0) + " KiB";
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return "now";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  return (seconds / 3600).toFixed(1) + " h ago";
}

function setText(id, text) {
  const el = document.getElementById(id);
  if (el && el.textContent !== text) el.textContent = text;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function renderHost(h) {
  setText("hostname", h.hostname || "host");
  setText("uri", h.uri || "");
  setText("h-total", bytes(h.mem_total_bytes));
  setText("h-avail", bytes(h.mem_available_bytes));
  setText("h-actual", bytes(h.sum_actual_bytes));
  setText("h-target", "target " + bytes(h.sum_target_bytes));
  setText("h-max", bytes(h.sum_max_bytes));
  setText("h-overcommit", "over-commit ×" + (h.overcommit_ratio || 0).toFixed(2) + " of host RAM");
  setText("h-budget", bytes(h.budget_bytes));
  setText("h-reserve", "reserve " + bytes(h.reserve_bytes));
  setText("h-psi", h.psi_some_avg10 === null ? "–" : h.psi_some_avg10.toFixed(1) + " %");
  const full = h.psi_full_avg10 === null ? "" : "full " + h.psi_full_avg10.toFixed(1) + " % · ";
  const tick = h.last_tick_s === null ? "" : "tick " + (h.last_tick_s * 1000).toFixed(1) + " ms · ";
  setText("h-ticks", full + tick + h.backend_errors + " backend errors");

  const total = h.mem_total_bytes || 1;
  const vms = Math.min(h.sum_actual_bytes || 0, total);
  const free = Math.min(h.mem_available_bytes || 0, total - vms);
  const other = Math.max(0, total - vms - free);
  document.getElementById("bar-vms").style.width = (100 * vms / total) + "%";
  document.getElementById("bar-other").style.width = (100 * other / total) + "%";
  document.getElementById("bar-free").style.width = (100 * free / total) + "%";
  const reserve = document.getElementById("bar-reserve");
  reserve.style.width = (100 * Math.min(h.reserve_bytes || 0, total) / total) + "%";
  const bar = document.getElementById("hostbar");
  bar.dataset.vms = String(vms);
  bar.dataset.free = String(free);
  const paused = document.getElementById("h-paused");
  paused.hidden = !h.shrink_paused;
  setText("h-paused", h.shrink_paused ? "Shrinking paused by the health guard: " + h.shrink_paused : "");
  renderHarm(h);
}

// The red banner: the host cannot hold every guest's want, or guests suffer now (named, worst harm).
function harmText(h) {
  const parts = [];
  if (h.host_short) parts.push("Host short: the budget cannot hold what every guest wants.");
  const suffering = h.suffering || [];
  if (suffering.length) {
    const named = suffering.slice(0, BANNER_NAMES).map((s) => s.vm + " (" + s.harm + ")");
    const more = suffering.length > BANNER_NAMES ? ", and " + (suffering.length - BANNER_NAMES) + " more" : "";
    parts.push(suffering.length + (suffering.length === 1 ? " guest suffers: " : " guests suffer: ") +
      named.join(", ") + more + ".");
  }
  return parts.join(" ");
}

function renderHarm(h) {
  const text = harmText(h);
  const banner = document.getElementById("h-harm");
  banner.hidden = !text;
  setText("h-harm", text);
  document.body.dataset.harm = text ? "1" : "";
}

// A word quoted for a POSIX shell by the rules of Python's shlex.quote, as the daemon quotes the commands
// it logs: a VM name is anybody's text, and the operator pastes the command shown.
function shellQuote(word) {
  if (word === "") return "''";
  if (/^[A-Za-z0-9_@%+=:,.\/-]+$/.test(word)) return word;
  return "'" + word.replace(/'/g, "'\"'\"'") + "'";
}

// The one command that removes a storming guest's balloon device (effective at its next boot).
function remedyCommand(name) {
  return "autoballoon balloon " + shellQuote(name) + " --model none";
}

function makeRow(vm) {
  const row = el("div", "vm-row");
  row.dataset.vm = vm.name;
  const info = el("div", "vm-info");
  const head = el("div", "vm-head");
  head.append(el("span", "vm-name", vm.name), el("span", "badge"), el("span", "vm-state muted"));
  const remedy = el("div", "vm-remedy");
  remedy.hidden = true;
  remedy.append(el("span", "", "remedy: "), el("code", "remedy-cmd"));
  info.append(head, el("div", "vm-reason muted"), remedy);
  const nums = el("dl", "vm-nums");
  for (const [key, label] of [["max", "max"], ["target", "target"], ["actual", "actual"],
    ["rss", "QEMU RSS (host)"], ["used", "guest used"], ["avail", "guest available"], ["age", "stats age"],
    ["need", "need"], ["want", "want"], ["oom", "OOM floor"], ["swap", "swap-in"], ["rule", "bound by"]]) {
    nums.append(el("dt", "t-" + key, label), el("dd", "n-" + key));
  }
  info.append(nums);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none",
    role: "img", "aria-label": `memory of ${vm.name} over time` });
  chart.append(svg("line", { class: "axis", x1: PAD_L, y1: CHART_H - PAD_B, x2: CHART_W, y2: CHART_H - PAD_B }));
  chart.append(svg("line", { class: "grid", x1: PAD_L, y1: (CHART_H - PAD_B) / 2, x2: CHART_W, y2: (CHART_H - PAD_B) / 2 }));
  for (const [key, cls] of SERIES) chart.append(svg("path", { class: "line " + cls, "data-series": key, d: "" }));
  chart.append(svg("line", { class: "cursor", x1: 0, y1: 0, x2: 0, y2: CHART_H - PAD_B, visibility: "hidden" }));
  const chartBox = el("div", "chart-box");
  // Axis text in HTML over the chart, not in the SVG: the SVG stretches to the row's width, and its text
  // with it (about 6 px wide on a phone).
  const right = el("span", "tick-label x-right", "now");
  chartBox.append(chart, el("span", "tick-label y-top"), el("span", "tick-label y-mid"),
    el("span", "tick-label x-left"), right, el("div", "readout"));
  chartBox.querySelector(".readout").hidden = true;
  chartBox.addEventListener("mousemove", (ev) => showReadout(row, ev));
  chartBox.addEventListener("mouseleave", () => hideReadout(row));
  row.append(info, chartBox);
  return row;
}

// The hover readout: the point under the pointer, every series' value at that time.
function showReadout(row, ev) {
  const hist = histories.get(row.dataset.vm);
  if (!hist || !hist.t.length) return;
  const box = row.querySelector(".chart");
  const rect = box.getBoundingClientRect();
  const x = (ev.clientX - rect.left) / rect.width * CHART_W;
  const ts = hist.t;
  const t0 = ts[0];
  const t1 = ts[ts.length - 1];
  const at = t0 + (t1 - t0) * Math.min(1, Math.max(0, (x - PAD_L) / (CHART_W - PAD_L)));
  let i = 0;
  while (i + 1 < ts.length && Math.abs(ts[i + 1] - at) <= Math.abs(ts[i] - at)) i++;
  const cx = PAD_L + (CHART_W - PAD_L) * (ts.length === 1 ? 1 : (ts[i] - t0) / Math.max(t1 - t0, 1e-9));
  const cursor = row.querySelector(".cursor");
  cursor.setAttribute("x1", cx); cursor.setAttribute("x2", cx); cursor.setAttribute("visibility", "visible");
  const readout = row.querySelector(".readout");
  readout.textContent = "−" + spanText(t1 - ts[i]) + " · " + SERIES.map(([key]) => key + " " + bytes(hist[key][i])).join(" · ");
  readout.hidden = false;
}

function hideReadout(row) {
  row.querySelector(".cursor").setAttribute("visibility", "hidden");
  row.querySelector(".readout").hidden = true;
}

function spanText(seconds) {
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function pathOf(ts, values, t0, t1, yMax) {
  const w = CHART_W - PAD_L;
  const h = CHART_H - PAD_B - 4;
  const span = Math.max(t1 - t0, 1e-9);
  let d = "";
  let pen = false;
  for (let i = 0; i < ts.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) { pen = false; continue; }
    const x = PAD_L + w * (ts.length === 1 ? 1 : (ts[i] - t0) / span);
    const y = 4 + h * (1 - v / yMax);
    d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    pen = true;
  }
  return d;
}

function renderVm(row, vm, now) {
  const st = vm.harm || vm.status || (vm.state === "running" ? "pending" : vm.state);
  const badge = row.querySelector(".badge");
  badge.textContent = st;
  badge.dataset.status = st;
  row.querySelector(".vm-state").textContent = vm.state + " · " + vm.balloon_model + " balloon" +
    (vm.mechanism && vm.mechanism !== "balloon" ? " · " + vm.mechanism : "");
  row.querySelector(".vm-reason").textContent = vm.status_reason || "";
  const remedy = row.querySelector(".vm-remedy");
  remedy.hidden = vm.status !== "quarantined";
  remedy.querySelector(".remedy-cmd").textContent = vm.status === "quarantined" ? remedyCommand(vm.name) : "";
  row.querySelector(".n-max").textContent = bytes(vm.max_bytes);
  row.querySelector(".n-target").textContent = bytes(vm.target_bytes);
  row.querySelector(".n-actual").textContent = bytes(vm.actual_bytes);
  row.querySelector(".n-rss").textContent = bytes(vm.host_rss_bytes);
  row.querySelector(".n-used").textContent = bytes(vm.guest_used_bytes);
  row.querySelector(".n-avail").textContent = bytes(vm.guest_available_bytes);
  row.querySelector(".n-age").textContent = vm.stats_age_s === null ? "no stats" : vm.stats_age_s.toFixed(0) + " s";
  row.querySelector(".n-need").textContent = bytes(vm.need_bytes);
  row.querySelector(".n-want").textContent = bytes(vm.want_bytes);
  row.querySelector(".n-oom").textContent = bytes(vm.oom_floor_bytes);
  const swap = vm.swap_in_bytes_per_s;
  row.querySelector(".n-swap").textContent = swap === null || swap === undefined ? "–" : bytes(swap) + "/s";
  row.querySelector(".n-rule").textContent = vm.rule || "–";

  const hist = vm.history;
  const ts = hist.t;
  const yMax = Math.max(vm.max_bytes, ...hist.max) || 1;
  const t1 = ts.length ? ts[ts.length - 1] : now;
  const t0 = ts.length ? ts[0] : now;
  for (const [key] of SERIES) {
    row.querySelector(`path[data-series="${key}"]`).setAttribute("d", pathOf(ts, hist[key], t0, t1, yMax));
  }
  row.querySelector(".y-top").textContent = bytes(yMax);
  row.querySelector(".y-mid").textContent = bytes(yMax / 2);
  row.querySelector(".x-left").textContent = ts.length > 1 ? "−" + spanText(t1 - t0) : "";
  row.dataset.samples = String(ts.length);
  row.dataset.lastTime = ts.length ? String(t1) : "";
  row.dataset.lastActual = String(vm.actual_bytes);
  row.dataset.lastTarget = String(vm.target_bytes);
}

function renderVms(vms, now) {
  const box = document.getElementById("vms");
  const seen = new Set();
  let prev = null;
  for (const vm of vms) {
    seen.add(vm.name);
    let row = box.querySelector(`.vm-row[data-vm="${CSS.escape(vm.name)}"]`);
    if (!row) row = makeRow(vm);
    const want = prev ? prev.nextSibling : box.firstChild;
    if (row !== want) box.insertBefore(row, want);
    renderVm(row, vm, now);
    prev = row;
  }
  for (const row of [...box.querySelectorAll(".vm-row")]) if (!seen.has(row.dataset.vm)) row.remove();
  setText("vm-count", `(${vms.length})`);
}

function renderActions(actions, now) {
  const body = document.getElementById("actions");
  body.replaceChildren();
  if (!actions.length) {
    const tr = el("tr");
    const td = el("td", "muted", "none yet");
    td.colSpan = 6;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const a of actions) {
    const tr = el("tr", a.applied === false ? "failed" : "");
    const dir = a.direction === "grow" ? "▲ grow" : a.direction === "shrink" ? "▼ shrink" : a.direction || "";
    tr.append(el("td", "muted", ago(now - a.time)), el("td", "vm", a.vm || ""),
      el("td", "dir " + (a.direction || ""), dir), el("td", "num", bytes(a.old_target)),
      el("td", "num", bytes(a.new_target)), el("td", "reason", a.reason + (a.error ? " — " + a.error : "") +
        (a.repeats > 1 ? " ×" + a.repeats : "")));
    body.append(tr);
  }
}

function renderEvents(events, now) {
  const list = document.getElementById("events");
  list.replaceChildren();
  if (!events.length) { list.append(el("li", "muted", "none yet")); return; }
  for (const e of events) {
    const li = el("li", "event " + (e.kind || ""));
    // The daemon's messages already start with the VM ("stuck: stuck: balloon…" read it twice).
    const message = e.message || "";
    const named = e.vm && !message.startsWith(e.vm + ":") ? e.vm + ": " + message : message;
    li.append(el("span", "muted", ago(now - e.time) + " "), el("span", "kind", e.kind || "event"),
      el("span", "", " " + named), el("span", "muted repeats", e.repeats > 1 ? " ×" + e.repeats : ""));
    list.append(li);
  }
}

function setConn(state, text) {
  const c = document.getElementById("conn");
  c.dataset.state = state;
  if (c.textContent !== text) c.textContent = text;
}

// Each VM's chart history, kept here: after the first poll the daemon sends only the points after
// `historyUntil` (a 1,000-VM daemon would otherwise send every chart's whole history every second).
const histories = new Map();
let historyUntil = null;

function mergeHistory(name, part, keep) {
  let h = histories.get(name);
  if (!h) {
    h = { t: [] };
    for (const [key] of SERIES) h[key] = [];
    histories.set(name, h);
  }
  const last = h.t.length ? h.t[h.t.length - 1] : -Infinity;
  part.t.forEach((t, i) => {
    if (t <= last) return;
    h.t.push(t);
    for (const [key] of SERIES) h[key].push(part[key][i]);
  });
  const extra = h.t.length - keep;
  if (extra > 0) for (const key of ["t", ...SERIES.map(([k]) => k)]) h[key].splice(0, extra);
  return h;
}

// The charts' window (seconds), chosen on the page: the daemon keeps a fine history for the shortest and
// a coarser one (a point every half minute) for the others.
let windowS = Number(localStorage.getItem("autoballoon.window") || 600);

function chooseWindow(seconds) {
  windowS = seconds;
  localStorage.setItem("autoballoon.window", String(seconds));
  histories.clear();
  historyUntil = null;
  for (const b of document.querySelectorAll("#window button")) b.setAttribute("aria-pressed", String(Number(b.dataset.s) === seconds));
}

function trimWindow(h) {
  const last = h.t.length ? h.t[h.t.length - 1] : 0;
  let drop = 0;
  while (drop < h.t.length && h.t[drop] < last - windowS) drop++;
  if (drop) for (const key of ["t", ...SERIES.map(([k]) => k)]) h[key].splice(0, drop);
  return h;
}

async function poll() {
  try {
    const query = "?window=" + windowS + (historyUntil === null ? "" : "&since=" + historyUntil);
    const resp = await fetch("/api/v1/dashboard" + query, { cache: "no-store" });
    if (resp.status === 503) { setConn("connecting", "waiting for the first tick…"); return; }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const d = await resp.json();
    if (historyUntil !== null && d.host.time < historyUntil) {  // a restarted daemon: start afresh
      histories.clear();
      historyUntil = null;
      return;
    }
    const names = new Set(d.vms.map((vm) => vm.name));
    for (const name of [...histories.keys()]) if (!names.has(name)) histories.delete(name);
    for (const vm of d.vms) vm.history = trimWindow(mergeHistory(vm.name, vm.history, d.history_points));
    if (d.history_until !== null) historyUntil = d.history_until;
    pollMs = d.poll_ms || pollMs;
    const now = d.host.time;
    renderHost(d.host);
    renderVms(d.vms, now);
    renderActions(d.actions, d.host.wall_time);  // the journal is stamped on the wall clock
    renderEvents(d.events, d.host.wall_time);
    updates += 1;
    lastOk = Date.now();
    document.body.dataset.updates = String(updates);
    document.body.dataset.time = String(now);
    const interval = d.host.interval_s ? " · every " + d.host.interval_s + " s" : "";
    const access = d.writable ? " · API writable" : " · read-only";
    const suffering = (d.host.suffering || []).length;
    const harm = d.host.host_short ? " · HOST SHORT" : suffering ? " · " + suffering + " suffering" : "";
    setConn(harm ? "harm" : "live", "live" + harm + " · tick " + d.host.ticks + interval + access);
  } catch (err) {
    const since = lastOk ? " · last update " + Math.round((Date.now() - lastOk) / 1000) + " s ago" : "";
    setConn("down", "no answer from the daemon" + since);
  } finally {
    setTimeout(poll, pollMs);
  }
}

for (const b of document.querySelectorAll("#window button")) b.addEventListener("click", () => chooseWindow(Number(b.dataset.s)));
chooseWindow(windowS);
poll();
