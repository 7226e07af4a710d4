// An origin's or edge's view: its streams and the play buttons; on an origin with an admin
// token in the URL fragment (#admin=TOKEN), a kick button per stream (its admin API).
import { actionButton, adminToken, authorized, streamPath } from "./actions.js";
import { named, playUrl, rate, streamRows } from "./player.js";

const admin = adminToken();

export const PLAYER_TITLE = "Player";
export const SKELETON = `
<h2>Streams</h2>
<p id="action-status" role="status"></p>
<table>
  <thead><tr><th>stream</th><th>media</th><th>source</th><th>viewers</th><th>play</th></tr></thead>
  <tbody id="streams"></tbody>
</table>
<p id="empty">no live stream on this node</p>`;

export const title = (snap) => `livecdn ${snap.node}`;

export function summary(snap) {
  const by = Object.entries(snap.viewers).map(([k, n]) => `${k} ${n}`).join(", ");
  return `up ${Math.round(snap.uptime_s)} s · viewers ${by}`;
}

/** Streams play from this node itself. */
export async function locate(key, proto, query) {
  return { url: playUrl(location.origin, key, proto, query) };
}

/** A stream's codecs, picture size and bitrate as its node's streams API shows them. */
export function media(s) {
  if (!s.video && !s.audio) return "";
  const v = s.video ? `${s.video.codec} ${s.video.width ?? "?"}x${s.video.height ?? "?"}` : "";
  const a = s.audio ? `${s.audio.codec}` : "";
  return [v, a, rate(s.bitrate_in)].filter(Boolean).join(" · ");
}

function source(s) {
  if (s.publisher) return `publisher ${s.publisher.address ?? ""} ${s.publisher.uptime_s} s`;
  if (s.upstream) return `${s.upstream.state} from ${s.upstream.parent ?? "–"}`;
  return "HLS cache";
}

function viewers(v) {
  const parts = Object.entries(v).filter(([k, n]) => k !== "total" && n);
  const by = parts.map(([k, n]) => `${k} ${n}`).join(", ");
  return `${v.total ?? 0}${by ? ` (${by})` : ""}`;
}

/** A button that kicks the publisher of `key` ("app/name") without a ban. */
function kick(key, td) {
  const path = `${streamPath(key)}?ban=0`;
  const send = () => authorized("DELETE", path, admin, undefined, "the origin");
  td.append(actionButton("kick", `kick ${key}`, send));
}

export function render(snap, play) {
  const keys = new Set(snap.streams.map((s) => `${s.app}/${s.name}`));
  const rows = snap.streams.map((s) => {
    const key = `${s.app}/${s.name}`;
    return [key, [named(key, s.thumbnail, keys), media(s), source(s), viewers(s.viewers)]];
  });
  const extra = snap.node === "origin" && admin ? kick : null;
  streamRows(document.getElementById("streams"), rows, play, extra);
  document.getElementById("empty").hidden = rows.length > 0;
}
