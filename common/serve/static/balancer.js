// The balancer's view: the deployment as a graph, tables and charts, and plays routed by the
// balancer. With a launcher in the URL fragment (a topology started by `topology up`), also
// its nodes, links and loads, merged with the balancer's view, and its actions; with only an
// admin token there (#admin=TOKEN), drain and undrain through the balancer's admin API.
import { actionButton, adminToken, authorized, said, streamPath } from "./actions.js";
import { Chart } from "./charts.js";
import { draw, linkText } from "./graph.js";
import { Launcher, NodeFeeds, fromFragment } from "./launcher.js";
import { media } from "./node.js";
import { el, named, playUrl, rate, streamRows } from "./player.js";

const $ = (id) => document.getElementById(id);

export const PLAYER_TITLE = "Player (through the balancer)";
export const SKELETON = `
<h2>Topology</h2>
<svg id="graph" role="img" aria-label="balancer, origins and edges"></svg>
<p id="action-status" role="status"></p>
<h2>Edges</h2>
<p id="edges-actions"></p>
<table>
  <thead><tr><th>edge</th><th>state</th><th>viewers</th><th>egress</th><th>load</th><th>heartbeat</th><th>viewers by protocol</th><th>upstreams</th><th>HLS (cache hits)</th><th class="act"></th></tr></thead>
  <tbody id="edges"></tbody>
</table>
<div id="links-part" hidden>
<h2>Links</h2>
<table>
  <thead><tr><th>link</th><th>state</th><th>emulated</th><th>set delay ms, loss %, rate kb/s</th></tr></thead>
  <tbody id="links"></tbody>
</table>
</div>
<h2>Streams</h2>
<table>
  <thead><tr><th>stream</th><th>origin</th><th>bitrate</th><th>viewers by edge</th><th>media</th><th>play</th></tr></thead>
  <tbody id="streams"></tbody>
</table>
<div id="charts-part">
<h2>Last minutes</h2>
<div id="charts" class="charts"></div>
</div>
<div id="loads-part" hidden>
<h2>Load runs</h2>
<table>
  <thead><tr><th>load</th><th>profile</th><th>players</th><th>state</th><th></th></tr></thead>
  <tbody id="loads"></tbody>
</table>
<div id="load-charts" class="charts"></div>
</div>`;

const LOAD_POLL_MS = 2000;
const LAUNCHER_DOWN = "the launcher does not answer (retrying)";

let launcher = null; // the launcher named in the fragment, if any
const admin = adminToken(); // the balancer's admin token the fragment names, if any
let topo = null; // its last /api/topology
let last = null; // the balancer's last snapshot
const feeds = new NodeFeeds();
let charts = null;
let loadCharts = null;
const loadSamples = new Map(); // load index -> samples (the launcher bounds them)
const loadFetched = new Map(); // load index -> its state when its samples were fetched
let polling = false;

export const title = () => "livecdn console";

