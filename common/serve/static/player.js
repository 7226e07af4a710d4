// One <video> playing a live stream: HTTP-FLV and WebSocket-FLV through mpegts.js, HLS through
// hls.js (both vendored, loaded as classic scripts: window.mpegts, window.Hls).

const PROTOCOLS = { flv: "HTTP-FLV", ws: "WebSocket-FLV", hls: "HLS" };

if (window.mpegts) {
  const logs = window.mpegts.LoggingControl;
  logs.enableVerbose = logs.enableDebug = logs.enableInfo = false;
}

window.addEventListener("pageshow", (e) => {
  if (e.persisted) location.reload(); // back from the back/forward cache: players were stopped
});

/** The URL of `key` ("app/name") on the node at `base` (an http(s) origin) for `proto`. */
export function playUrl(base, key, proto, query) {
  const ext = proto === "hls" ? ".m3u8" : ".flv";
  let url = `${base}/${key}${ext}`;
  if (proto === "ws") url = url.replace(/^http/, "ws");
  return query ? `${url}?${query}` : url;
}

/** Seconds from the origin's ingest to what `hls` shows now: the playlist's
 * EXT-X-PROGRAM-DATE-TIME (the ingest wall clock of each segment) against this machine's
 * clock; null without it. */
export function ingestLatency(hls) {
  const shown = hls?.playingDate;
  return shown ? Math.max(0, (Date.now() - shown.getTime()) / 1000) : null;
}

/** Seconds of media the player holds ahead of what it shows (what a viewer lags by, at
 * least), or null before anything plays. */
export function bufferLatency(video) {
  const b = video.buffered;
  return b.length ? Math.max(0, b.end(b.length - 1) - video.currentTime) : null;
}

export class Player {
  constructor(video, status) {
    this.video = video;
    this.status = status;
    this.engine = null;
    this.hls = null;
    this.label = "";
    this.error = "";
    this.again = null;
    this.retry = null;
    this.failures = 0;
    video.addEventListener("playing", () => {
      this.failures = 0;
    });
    setInterval(() => this.show(), 500);
    // a page leaving (perhaps into the back/forward cache, frozen) must not hold its stream
    window.addEventListener("pagehide", () => this.stop());
  }

  /** Play `url` with the engine for `proto` (flv, ws or hls); when it fails or ends, call
   * `again` (if given: e.g. route anew through the balancer) after a delay that doubles with
   * each failure in a row, from 1 s up to 16 s. */
  play(url, proto, again = null) {
    this.stop();
    this.label = `${PROTOCOLS[proto]} ${url}`;
    this.error = "";
    this.again = again;
    const video = this.video;
    if (proto === "hls") {
      if (video.canPlayType("application/vnd.apple.mpegurl") && !window.Hls?.isSupported()) {
        video.src = url; // Safari plays HLS itself
      } else {
        const hls = new window.Hls({
          liveSyncDurationCount: 2,
          // every playlist reload asks `url` again: through the balancer, its 302 may send it
          // to another edge (hls.js would keep the first one's), and since every node cuts
          // and numbers the same segments, playing goes on there, an edge killed included
          xhrSetup: (xhr, asked) => {
            if (new URL(asked).pathname.endsWith(".m3u8")) xhr.open("GET", url, true);
          },
        });
        hls.on(window.Hls.Events.ERROR, (_, data) => {
          if (data.fatal) this.failed(`${data.type}: ${data.details}`);
        });
        hls.loadSource(url);
        hls.attachMedia(video);
        this.hls = hls;
        this.engine = { destroy: () => hls.destroy() };
      }
    } else {
      const p = window.mpegts.createPlayer(
        { type: "flv", isLive: true, url },
        { enableStashBuffer: false, liveBufferLatencyChasing: true },
      );
      p.on(window.mpegts.Events.ERROR, (type, detail) => this.failed(`${type}: ${detail}`));
      p.on(window.mpegts.Events.LOADING_COMPLETE, () => this.failed("the stream ended"));
      p.attachMediaElement(video);
      p.load();
      this.engine = {
        destroy: () => {
          p.pause();
          p.unload();
          p.detachMediaElement();
          p.destroy();
        },
      };
    }
    video.muted = true;
    video.play().catch(() => {}); // starts once media arrives
    this.show();
  }

