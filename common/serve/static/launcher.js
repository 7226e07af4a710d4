// The launcher of a topology started by `topology up`, named in the page's URL fragment
// (#launcher=URL&token=TOKEN: a fragment never reaches a server or its log): its live view of
// the deployment (nodes, links, loads) and its actions, each a POST with the bearer token.
// Every request carries the token: reads as the bearer token too, the live feed (EventSource
// cannot send headers) as ?token= to the launcher on loopback.

import { authorized } from "./actions.js";
import { followEvents } from "./player.js";

const RETRY_MS = 10000; // a node feed that failed is tried again after this

/** The launcher the fragment names ({url, token}), or null. */
export function fromFragment() {
  const f = new URLSearchParams(location.hash.slice(1));
  const url = f.get("launcher") ?? "";
  // the launcher listens on loopback only: a link naming any other host is not followed
  if (!/^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d{1,5})?$/.test(url)) return null;
  return { url, token: f.get("token") ?? "" };
}

export class Launcher {
  /** Follow the launcher at `url`: `render(topology)` for each snapshot of its /api/events. */
  constructor({ url, token }, render, offline) {
    this.url = url;
    this.token = token;
    followEvents(`${url}/api/events?token=${encodeURIComponent(token)}`, render, offline);
  }

  /** POST `path` (JSON `body` if given) with the token: {ok, answer} or {ok: false, error}. */
  post(path, body) {
    return authorized("POST", `${this.url}${path}`, this.token, body, "the launcher");
  }

  /** GET /api/loads/INDEX: the load run's state and live samples (null if it failed). */
  async load(index) {
    return this.read(`/api/loads/${index}`);
  }

  /** Start a rolling restart of the edges and follow it, `progress(text)` as each edge's
   * state changes, until it is over: {ok} or {ok: false, error} (also when cancelled). */
  async rollingRestart(progress) {
    const started = await this.post("/api/rolling-restart");
    if (!started.ok) return started;
    for (;;) {
      await new Promise((done) => setTimeout(done, 1000));
      const run = await this.read("/api/rolling-restart");
      if (!run) continue; // the launcher is busy or away: ask again
      const now = run.edges.find((e) => !["waiting", "done"].includes(e.state));
      if (run.state === "done") return { ok: true };
      if (run.state === "cancelled") {
        return { ok: false, error: "cancelled (the edges restarted so far are back)" };
      }
      if (run.state !== "running") return { ok: false, error: `${now?.edge}: ${now?.error}` };
      const note = now?.note ? ` (${now.note})` : "";
      const stopping = run.cancelling ? ", stopping after it (cancelled)" : "";
      if (now) progress(`${now.edge} ${now.state}${note}${stopping}`);
    }
  }

  /** Cancel the running rolling restart: it stops once the edge it works on is back. */
  cancelRollingRestart() {
    return this.post("/api/rolling-restart/cancel");
  }

  /** GET `path` of the launcher as JSON, with the token (null if it failed). */
  async read(path) {
    const got = await authorized("GET", `${this.url}${path}`, this.token, undefined, "");
    return got.ok ? got.answer : null;
  }
}

/** Follow the live feed (/api/events) of each node by its base URL, at most `limit` at once;
 * a feed that fails is closed and tried again after a pause (never a reconnect storm). */
export class NodeFeeds {
  constructor(limit = 16) {
    this.limit = limit;
    this.feeds = new Map(); // base URL -> {source, snap, retryAt}
    window.addEventListener("pagehide", () => this.keep([]));
  }

  /** Follow exactly `bases` (http(s) base URLs); stop following any other. */
  keep(bases) {
    const wanted = new Set(bases.filter((b) => /^https?:\/\//.test(b)).slice(0, this.limit));
    for (const [base, feed] of this.feeds) {
      if (!wanted.has(base)) {
        feed.source?.close();
        this.feeds.delete(base);
      }
    }
    const now = Date.now();
    for (const base of wanted) {
      const feed = this.feeds.get(base) ?? { source: null, snap: null, retryAt: 0 };
      this.feeds.set(base, feed);
      if (feed.source === null && now >= feed.retryAt) this.open(base, feed);
    }
  }

  open(base, feed) {
    const source = new EventSource(`${base}/api/events`);
    source.onmessage = (e) => {
      feed.snap = JSON.parse(e.data);
    };
    source.onerror = () => {
      source.close(); // EventSource would retry by itself every 2 s, forever
      feed.source = null;
      feed.snap = null;
      feed.retryAt = Date.now() + RETRY_MS;
    };
    feed.source = source;
  }

  /** The last snapshot of the node at `base`, or null. */
  snap(base) {
    return this.feeds.get(base)?.snap ?? null;
  }
}
