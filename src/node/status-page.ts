/**
 * The live status page a peer serves at `/` (see http.ts): one self-contained HTML document
 * (no external scripts, styles or fonts) that polls `/status.json` every second and draws
 * the members, the round in progress, the hash-agreement history, a loss plot per round and
 * the rejections. All text from the peer is set with textContent (never parsed as HTML).
 */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flora peer</title>
<style>
  :root { color-scheme: light; --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --ok: #12805c; --warn: #b54708; --bad: #c01048; --accent: #3056d3; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #f7f8fa; }
  header { padding: 14px 22px; background: #fff; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap; gap: 8px 22px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
  td .mono { white-space: nowrap; }
  td .addrs { white-space: normal; word-break: break-all; }
  .muted { color: var(--muted); }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; padding: 16px 22px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; min-width: 0; }
  section h2 { font-size: 14px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 4px 8px 4px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { font-weight: 600; color: var(--muted); font-size: 12px; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; background: #eef2ff; color: var(--accent); }
  .badge.ok { background: #ecfdf3; color: var(--ok); } .badge.warn { background: #fffaeb; color: var(--warn); } .badge.bad { background: #fff1f3; color: var(--bad); }
  .dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; background: var(--bad); }
  .dot.on { background: var(--ok); }
  .kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; }
  .bar { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; margin-top: 6px; }
  .bar > div { height: 100%; background: var(--accent); }
  svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
  .scroll { max-height: 320px; overflow: auto; }
  #error { display: none; margin: 12px 22px 0; padding: 8px 12px; border-radius: 6px; background: #fff1f3; color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1>flora peer <span id="peer" class="mono"></span></h1>
  <span>swarm <span id="swarm" class="mono"></span></span>
  <span id="status" class="badge"></span>
  <span class="muted">head round <b id="head"></b> <span id="headHash" class="mono"></span></span>
  <span class="muted" id="version"></span>
</header>
<div id="error"></div>
<main>
  <section>
    <h2>Round in progress</h2>
    <div id="current" class="kv"></div>
    <div class="bar"><div id="progress" style="width:0"></div></div>
  </section>
  <section>
    <h2>Loss per round</h2>
    <svg id="plot" viewBox="0 0 460 200" width="100%" role="img" aria-label="loss per round"></svg>
  </section>
  <section>
    <h2>Members <span id="memberCount" class="muted"></span></h2>
    <div class="scroll"><table id="members"><thead><tr><th></th><th>peer</th><th>rank</th><th>last merged</th><th>addresses</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section>
    <h2>Hash agreement</h2>
    <div class="scroll"><table id="history"><thead><tr><th>round</th><th>state hash</th><th>certified by</th><th>contributors</th><th>view</th><th>proposer</th><th>time</th><th>eval loss / acc</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section>
    <h2>Rejections</h2>
    <div id="reasons"></div>
    <div class="scroll"><table id="rejections"><thead><tr><th>when</th><th>peer</th><th>reason</th><th>detail</th></tr></thead><tbody></tbody></table></div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const short = (id) => id ? "\\u2026" + id.slice(-8) : "-";
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text != null) e.textContent = String(text); if (cls) e.className = cls; return e; };
const row = (cells) => { const tr = document.createElement("tr"); for (const c of cells) { const td = document.createElement("td"); if (c instanceof Node) td.appendChild(c); else td.textContent = c == null ? "-" : String(c); tr.appendChild(td); } return tr; };
const secs = (ms) => (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s";
const PHASES = { training: "training locally", collecting: "collecting adapters, proposing, voting", committing: "decided: merging and committing", "catching-up": "catching up by state sync" };

function render(s) {
  $("peer").textContent = short(s.peerId); $("peer").title = s.peerId;
  $("swarm").textContent = s.swarmId.slice(0, 16);
  $("version").textContent = "flora " + s.version + (s.rank != null ? " \\u00b7 rank " + s.rank : "");
  const st = $("status"); st.textContent = s.stalled ? "stalled" : s.status;
  st.className = "badge " + (s.stalled ? "bad" : s.status === "done" ? "ok" : s.status === "waiting" ? "warn" : "");
  $("head").textContent = s.head.round + (s.rounds != null ? " / " + s.rounds : "");
  $("headHash").textContent = s.head.stateHash.slice(0, 16);

  const cur = $("current"); cur.replaceChildren();
  const kv = (k, v) => { cur.appendChild(el("span", k, "muted")); cur.appendChild(el("span", v)); };
  if (s.current) {
    kv("round", s.current.round + (s.rounds != null ? " of " + s.rounds : ""));
    kv("phase", PHASES[s.current.phase] || s.current.phase);
    kv("view", s.current.view + (s.current.view > 0 ? " (fallback proposer)" : ""));
    kv("adapters", s.current.adapters + " of " + s.current.expected + " expected");
    kv("elapsed", secs(s.current.elapsedMs));
    $("progress").style.width = Math.min(100, 100 * s.current.adapters / Math.max(1, s.current.expected)) + "%";
  } else {
    kv("state", s.stalled ? "round " + s.stalled.round + " stalled: " + s.stalled.reason : s.status === "waiting" ? "waiting for swarm members" : s.status === "done" ? "all rounds done" : s.status);
    $("progress").style.width = s.status === "done" ? "100%" : "0";
  }

  const members = s.members;
  $("memberCount").textContent = "(" + members.filter((m) => m.connected).length + " connected)";
  const mb = $("members").tBodies[0]; mb.replaceChildren();
  for (const m of members) {
    const dot = el("span", null, "dot" + (m.connected ? " on" : "")); dot.title = m.connected ? "connected" : "not connected";
    const id = el("span", short(m.peerId), "mono"); id.title = m.peerId;
    mb.appendChild(row([dot, id, m.rank, m.lastContributed, el("span", m.addresses.map((a) => a.replace(/\\/p2p\\/[^/]+$/, "")).join(" ") || "-", "mono addrs")]));
  }

  const hb = $("history").tBodies[0]; hb.replaceChildren();
  for (const r of [...s.history].reverse()) {
    const hash = el("span", r.stateHash.slice(0, 16), "mono"); hash.title = r.stateHash;
    const cert = el("span", r.certifiedBy.length + " of " + r.members, "badge ok"); cert.title = r.certifiedBy.join("\\n");
    const prop = el("span", short(r.proposer), "mono"); prop.title = r.proposer;
    const ev = r.evalLoss == null ? "-" : r.evalLoss.toFixed(4) + (r.evalAccuracy == null ? "" : " / " + (100 * r.evalAccuracy).toFixed(1) + "%");
    hb.appendChild(row([r.round, hash, cert, r.contributors.length, r.view, prop, r.synced ? "caught up (" + r.synced + ")" : secs(r.roundMs), ev]));
  }

  plot(s);

  const reasons = $("reasons"); reasons.replaceChildren();
  const entries = Object.entries(s.rejections.byReason).sort((a, b) => b[1] - a[1]);
  if (entries.length === 0) reasons.appendChild(el("span", "none", "muted"));
  for (const [reason, n] of entries) { reasons.appendChild(el("span", reason + " " + n, "badge bad")); reasons.appendChild(document.createTextNode(" ")); }
  const rb = $("rejections").tBodies[0]; rb.replaceChildren();
  for (const r of s.rejections.recent) rb.appendChild(row([new Date(r.at).toLocaleTimeString(), el("span", short(r.peerId), "mono"), r.reason, r.detail]));
}

function plot(s) {
  const svg = $("plot"); svg.replaceChildren();
  const NS = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, text) => { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text != null) e.textContent = text; svg.appendChild(e); return e; };
  const evalPts = s.history.filter((r) => r.evalLoss != null).map((r) => [r.round, r.evalLoss]);
  if (s.genesisEvalLoss != null) evalPts.unshift([0, s.genesisEvalLoss]);
  const trainPts = s.history.filter((r) => r.trainLoss != null).map((r) => [r.round, r.trainLoss]);
  const series = [["eval loss (agreed weights)", evalPts, "#3056d3"], ["local train loss", trainPts, "#e04f16"]].filter((x) => x[1].length > 0);
  if (series.length === 0) { mk("text", { x: 16, y: 100 }, "no losses reported yet"); return; }
  const all = series.flatMap((x) => x[1]);
  const x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]), x0 + 1);
  let y0 = Math.min(...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const L = 54, R = 450, T = 26, B = 176;
  const X = (x) => L + (R - L) * (x - x0) / (x1 - x0), Y = (y) => B - (B - T) * (y - y0) / (y1 - y0);
  mk("line", { x1: L, y1: B, x2: R, y2: B, stroke: "#d0d5dd" }); mk("line", { x1: L, y1: T, x2: L, y2: B, stroke: "#d0d5dd" });
  mk("text", { x: L - 6, y: T + 4, "text-anchor": "end" }, y1.toFixed(4)); mk("text", { x: L - 6, y: B, "text-anchor": "end" }, y0.toFixed(4));
  mk("text", { x: L, y: B + 16 }, "round " + x0); mk("text", { x: R, y: B + 16, "text-anchor": "end" }, "round " + x1);
  let lx = L;
  for (const [name, pts, color] of series) {
    mk("polyline", { points: pts.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" "), fill: "none", stroke: color, "stroke-width": 2, "data-series": name });
    for (const p of pts) mk("circle", { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.5, fill: color });
    mk("rect", { x: lx, y: 8, width: 10, height: 10, fill: color }); mk("text", { x: lx + 14, y: 17 }, name); lx += 190;
  }
}

async function tick() {
  try {
    const res = await fetch("/status.json", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    render(await res.json());
    $("error").style.display = "none";
    document.body.dataset.loaded = "1";
  } catch (err) {
    $("error").textContent = "cannot reach the peer: " + err.message;
    $("error").style.display = "block";
  }
}
tick(); setInterval(tick, 1000);
</script>
</body>
</html>
`
