
"use strict";
// weir's traffic graph: polls /graph.json (same origin) and draws it as SVG.
// Every name comes from pods or the config: written with textContent and
// setAttribute only, never parsed as markup.
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const POLL_MS = 2000;
  const NODE_W = 190, NODE_H = 46, COL_W = 420, ROW_H = 78, PAD = 30;
  const svg = document.getElementById("graph");
  const status = document.getElementById("status");
  // The previous sample: its time (ms) and its edges by key.
  let previous = null;

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function key(e) { return e.from + "\u0000" + e.to; }

  // The q quantile (seconds) of cumulative counts `c` at `bounds` (the last
  // count: every sample), interpolated within its bucket; null when empty.
  function quantile(bounds, c, q) {
    const total = c[c.length - 1];
    if (!total) return null;
    const rank = Math.max(q * total, 1);
    let low = 0, below = 0;
    for (let i = 0; i < bounds.length; i++) {
      if (c[i] >= rank) return low + (bounds[i] - low) * (rank - below) / (c[i] - below);
      low = bounds[i];
      below = c[i];
    }
    return low;
  }

  // Rate, error share and p99 of an edge: over the time since the previous
  // sample when there is one, else totals since the agent started.
  function measure(e, old, seconds, bounds) {
    const ok = old && seconds > 0 && e.requests >= old.requests &&
      e.latency.length === old.latency.length;
    const n = ok ? e.requests - old.requests : e.requests;
    const errors = ok ? e.errors - old.errors : e.errors;
    const latency = ok ? e.latency.map((v, i) => v - old.latency[i]) : e.latency;
    return {
      windowed: ok,
      requests: n,
      rate: ok ? n / seconds : null,
      errorShare: n > 0 ? errors / n : 0,
      p99: latency.length ? quantile(bounds, latency, 0.99) : null,
    };
  }

  function ms(seconds) {
    if (seconds === null) return "p99 -";
    const v = seconds * 1000;
    return "p99 " + (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms";
  }

  function short(text) { return text.length > 26 ? text.slice(0, 25) + "\u2026" : text; }

  // Columns by the longest path from a node with no caller (cycles bounded).
  function columns(nodes, edges) {
    const depth = new Map(nodes.map((n) => [n.id, 0]));
    for (let round = 0; round < nodes.length; round++) {
      let changed = false;
      for (const e of edges) {
        const d = depth.get(e.from) + 1;
        if (e.from !== e.to && d > depth.get(e.to) && d < nodes.length) {
          depth.set(e.to, d);
          changed = true;
        }
      }
      if (!changed) break;
    }
    const cols = [];
    const order = { pod: 0, service: 1, cluster: 2 };
    for (const n of nodes) (cols[depth.get(n.id)] = cols[depth.get(n.id)] || []).push(n);
    for (let c = 0; c < cols.length; c++) cols[c] = cols[c] || [];
    const place = new Map();
    cols.forEach((col, c) => {
      col.sort((a, b) => order[a.kind] - order[b.kind] || (a.name < b.name ? -1 : 1));
      col.forEach((n, r) => place.set(n.id, { x: PAD + c * COL_W, y: PAD + r * ROW_H }));
    });
    const rows = Math.max(1, ...cols.map((col) => col.length));
    return { place, width: PAD * 2 + Math.max(cols.length - 1, 0) * COL_W + NODE_W, height: PAD * 2 + rows * ROW_H };
  }

  function drawNode(n, at) {
    const g = el("g", {
      class: "node " + n.kind, "data-node": n.id, "data-kind": n.kind,
      transform: "translate(" + at.x + "," + at.y + ")",
    });
    g.appendChild(el("title", {}, n.id + (n.workload ? " (workload " + n.workload + ")" : "")));
    g.appendChild(el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    const kind = n.kind + (n.workload && n.kind === "pod" ? " \u00b7 " + short(n.workload) : "");
    g.appendChild(el("text", { class: "kind", x: 10, y: 16 }, kind));
    g.appendChild(el("text", { class: "name", x: 10, y: 35 }, short(n.name)));
    return g;
  }

  function drawEdge(e, m, a, b) {
    const cls = m.requests === 0 ? "idle" : m.errorShare > 0.05 ? "bad" : m.errorShare > 0 ? "warn" : "ok";
    const g = el("g", {
      class: "edge " + cls, "data-edge": e.from + " to " + e.to, "data-from": e.from, "data-to": e.to,
      "data-requests": e.requests, "data-errors": e.errors,
      "data-rate": m.rate === null ? "" : m.rate.toFixed(3),
      "data-error-share": m.errorShare.toFixed(4),
      "data-p99-ms": m.p99 === null ? "" : (m.p99 * 1000).toFixed(3),
    });
    let d, lx, ly;
    if (e.from === e.to) {
      const x = a.x + NODE_W - 20, y = a.y;
      d = "M" + x + "," + y + " c 0,-40 50,-40 20,0";
      lx = x + 10; ly = y - 34;
    } else {
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 4, y2 = b.y + NODE_H / 2;
      const bend = Math.max(40, Math.abs(x2 - x1) / 2);
      d = "M" + x1 + "," + y1 + " C" + (x1 + bend) + "," + y1 + " " + (x2 - bend) + "," + y2 + " " + x2 + "," + y2;
      lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 - 6;
    }
    g.appendChild(el("title", {}, e.from + " \u2192 " + e.to +
      (e.latency_of ? " (latency: the " + e.latency_of + "'s histogram)" : "")));
    g.appendChild(el("path", { d: d, "marker-end": "url(#arrow)" }));
    const volume = m.windowed ? m.rate.toFixed(1) + " rps" : e.requests + " req";
    const text = volume + " \u00b7 " + (m.errorShare * 100).toFixed(1) + "% 5xx \u00b7 " + ms(m.p99);
    g.appendChild(el("text", { x: lx, y: ly, "text-anchor": "middle" }, text));
    return g;
  }

  function render(graph, now) {
    const old = previous;
    const seconds = old ? (now - old.time) / 1000 : 0;
    const layout = columns(graph.nodes, graph.edges);
    const parts = [];
    const defs = el("defs");
    const marker = el("marker", {
      id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    });
    marker.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z" }));
    defs.appendChild(marker);
    parts.push(defs);
    let windowed = false;
    for (const e of graph.edges) {
      const a = layout.place.get(e.from), b = layout.place.get(e.to);
      if (!a || !b) continue;
      const m = measure(e, old && old.edges.get(key(e)), seconds, graph.bounds);
      windowed = windowed || m.windowed;
      parts.push(drawEdge(e, m, a, b));
    }
    for (const n of graph.nodes) parts.push(drawNode(n, layout.place.get(n.id)));
    if (graph.nodes.length === 0) {
      parts.push(el("text", { class: "empty", x: PAD, y: PAD + 20 }, "No requests yet: the graph fills in as enrolled pods send HTTP."));
    }
    const w = Math.max(layout.width, 400), h = Math.max(layout.height, 120);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("data-nodes", graph.nodes.length);
    svg.setAttribute("data-edges", graph.edges.length);
    svg.replaceChildren(...parts);
    previous = { time: now, edges: new Map(graph.edges.map((e) => [key(e), e])) };
    let line = graph.nodes.length + " nodes, " + graph.edges.length + " edges \u00b7 " +
      (windowed ? "rates over the last " + seconds.toFixed(1) + " s" : "totals since the agent started") +
      " \u00b7 updated " + new Date(now).toLocaleTimeString();
    if (graph.dropped_edges > 0) {
      line += " \u00b7 " + graph.dropped_edges + " quieter edges not drawn (at most " +
        graph.max_nodes + " nodes, " + graph.max_edges + " edges)";
    }
    status.className = "";
    status.textContent = line;
  }

  async function poll() {
    try {
      const r = await fetch("/graph.json", { cache: "no-store", credentials: "omit" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json(), Date.now());
    } catch (err) {
      status.className = "failed";
      status.textContent = "could not load /graph.json: " + err;
    }
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