export function summary(snap) {
  const procs = processes();
  const viewers = snap.edges.reduce((sum, e) => sum + (heard(e, procs.get(e.id))?.viewers ?? 0), 0);
  const inRotation = snap.edges.filter((e) => e.in_rotation).length;
  const name = topo ? `topology ${topo.name} · ` : "";
  return (
    `${name}policy ${snap.policy} · ${snap.edges.length} edges (${inRotation} in rotation) · ` +
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

/** An edge's health: [css class, words] from the balancer's entry `b` and the launcher's
 * node `n` (either may be missing). */
function state(b, n) {
  if (n?.state === "stopped") {
    if (b?.in_rotation) return ["out", "stopped (the balancer has not noticed yet)"];
    return ["out", b ? `out of rotation: ${b.out_reason} (stopped)` : "stopped"];
  }
  if (!b && n?.balanced) return ["out", "not heard by the balancer"];
  if (!b) return ["up", "running, not balanced"];
  if (b.in_rotation) return ["up", "up"];
  if (b.draining) return ["draining", "draining"];
  return ["out", `out of rotation: ${b.out_reason}`];
}

/** The launcher's nodes by name (none without a launcher). */
const processes = () => new Map((topo?.nodes ?? []).map((n) => [n.name, n]));

/** The balancer's entry of an edge whose process runs (a stopped one's is its last words). */
const heard = (b, n) => (n?.state === "stopped" ? null : b);

/** A button that POSTs `path` (with `body()` if given) to the launcher. */
const action = (text, what, path, body = null) =>
  actionButton(text, what, (payload) => launcher.post(path, payload), body);

/** A button that POSTs `path` to the balancer's own admin API with the fragment's token. */
const adminAction = (text, what, path) =>
  actionButton(text, what, () => authorized("POST", path, admin, undefined, "the balancer"));

/** Keep one row per key in `tbody` (made once by `make(key)`, so buttons and forms in it
 * survive updates), in the order of `keys`; the rows. */
function keyedRows(tbody, keys, make) {
  const have = new Map([...tbody.rows].map((tr) => [tr.dataset.key, tr]));
  const rows = keys.map((k) => have.get(k) ?? make(k));
  if (rows.length !== tbody.rows.length || rows.some((tr, i) => tbody.rows[i] !== tr)) {
    tbody.replaceChildren(...rows);
  }
  return rows;
}

function row(key, cells) {
  const tr = el("tr");
  tr.dataset.key = key;
  for (let i = 0; i < cells; i++) tr.append(el("td"));
  return tr;
}

function fill(tr, values) {
  values.forEach((v, i) => {
    tr.cells[i].textContent = v === null || v === undefined ? "–" : String(v);
  });
}

function edgeRow(name) {
  const tr = row(name, 10);
  tr.dataset.edge = name;
  const enc = encodeURIComponent(name);
  if (launcher?.token) {
    tr.cells[9].append(
      action("kill", `kill ${name}`, `/api/nodes/${enc}/kill`),
      action("restart", `restart ${name}`, `/api/nodes/${enc}/restart`),
    );
  }
  const post = launcher?.token ? action : admin ? adminAction : null;
  if (post) {
    tr.cells[9].append(
      post("drain", `drain ${name}`, `/api/edges/${enc}/drain`),
      post("undrain", `undrain ${name}`, `/api/edges/${enc}/undrain`),
    );
  }
  return tr;
}

/** The node feed's viewers by protocol, the parents its streams come from and the share of
 * HLS objects its cache served (or how many streams it packages HLS for itself). */
function fromFeed(snap) {
  if (!snap) return [null, null, null];
  const by = Object.entries(snap.viewers ?? {}).filter(([, n]) => n);
  const parents = (snap.streams ?? []).map((s) => s.upstream?.parent).filter(Boolean);
  const ups = new Set(parents.map((p) => p.replace(/^\w+:\/\//, "")));
  const { hits = 0, misses = 0 } = snap.hls_cache ?? {};
  const asked = hits + misses;
  const packaged = (snap.streams ?? []).filter((s) => s.hls?.mode === "package").length;
  const cache = asked
    ? `${Math.round((100 * hits) / asked)}% of ${asked}`
    : packaged ? `packaged (${packaged})` : "–";
  return [by.map(([k, n]) => `${k} ${n}`).join(", ") || "0", [...ups].join(", ") || "–", cache];
}

function edges(snap, nodes) {
  const merged = new Map(snap.edges.map((b) => [b.id, { b, n: null }]));
  for (const n of nodes.filter((n) => n.kind === "edge")) {
    merged.set(n.name, { b: merged.get(n.name)?.b ?? null, n });
  }
  const names = [...merged.keys()].sort();
  keyedRows($("edges"), names, edgeRow).forEach((tr, i) => {
    const { b, n } = merged.get(names[i]);
    const [cls, why] = state(b, n);
    const [byProto, ups, cache] = fromFeed(feeds.snap(n?.http ?? b?.http));
    const beat = b?.last_heartbeat_s_ago;
    const last = beat === null || beat === undefined ? "never" : `${beat.toFixed(1)} s ago`;
    const v = heard(b, n);
    const load = [v?.viewers, rate(v?.egress_bps), v?.load];
    fill(tr, [names[i], why, ...load, last, byProto, ups, cache]);
    tr.cells[1].className = cls;
    const can = {
      kill: n?.state === "running",
      restart: n?.state === "stopped",
      drain: Boolean(b) && !b.draining,
      undrain: Boolean(b?.draining),
    };
    for (const button of tr.cells[9].children) button.disabled = !can[button.dataset.action];
  });
  return merged;
}

function linkRow(key) {
  const tr = row(key, 4);
  const [edge, parent] = JSON.parse(key);
  const path = `/api/links/${encodeURIComponent(edge)}/${encodeURIComponent(parent)}`;
  if (!launcher?.token) return tr;
  const inputs = ["delay_ms", "loss", "rate_kbps"].map((k) => {
    const input = el("input");
    Object.assign(input, { type: "number", min: 0, step: "any", name: k, title: k });
    return input;
  });
  const body = () => {
    const out = {};
    for (const input of inputs) {
      if (input.value === "") continue;
      const v = Number(input.value);
      if (!Number.isFinite(v) || v < 0 || (input.name === "loss" && v > 100)) {
        said(`${edge} ← ${parent}: ${input.name} must be a number ≥ 0`, true);
        return null;
      }
      out[input.name] = input.name === "loss" ? v / 100 : v;
    }
    if (Object.keys(out).length) return out;
    said(`${edge} ← ${parent}: fill in a delay, loss or rate to set`, true);
    return null;
  };
  tr.cells[3].append(
    ...inputs,
    action("set", `link ${edge} ← ${parent}`, path, body),
    action("cut", `cut ${edge} ← ${parent}`, `${path}/cut`),
    action("restore", `restore ${edge} ← ${parent}`, `${path}/restore`),
  );
  return tr;
}

function links() {
  $("links-part").hidden = !topo;
  if (!topo) return;
  const keys = topo.links.map((l) => JSON.stringify([l.edge, l.parent]));
  keyedRows($("links"), keys, linkRow).forEach((tr, i) => {
    const l = topo.links[i];
    fill(tr, [`${l.edge} ← ${l.parent}`, l.state, linkText({ ...l, state: "up" })]);
    tr.cells[1].className = l.state === "cut" ? "out" : "up";
    const cut = tr.querySelector('button[data-action="cut"]');
    if (cut) cut.disabled = l.state === "cut";
  });
}

function loadRow(key) {
  const tr = row(key, 5);
  if (launcher?.token) {
    tr.cells[4].append(action("start", `load ${key}`, `/api/loads/${key}/start`));
  }
  return tr;
}

/** Fetch the samples of each running load run (and once more when it is done). */
async function pollLoads() {
  if (polling) return;
  polling = true;
  try {
    for (const l of topo?.loads ?? []) {
      const fetchedDone = loadFetched.get(l.index) === "done";
      if (l.state === "idle" || (l.state === "done" && fetchedDone)) continue;
      const got = await launcher.load(l.index);
      if (got) {
        loadSamples.set(l.index, got.samples ?? []);
        loadFetched.set(l.index, got.state);
      }
    }
  } finally {
    polling = false;
  }
  for (const [index, samples] of loadSamples) {
    const name = `load ${index}`;
    for (const [chart, field] of loadCharts) {
      chart.set(name, samples.map((s) => [s.t, s[field]]));
      chart.draw();
    }
  }
}

function loads() {
  const any = (topo?.loads ?? []).length > 0;
  $("loads-part").hidden = !any;
  if (!any) return;
  const keys = topo.loads.map((l) => String(l.index));
  keyedRows($("loads"), keys, loadRow).forEach((tr, i) => {
    const l = topo.loads[i];
    fill(tr, [`#${l.index}`, l.profile, l.players, l.state]);
    const start = tr.querySelector("button");
    if (start) start.disabled = l.state === "running";
  });
}

/** The graph: the launcher's nodes by tier and their links when there is a launcher, else
 * the balancer's edges under the origins it hears from (which edge pulls from which origin
 * is not known to the balancer: dashed). */
function graph(snap, merged) {
  const origins = new Map(snap.origins.map((o) => [o.id, o]));
  const top = { title: "balancer", lines: [snap.policy], cls: "up" };
  const edgeBox = (name) => {
    const { b, n } = merged.get(name);
    const [cls, why] = state(b, n);
    const word = n?.state === "stopped" ? "stopped" : why.replace("out of rotation", "out");
    const v = heard(b, n);
    const lines = [`viewers: ${v?.viewers ?? "–"}`, rate(v?.egress_bps), word.slice(0, 20)];
    return { name, lines, cls };
  };
  if (!topo) {
    const originBox = (o) => ({ name: o.id, tier: 0, lines: [`streams: ${o.streams}`], cls: "up" });
    const nodes = [
      ...snap.origins.map(originBox),
      ...snap.edges.map((e) => ({ ...edgeBox(e.id), tier: 1, balanced: true })),
    ];
    const guesses = snap.edges.flatMap((e) =>
      snap.origins.map((o) => ({ child: e.id, parent: o.id, text: "", cls: "guess" })),
    );
    draw($("graph"), top, nodes, guesses);
    return;
  }
  const nodes = topo.nodes.map((n) => {
    if (n.kind === "edge") return { ...edgeBox(n.name), tier: n.tier, balanced: n.balanced };
    const streams = origins.get(n.name)?.streams;
    const lines = [n.state, streams === undefined ? "" : `streams: ${streams}`];
    return { name: n.name, tier: n.tier, lines, cls: n.state === "stopped" ? "out" : "up" };
  });
  const known = new Set(topo.links.map((l) => `${l.edge}\n${l.parent}`));
  const linked = topo.links.map((l) => {
    const cls = l.state === "cut" ? "cut" : "";
    return { child: l.edge, parent: l.parent, text: linkText(l), cls };
  });
  for (const n of topo.nodes) {
    for (const p of n.parents.filter((p) => !known.has(`${n.name}\n${p}`))) {
      linked.push({ child: n.name, parent: p, text: "direct", cls: "" });
    }
  }
  draw($("graph"), topo.balancer ? top : null, nodes, linked);
}

function setUp() {
  $("side").append($("charts-part"), $("loads-part")); // beside the player: it has room
  const box = $("charts");
  charts = {
    viewers: new Chart(box, "viewers per edge", (v) => Math.round(v)),
    egress: new Chart(box, "egress per edge", rate),
  };
  const loadBox = $("load-charts");
  loadCharts = [
    [new Chart(loadBox, "players playing", (v) => Math.round(v)), "playing"],
    [new Chart(loadBox, "join time p50", (v) => `${Math.round(v)} ms`), "join_ms_p50"],
    [new Chart(loadBox, "stalls", (v) => Math.round(v)), "stalls"],
    [new Chart(loadBox, "latency p50", (v) => `${Math.round(v)} ms`), "latency_ms_p50"],
  ];
  const named = fromFragment();
  if (named) {
    launcher = new Launcher(
      named,
      (t) => {
        topo = t;
        if ($("action-status").textContent === LAUNCHER_DOWN) said("", false);
        if (last) show(last);
      },
      () => said(LAUNCHER_DOWN, true),
    );
    setInterval(pollLoads, LOAD_POLL_MS);
    if (launcher.token) {
      const what = "rolling restart of the edges";
      const progress = (text) => said(`${what}: ${text}`, false);
      $("edges-actions").append(
        actionButton("rolling restart", what, () => launcher.rollingRestart(progress)),
        actionButton("cancel rolling restart", "cancel of the rolling restart", () => launcher.cancelRollingRestart()),
      );
    }
  }
}

let playFn = null;

function show(snap) {
  const nodes = topo?.nodes ?? [];
  const running = nodes.filter((n) => n.state === "running").map((n) => n.http);
  feeds.keep(topo ? running : snap.edges.filter((e) => e.in_rotation).map((e) => e.http));
  const merged = edges(snap, nodes);
  graph(snap, merged);
  links();
  loads();
  const keys = new Set(snap.streams.map((s) => s.stream));
  const rows = snap.streams.map((s) => {
    const by = Object.entries(s.edges).map(([id, n]) => `${id} ${n}`).join(", ");
    const viewers = `${s.viewers}${by ? ` (${by})` : ""}`;
    const name = named(s.stream, streamThumb(s.stream), keys);
    return [s.stream, [name, s.origin ?? "–", rate(s.bitrate), viewers, streamMedia(s.stream)]];
  });
  const kick = launcher?.token
    ? (key, td) => td.append(action("kick", `kick ${key}`, `${streamPath(key)}/kick`))
    : null;
  streamRows($("streams"), rows, playFn, kick);
}

/** The URL of the stream's thumbnail at the first followed node that offers one, or null. */
function streamThumb(key) {
  for (const [base, feed] of feeds.feeds) {
    const s = (feed.snap?.streams ?? []).find((s) => `${s.app}/${s.name}` === key && s.thumbnail);
    if (s) return base + s.thumbnail;
  }
  return null;
}

/** The stream's media as the first followed node that has it shows it. */
function streamMedia(key) {
  for (const feed of feeds.feeds.values()) {
    const s = (feed.snap?.streams ?? []).find((s) => `${s.app}/${s.name}` === key && s.video);
    if (s) return media(s);
  }
  return "–";
}

export function render(snap, play) {
  if (charts === null) setUp();
  last = snap;
  playFn = play;
  show(snap);
  const t = performance.now() / 1000;
  const procs = processes();
  for (const e of snap.edges) {
    const v = heard(e, procs.get(e.id)); // a gap while the edge is stopped
    charts.viewers.add(e.id, t, v ? v.viewers : null);
    charts.egress.add(e.id, t, v ? v.egress_bps : null);
  }
  charts.viewers.draw();
  charts.egress.draw();
}
