// A node's own page: its streams from /api/events, and a player for each (?play=app/name&via=flv|ws|hls).
import { Player, el, follow, playUrl, rate } from "./player.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const player = new Player($("video"), $("playing"));
$("query").value = params.get("query") ?? "";

function play(key, proto) {
  player.play(playUrl(location.origin, key, proto, $("query").value.trim()), proto);
}

function media(s) {
  if (!s.video && !s.audio) return s.upstream ? "" : "–";
  const v = s.video ? `${s.video.codec} ${s.video.width ?? "?"}x${s.video.height ?? "?"}` : "";
  const a = s.audio ? `${s.audio.codec}` : "";
  return [v, a, rate(s.bitrate_in)].filter(Boolean).join(" · ");
}

function source(s) {
  if (s.publisher) return `publisher ${s.publisher.address ?? ""} ${s.publisher.uptime_s} s`;
  if (s.upstream) return `${s.upstream.state} from ${s.upstream.parent ?? "–"}`;
  return "hls cache";
}

function viewers(v) {
  const parts = Object.entries(v).filter(([k, n]) => k !== "total" && n);
  return `${v.total ?? 0}${parts.length ? " (" + parts.map(([k, n]) => `${k} ${n}`).join(", ") + ")" : ""}`;
}

function render(snap) {
  $("title").textContent = `livecdn ${snap.node}`;
  document.title = `livecdn ${snap.node}`;
  const by = Object.entries(snap.viewers).map(([k, n]) => `${k} ${n}`).join(", ");
  $("summary").textContent = `up ${Math.round(snap.uptime_s)} s · viewers ${by}`;
  $("summary").classList.remove("offline");
  const rows = $("streams");
  rows.replaceChildren();
  for (const s of snap.streams) {
    const key = `${s.app}/${s.name}`;
    const tr = el("tr");
    tr.append(el("td", key), el("td", media(s)), el("td", source(s)), el("td", viewers(s.viewers)));
    const td = el("td");
    for (const proto of ["flv", "ws", "hls"]) {
      const b = el("button", proto);
      b.dataset.stream = key;
      b.onclick = () => play(key, proto);
      td.append(b);
    }
    tr.append(td);
    rows.append(tr);
  }
  $("empty").hidden = snap.streams.length > 0;
}

follow(render, () => {
  $("summary").textContent = "node not answering (retrying)";
  $("summary").classList.add("offline");
});
if (params.get("play")) play(params.get("play"), params.get("via") ?? "flv");
