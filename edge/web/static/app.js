// The station page: polls the daemon's read-only /api and shows it. No framework, no build step.
"use strict";

const LIVE_FPS_DEFAULT = 4;
const enc = encodeURIComponent;

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function fmt(x, digits = 2) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }

function setVerdict(badge, score, verdict, norm, frameId) {
  badge.textContent = verdict ? verdict.toUpperCase() : "…";
  badge.className = "badge " + (verdict || "");
  if (score) score.textContent = norm === null || norm === undefined ? "" : `${Number(norm).toFixed(3)} × threshold`;
  badge.dataset.frameId = frameId ?? "";
}

// Live view: fetch the newest snapshot, show it with the verdict of exactly that frame (from
// its headers), then wait before asking again: a slow link lowers the rate, never queues frames.
function liveLoop(camera, img, badge, score, heatmapBox, fps) {
  let url = null;
  async function tick() {
    const hm = heatmapBox && heatmapBox.checked ? 1 : 0;
    if (document.hidden) { setTimeout(tick, 1000); return; }  // nobody looks: the daemon encodes nothing
    try {
      const r = await fetch(`/api/cameras/${enc(camera)}/snapshot.jpg?heatmap=${hm}`, { cache: "no-store" });
      if (r.status === 200) {
        const blob = await r.blob();
        const next = URL.createObjectURL(blob);
        img.onload = () => { if (url) URL.revokeObjectURL(url); url = next; };
        img.src = next;
        img.dataset.frameId = r.headers.get("X-Frame-Id");
        setVerdict(badge, score, r.headers.get("X-Verdict"), r.headers.get("X-Normalised-Score"),
                   r.headers.get("X-Frame-Id"));
      }
    } catch (e) { /* daemon restarting: try again */ }
    setTimeout(tick, 1000 / (typeof fps === "function" ? fps() : fps));
  }
  tick();
}

// Rows are rebuilt only when the keys change; otherwise only the cells whose text changed are
// touched, so a refresh each second costs the browser no new layout for unchanged values.
function kvRows(table, rows) {
  const keys = rows.map(([k]) => k).join("\n");
  if (table.dataset.keys !== keys) {
    table.replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v ?? "–"))));
    table.dataset.keys = keys;
    return;
  }
  rows.forEach(([, v], i) => {
    const td = table.rows[i].cells[1], text = String(v ?? "–");
    if (td.textContent !== text) td.textContent = text;
  });
}

function brokerPill(b) {
  const p = document.getElementById("broker");
  p.textContent = b.connected ? "broker connected" : "broker offline";
  p.className = "pill " + (b.connected ? "ok" : "bad");
}

function recalText(rc) {
  if (!rc) return "–";
  const extra = rc.progress !== undefined ? ` ${Math.round(100 * rc.progress)} %` : "";
  return rc.state + extra + (rc.error ? ` (${rc.error})` : "");
}

function healthRows(st, rates, extra = []) {
  const lat = (st.latency_ms || {}).total || {};
  return [
    ["camera", st.camera + (st.camera_error ? ` (${st.camera_error})` : "")],
    ["inspected", st.results], ["failed", st.fails],
    ["fail rate 5 min", rates ? pct(rates["5m"].fail_rate) : "–"],
    ["latency p50 / p99", `${fmt(lat.p50, 1)} / ${fmt(lat.p99, 1)} ms`],
    ["inspections/s", fmt(st.fps, 1)], ["dropped frames", st.dropped],
    ["backend", st.backend], ["model version", st.model_version], ...extra,
  ];
}

// ---- station page -------------------------------------------------------------------
function stationPage() {
  const grid = document.getElementById("cameras");
  const cards = {};
  async function refresh() {
    let s;
    try { s = await getJSON("/api/station"); } catch (e) { return; }
    brokerPill(s.broker);
    document.getElementById("uptime").textContent = `up ${Math.round(s.uptime_s)} s`;
    for (const [name, c] of Object.entries(s.cameras)) {
      if (!cards[name]) {
        const link = el("a", { href: `/camera/${enc(name)}` }, name);
        const card = el("section", { class: "card", "data-camera": name }, el("h2", {}, link));
        const table = el("table", { class: "kv" });
        if (c.status.model === "error") {
          card.append(el("p", { class: "error" }, "not started: " + c.status.model_error));
        } else {
          const img = el("img", { alt: `live view of ${name}` });
          const badge = el("div", { class: "badge" }, "…"), score = el("div", { class: "score" });
          card.append(el("div", { class: "live" }, img, badge, score));
          liveLoop(name, img, badge, score, null, Math.min(2, s.live_fps || LIVE_FPS_DEFAULT));
        }
        card.append(table);
        grid.append(card);
        cards[name] = table;
      }
      if (c.status.model !== "error") {
        kvRows(cards[name], healthRows(c.status, c.fail_rates, [["recalibration", recalText(c.recalibration)]]));
      }
    }
  }
  refresh();
  setInterval(refresh, 1000);
}