  /** The engine failed (or the stream ended): say why, and play again later if we can. */
  failed(why) {
    this.error = why;
    if (!this.again || this.retry !== null) return;
    const delay = 1000 * 2 ** Math.min(this.failures, 4);
    this.failures += 1;
    const again = this.again;
    this.retry = setTimeout(() => {
      this.retry = null;
      again();
    }, delay);
  }

  stop() {
    clearTimeout(this.retry);
    this.retry = null;
    if (this.engine) this.engine.destroy();
    this.engine = null;
    this.hls = null;
    this.video.removeAttribute("src");
    this.label = "";
  }

  show() {
    const v = this.video;
    if (!this.label) {
      this.status.textContent = "choose a stream to play";
      return;
    }
    const latency = bufferLatency(v);
    const parts = [this.label];
    if (v.videoWidth) parts.push(`${v.videoWidth}x${v.videoHeight}`);
    parts.push(`t=${v.currentTime.toFixed(1)} s`);
    const ingest = ingestLatency(this.hls);
    if (ingest !== null) parts.push(`latency ${ingest.toFixed(1)} s from ingest`);
    if (latency !== null) parts.push(`buffer latency ${latency.toFixed(2)} s`);
    if (this.error) parts.push(`error: ${this.error}`);
    this.status.textContent = parts.join(" · ");
  }
}

/** Fill `tbody` with one row per [key, cells] of `rows` (a cell is text, or an element put
 * in it), each ending in play buttons (and what `extra(key, td)` adds to their cell). */
export function streamRows(tbody, rows, play, extra = null) {
  tbody.replaceChildren();
  for (const [key, cells] of rows) {
    const tr = el("tr");
    tr.append(...cells.map((c) => (c instanceof Node ? cell(c) : el("td", c))));
    const td = el("td");
    for (const proto of Object.keys(PROTOCOLS)) {
      const b = el("button", proto);
      b.dataset.stream = key;
      b.onclick = () => play(key, proto);
      td.append(b);
    }
    if (extra) extra(key, td);
    tr.append(td);
    tbody.append(tr);
  }
}

function cell(child) {
  const td = el("td");
  td.append(child);
  return td;
}

const THUMB_MS = 5000;
const thumbs = new Map(); // stream key -> its <img>, kept across renders (no flicker)

/** Stream `key`'s name, after its thumbnail when it has one at `url` (a node's snapshot,
 * asked for anew every few seconds; hidden while it does not load: no video yet, or a play
 * token needed). Thumbnails of streams not in `keys` (those shown now) are forgotten. */
export function named(key, url, keys) {
  if (thumbs.size > keys.size) for (const k of thumbs.keys()) if (!keys.has(k)) thumbs.delete(k);
  if (!url) return key;
  const span = el("span");
  span.append(thumbnail(key, url), key); // the name as text, never markup
  return span;
}

function thumbnail(key, url) {
  let img = thumbs.get(key);
  if (!img) {
    img = el("img", null, "thumb");
    img.alt = `${key} now`;
    img.onload = () => (img.hidden = false);
    img.onerror = () => (img.hidden = true);
    thumbs.set(key, img);
  }
  const src = `${url}${url.includes("?") ? "&" : "?"}t=${Math.floor(Date.now() / THUMB_MS)}`;
  if (img.dataset.src !== src) img.src = img.dataset.src = src;
  return img;
}

/** Follow the node's live feed (Server-Sent Events at /api/events); `render` gets each
 * snapshot, `offline` is called while the node does not answer. */
export function follow(render, offline) {
  return followEvents("/api/events", render, offline);
}

/** Follow the Server-Sent Events at `url` for as long as the page lives: `render` gets each
 * snapshot, `offline` is called while it does not answer. EventSource retries a dropped
 * stream by itself, but gives up for good on an answer other than 200 (e.g. a 503 when the
 * node has enough followers): then it is opened again after `retryMs`. */
export function followEvents(url, render, offline, retryMs = 5000) {
  let events = null;
  let left = false;
  const open = () => {
    if (left) return;
    events = new EventSource(url);
    events.onmessage = (e) => render(JSON.parse(e.data));
    events.onerror = () => {
      offline();
      if (events.readyState === EventSource.CLOSED) setTimeout(open, retryMs);
    };
  };
  window.addEventListener("pagehide", () => {
    left = true;
    events?.close();
  });
  open();
}

/** An element with text (never HTML: names come from publishers). */
export function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

export function rate(bps) {
  if (bps === null || bps === undefined) return "–";
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mb/s`;
  return `${(bps / 1e3).toFixed(0)} kb/s`;
}
