// The balancer's view: the deployment as a graph and tables, and plays routed by the balancer.
import { el, playUrl, rate, streamRows } from "./player.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

export const PLAYER_TITLE = "Player (through the balancer)";
export const SKELETON = `
<h2>Topology</h2>
<svg id="graph" role="img" aria-label="balancer, origins and edges"></svg>
<h2>Edges</h2>
<table>
  <thead><tr><th>edge</th><th>state</th><th>viewers</th><th>egress</th><th>load</th><th>streams</th><th>heartbeat</th></tr></thead>
  <tbody id="edges"></tbody>
</table>
<h2>Streams</h2>
<table>
  <thead><tr><th>stream</th><th>origin</th><th>bitrate</th><th>viewers by edge</th><th>play</th></tr></thead>
  <tbody id="streams"></tbody>
</table>`;

export const title = () => "livecdn console";

export function summary(snap) {
  const viewers = snap.edges.reduce((sum, e) => sum + e.viewers, 0);
  const inRotation = snap.edges.filter((e) => e.in_rotation).length;
  return (
    `policy ${snap.policy} · ${snap.edges.length} edges (${inRotation} in rotation) · ` +
    `${snap.origins.length} origins · ${viewers} viewers`
  );
}

/** Through the balancer: its 302 for HTTP-FLV and HLS; for WebSocket-FLV (browsers do not
 * follow a redirect on a WebSocket handshake) the edge it names at /api/route. */
export async function locate(key, proto, query) {
  if (proto !== "ws") return { url: playUrl(location.origin, key, proto, query) };
  const [app, name] = key.split("/");
  const ask = new URLSearchParams(query);
  ask.set("app", app);
  ask.set("name", name);
  ask.set("proto", "flv");
  const resp = await fetch(`/api/route?${ask}`);
  const answer = await resp.json();
  return resp.ok ? { url: answer.url.replace(/^http/, "ws") } : { error: answer.error };
}

function state(e) {
  if (e.in_rotation) return ["up", "up"];
  if (e.draining) return ["draining", "draining"];
  return ["out", `out of rotation: ${e.out_reason}`];
}

function box(svg, x, y, title, lines, cls) {
  const g = document.createElementNS(SVG, "g");
  for (const fill of ["#fff", null]) {
    const r = document.createElementNS(SVG, "rect");
    const size = { x: x - 60, y, width: 120, height: 22 + 14 * lines.length, rx: 6 };
    Object.entries(size).forEach(([k, v]) => r.setAttribute(k, v));
    if (fill) {
      r.setAttribute("fill", fill); // hides the lines behind the box
    } else {
      r.setAttribute("class", cls);
      r.setAttribute("fill-opacity", "0.15");
      r.setAttribute("stroke", "currentColor");
    }
    g.append(r);
  }
  [title, ...lines].forEach((t, i) => {
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", x);
    text.setAttribute("y", y + 15 + 14 * i);
    text.setAttribute("text-anchor", "middle");
    text.textContent = t;
    g.append(text);
  });
  g.dataset.node = title;
  svg.append(g);
}

function line(svg, x1, y1, x2, y2, dashed) {
  const l = document.createElementNS(SVG, "line");
  Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => l.setAttribute(k, v));
  if (dashed) l.setAttribute("stroke-dasharray", "4 3");
  svg.append(l);
}

/** Balancer on top, origins below, edges at the bottom; the balancer's lines are its
 * control plane (heartbeats), the origins' lines the edges' pulls. */
function graph(snap) {
  const svg = $("graph");
  svg.replaceChildren();
  const n = Math.max(snap.edges.length, snap.origins.length, 1);
  const width = Math.max(480, 140 * n);
  svg.setAttribute("viewBox", `0 0 ${width} 250`);
  svg.setAttribute("width", "100%");
  const xs = (count) => Array.from({ length: count }, (_, i) => ((i + 0.5) * width) / count);
  const edgeX = xs(snap.edges.length);
  const originX = xs(snap.origins.length);
  for (const ex of edgeX) {
    line(svg, width / 2, 40, ex, 170, false);
    for (const ox of originX) line(svg, ox, 120, ex, 170, true);
  }
  box(svg, width / 2, 10, "balancer", [snap.policy], "up");
  snap.origins.forEach((o, i) => box(svg, originX[i], 90, o.id, [`streams: ${o.streams}`], "up"));
  snap.edges.forEach((e, i) => {
    const [cls, why] = state(e);
    box(svg, edgeX[i], 170, e.id, [`viewers: ${e.viewers}`, rate(e.egress_bps), why.slice(0, 18)], cls);
  });
}

export function render(snap, play) {
  graph(snap);
  const edges = $("edges");
  edges.replaceChildren();
  for (const e of snap.edges) {
    const [cls, why] = state(e);
    const tr = el("tr");
    tr.dataset.edge = e.id;
    tr.append(el("td", e.id), el("td", why, cls), el("td", e.viewers), el("td", rate(e.egress_bps)));
    tr.append(el("td", e.load), el("td", Object.keys(e.streams).length));
    tr.append(el("td", e.last_heartbeat_s_ago === null ? "never" : `${e.last_heartbeat_s_ago} s ago`));
    edges.append(tr);
  }
  const rows = snap.streams.map((s) => {
    const by = Object.entries(s.edges).map(([id, n]) => `${id} ${n}`).join(", ");
    const viewers = `${s.viewers}${by ? ` (${by})` : ""}`;
    return [s.stream, [s.stream, s.origin ?? "–", rate(s.bitrate), viewers]];
  });
  streamRows($("streams"), rows, play);
}