// ---- camera page --------------------------------------------------------------------
function drawChart(canvas, points) {
  const dpr = window.devicePixelRatio || 1;
  const W = canvas.clientWidth, H = canvas.clientHeight;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);  // reallocates: only on resize
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  const L = 40, R = 10, T = 10, B = 22;
  const now = Date.now() / 1000;
  const t0 = points.length ? Math.min(points[0][0], now - 60) : now - 60;
  const ymax = Math.max(2, ...points.map(p => p[1])) * 1.05;
  const x = t => L + (W - L - R) * (t - t0) / Math.max(1, now - t0);
  const y = v => T + (H - T - B) * (1 - v / ymax);
  g.font = "11px system-ui"; g.fillStyle = "#6b7280"; g.strokeStyle = "#e5e7eb"; g.lineWidth = 1;
  for (let v = 0; v <= ymax; v += ymax > 6 ? 2 : 0.5) {
    g.beginPath(); g.moveTo(L, y(v)); g.lineTo(W - R, y(v)); g.stroke();
    g.fillText(v.toFixed(1), 4, y(v) + 4);
  }
  const span = now - t0;
  for (let i = 0; i <= 4; i++) {
    const t = t0 + span * i / 4;
    g.fillText(i === 4 ? "now" : `-${Math.round(now - t)} s`, x(t) - 14, H - 6);
  }
  g.strokeStyle = "#d9342b"; g.setLineDash([6, 4]); g.lineWidth = 1.5;  // the threshold
  g.beginPath(); g.moveTo(L, y(1)); g.lineTo(W - R, y(1)); g.stroke();
  g.setLineDash([]); g.fillStyle = "#d9342b"; g.fillText("threshold", W - R - 52, y(1) - 4);
  g.strokeStyle = "#64748b"; g.lineWidth = 1; g.beginPath();
  points.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
  g.stroke();
  for (const failed of [false, true]) {  // one path per colour, not a fill per point
    g.fillStyle = failed ? "#d9342b" : "#2e9e44";
    g.beginPath();
    for (const p of points) if (!!p[2] === failed) g.rect(x(p[0]) - 1.5, y(p[1]) - 1.5, 3, 3);
    g.fill();
  }
  canvas.dataset.points = points.length;
}

function cameraPage() {
  const name = decodeURIComponent(location.pathname.split("/").pop());
  const base = `/api/cameras/${enc(name)}`;
  document.getElementById("name").textContent = name;
  document.title = `${name} · patchcore-edge`;
  const img = document.getElementById("live");
  const badge = document.getElementById("verdict"), score = document.getElementById("score");
  const heatmapBox = document.getElementById("heatmap");
  const err = document.getElementById("error");
  let points = [], since = 0, shown = "";

  async function refresh() {
    let c;
    try { c = await getJSON(base); } catch (e) {
      err.hidden = false; err.textContent = `no data for camera ${name}: ${e.message}`; return;
    }
    err.hidden = true;
    brokerPill(c.broker);
    const cs = document.getElementById("camstatus");
    cs.textContent = "camera " + c.status.camera;
    cs.className = "pill " + (c.status.camera === "online" ? "ok" : "bad");
    kvRows(document.getElementById("health"), healthRows(c.status, c.fail_rates, [
      ["fail rate 1 / 15 min", `${pct(c.fail_rates["1m"].fail_rate)} / ${pct(c.fail_rates["15m"].fail_rate)}`],
      ["threshold (raw score)", fmt(c.threshold, 4)],
      ["recalibration", recalText(c.recalibration)],
      ["frame / ROI", c.frame ? `${c.frame.width}×${c.frame.height}` + (c.roi ? ` / ${c.roi.join(", ")}` : " / whole frame") : "–"],
    ]));
  }
  async function history() {
    try {
      const h = await getJSON(`${base}/history?since=${since}`);
      points = points.concat(h.points);
      if (points.length > 3000) points = points.slice(points.length - 3000);
      if (points.length) since = points[points.length - 1][0];
    } catch (e) { /* keep what we have */ }
    drawChart(document.getElementById("chart"), points);
  }
  async function failures() {
    let f;
    try { f = await getJSON(`${base}/failures`); } catch (e) { return; }
    document.getElementById("failcount").textContent = `(${f.failures.length} kept, newest first)`;
    const key = f.failures.map(x => x.id).join(",");
    if (key === shown) return;
    shown = key;
    document.getElementById("failures").replaceChildren(...f.failures.map(x => {
      const when = new Date(x.timestamp).toLocaleTimeString();
      const fig = el("figure", { "data-id": x.id }, el("img", { src: x.thumb, alt: `failure ${x.frame_id}` }),
        el("figcaption", {}, `${when} · ${Number(x.normalised_score).toFixed(2)}`));
      fig.addEventListener("click", () => {
        document.getElementById("zoomimg").src = x.image;
        document.getElementById("zoomcap").textContent =
          `frame ${x.frame_id}, ${x.timestamp}, score ${x.score} (${Number(x.normalised_score).toFixed(3)} × threshold), model ${x.model_version}`;
        document.getElementById("zoom").showModal();
      });
      return fig;
    }));
  }
  async function versions() {
    let v;
    try { v = await getJSON(`${base}/versions`); } catch (e) { return; }
    document.querySelector("#versions tbody").replaceChildren(...v.versions.map(x =>
      el("tr", { class: x.active ? "active" : "" }, el("td", {}, x.version), el("td", {}, x.created ?? "–"),
        el("td", {}, fmt(x.threshold, 4)), el("td", {}, x.coreset_size ?? "–"),
        el("td", {}, typeof x.backbone === "string" ? x.backbone : JSON.stringify(x.backbone ?? "–")),
        el("td", {}, x.active ? "active" : ""))));
  }
  let fps = LIVE_FPS_DEFAULT;  // the first frame is asked for at once; the configured rate follows
  liveLoop(name, img, badge, score, heatmapBox, () => fps);
  getJSON("/api/station").then(s => { fps = s.live_fps || LIVE_FPS_DEFAULT; }).catch(() => {});
  refresh(); history(); failures(); versions();
  setInterval(refresh, 1000); setInterval(history, 1000); setInterval(failures, 2000); setInterval(versions, 10000);
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "station") stationPage(); else cameraPage();
});
