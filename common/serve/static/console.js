// The page every node serves at /: the node's view (a balancer's deployment, or an origin's or
// edge's streams) from its live feed, and a player (?play=app/name&via=flv|ws|hls starts one).
import * as balancer from "./balancer.js";
import * as node from "./node.js";
import { Player, follow } from "./player.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const player = new Player($("video"), $("playing"));
$("query").value = params.get("query") ?? "";
let view = null;

/** Play `key` over `proto`, at the URL the view gives (an error stops the player). */
async function play(key, proto) {
  const got = await view.locate(key, proto, $("query").value.trim());
  if (got.error) {
    player.stop();
    $("playing").textContent = `cannot play ${key}: ${got.error}`;
  } else {
    player.play(got.url, proto, () => play(key, proto)); // a failed play is routed anew
  }
}

follow(
  (snap) => {
    if (view === null) {
      view = snap.node === "balancer" ? balancer : node;
      $("view").innerHTML = view.SKELETON; // our own markup; data goes in as text only
      $("player-title").textContent = view.PLAYER_TITLE;
      if (params.get("play")) play(params.get("play"), params.get("via") ?? "flv");
    }
    const title = view.title(snap);
    $("title").textContent = document.title = title;
    $("summary").textContent = view.summary(snap);
    $("summary").classList.remove("offline");
    view.render(snap, play);
  },
  () => {
    $("summary").textContent = "not answering (retrying)";
    $("summary").classList.add("offline");
  },
);
