// ftlab dashboard: charts drawn as inline SVG and live updates by polling JSON every 2 s.
// Hand-written (~200 lines) because the page must work offline, served by ftlab itself, with no CDN or build step.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 2000;
const ACTIVE = ["created", "queued", "running", "validating_files"];
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

function node(parent, name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  parent.appendChild(el);
  return el;
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toPrecision(3);
}

// series: [{name, color, points: [[x, y], ...], dots, dashed}]
function lineChart(el, series, opts) {
  opts = opts || {};
  const W = 640, H = 300, L = 52, R = 12, T = 12, B = 44;
  el.innerHTML = "";
  const svg = node(el, "svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "chart" });
  const all = series.flatMap(s => s.points);
  el.dataset.points = String(all.length);
  if (!all.length) {
    node(svg, "text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, opts.empty || "no data yet");
    return;
  }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(0, ...xs), x1 = Math.max(opts.xmax || 0, ...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pad = (y1 - y0) * 0.05 || Math.abs(y0) * 0.05 || 0.5;
  y0 -= pad; y1 += pad;
  const sx = x => L + (x - x0) / ((x1 - x0) || 1) * (W - L - R);
  const sy = y => T + (1 - (y - y0) / ((y1 - y0) || 1)) * (H - T - B);
  for (const t of niceTicks(y0, y1, 5)) {
    node(svg, "line", { class: "gridline", x1: L, x2: W - R, y1: sy(t), y2: sy(t) });
    node(svg, "text", { x: L - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t));
  }
  for (const t of niceTicks(x0, x1, 8).filter(t => Number.isInteger(t))) {
    node(svg, "text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, String(t));
  }
  node(svg, "line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B });
  node(svg, "line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B });
  node(svg, "text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, opts.xlabel || "step");
  let legendX = L + 8;
  series.forEach(s => {
    if (!s.points.length) return;
    const d = s.points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    const line = node(svg, "polyline", { points: d, fill: "none", stroke: s.color, "stroke-width": s.dots ? 2 : 1.4 });
    line.dataset.series = s.name;
    if (s.dashed) line.setAttribute("stroke-dasharray", "5 3");
    if (s.dots && s.points.length <= 200) {
      s.points.forEach(p => node(svg, "circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: s.color }));
    }
    node(svg, "rect", { x: legendX, y: T + 4, width: 10, height: 10, fill: s.color });
    const label = node(svg, "text", { x: legendX + 14, y: T + 13 }, s.name);
    legendX += 24 + 6.5 * s.name.length;
    label.style.fill = "#1d232b";
  });
}

// One horizontal bar per label; values in [0, max].
function barChart(el, labels, values, opts) {
  opts = opts || {};
  const W = 640, rowH = 26, L = 220, R = 60, T = 8;
  const H = T * 2 + rowH * labels.length;
  el.innerHTML = "";
  const svg = node(el, "svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "bars" });
  const max = opts.max || Math.max(1e-9, ...values.filter(v => v !== null));
  labels.forEach((label, i) => {
    const y = T + i * rowH, v = values[i];
    node(svg, "text", { x: L - 8, y: y + 17, "text-anchor": "end" }, label.length > 34 ? "…" + label.slice(-33) : label);
    if (v === null || v === undefined) return;
    node(svg, "rect", { x: L, y: y + 4, height: rowH - 8, width: Math.max(1, v / max * (W - L - R)), fill: PALETTE[i % PALETTE.length] });
    node(svg, "text", { x: L + v / max * (W - L - R) + 6, y: y + 17 }, fmt(v));
  });
}

// Paired differences with their 95% intervals, around a zero line.
function intervalChart(el, rows) {
  const W = 640, rowH = 26, L = 260, R = 20, T = 8;
  const H = T * 2 + rowH * rows.length + 18;
  el.innerHTML = "";
  const svg = node(el, "svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "differences" });
  const lim = Math.max(1e-9, ...rows.flatMap(r => [Math.abs(r.ci_low), Math.abs(r.ci_high), Math.abs(r.difference)]));
  const sx = v => L + (v + lim) / (2 * lim) * (W - L - R);
  node(svg, "line", { class: "axis", x1: sx(0), x2: sx(0), y1: T, y2: H - 18 });
  node(svg, "text", { x: sx(-lim), y: H - 4 }, fmt(-lim));
  node(svg, "text", { x: sx(lim), y: H - 4, "text-anchor": "end" }, fmt(lim));
  rows.forEach((r, i) => {
    const y = T + i * rowH + rowH / 2;
    const color = r.ci_low > 0 ? "#1a7f37" : r.ci_high < 0 ? "#cf222e" : "#6a737d";
    node(svg, "text", { x: L - 8, y: y + 4, "text-anchor": "end" }, `${r.b} − ${r.a} · ${r.metric}`.slice(-40));
    node(svg, "line", { x1: sx(r.ci_low), x2: sx(r.ci_high), y1: y, y2: y, stroke: color, "stroke-width": 2 });
    node(svg, "circle", { cx: sx(r.difference), cy: y, r: 4, fill: color });
  });
}

function readJSON(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

// A run's loss chart that keeps fetching new steps while the run is active.
function liveRun(el) {
  const id = el.dataset.run;
  const points = { train: [], valid: [] };
  let last = 0, status = el.dataset.status, total = +el.dataset.total || 0;
  const draw = () => lineChart(el, [
    { name: "train loss", color: "#1f77b4", points: points.train },
    { name: "validation loss", color: "#d62728", points: points.valid, dots: true },
  ], { xmax: total, title: "loss" });
  async function tick() {
    try {
      const res = await fetch(`/dashboard/api/runs/${encodeURIComponent(id)}/metrics?after=${last}`);
      const body = await res.json();
      for (const m of body.metrics) {
        if (m.train_loss !== null) points.train.push([m.step, m.train_loss]);
        if (m.valid_loss !== null) points.valid.push([m.step, m.valid_loss]);
        last = Math.max(last, m.step);
      }
      status = body.status; total = body.total_steps || total;
      document.querySelectorAll("[data-live=status]").forEach(b => { b.textContent = status; b.className = "badge " + status; });
      document.querySelectorAll("[data-live=progress]").forEach(p => { p.textContent = total ? `${last}/${total}` : String(last); });
      draw();
    } catch (e) { /* the server restarted: try again at the next tick */ }
    if (ACTIVE.includes(status)) setTimeout(tick, POLL_MS);
  }
  draw();
  tick();
}

// Several runs' loss curves on one chart (the side-by-side view).
async function compareRuns(el) {
  const ids = JSON.parse(el.dataset.runs);
  const series = [];
  let active = false;
  await Promise.all(ids.map(async (id, i) => {
    const body = await (await fetch(`/dashboard/api/runs/${encodeURIComponent(id)}/metrics`)).json();
    const color = PALETTE[i % PALETTE.length];
    series[2 * i] = { name: `${id.slice(0, 12)} train`, color, points: body.metrics.filter(m => m.train_loss !== null).map(m => [m.step, m.train_loss]) };
    series[2 * i + 1] = { name: `valid`, color, dashed: true, dots: true, points: body.metrics.filter(m => m.valid_loss !== null).map(m => [m.step, m.valid_loss]) };
    active = active || ACTIVE.includes(body.status);
  }));
  lineChart(el, series, { title: "loss" });
  if (active) setTimeout(() => compareRuns(el), POLL_MS);
}

// The runs table refreshes its status, progress and loss cells while any run on the page is active.
function liveTable(table) {
  async function tick() {
    const ids = [...table.querySelectorAll("tr[data-run]")].map(r => r.dataset.run);
    let active = false;
    try {
      const body = await (await fetch(`/dashboard/api/runs?ids=${ids.map(encodeURIComponent).join(",")}`)).json();
      for (const run of body.runs) {
        const row = table.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`);
        if (!row) continue;
        const badge = row.querySelector(".badge");
        badge.textContent = run.status; badge.className = "badge " + run.status;
        row.querySelector("[data-col=progress]").textContent = run.total_steps ? `${run.steps}/${run.total_steps}` : String(run.steps);
        row.querySelector("[data-col=train_loss]").textContent = fmt(run.train_loss);
        row.querySelector("[data-col=valid_loss]").textContent = fmt(run.valid_loss);
        active = active || ACTIVE.includes(run.status);
      }
    } catch (e) { active = true; }
    if (active) setTimeout(tick, POLL_MS);
  }
  if (table.querySelector("tr[data-active=true]")) setTimeout(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".chart[data-run]").forEach(liveRun);
  document.querySelectorAll(".chart[data-runs]").forEach(compareRuns);
  document.querySelectorAll("table[data-live-runs]").forEach(liveTable);
  document.querySelectorAll(".chart[data-bars]").forEach(el => {
    const data = readJSON(el.dataset.bars);
    barChart(el, data.labels, data.values, { max: data.max });
  });
  document.querySelectorAll(".chart[data-intervals]").forEach(el => intervalChart(el, readJSON(el.dataset.intervals)));
  document.querySelectorAll(".chart[data-lines]").forEach(el => {
    const data = readJSON(el.dataset.lines);
    lineChart(el, data.series, data.opts);
  });
});
