// The page's actions: requests with a bearer token (the admin API's, from the page's URL
// fragment #admin=TOKEN, or the launcher's), buttons that send them, and their answers shown
// in the page (#action-status).
import { el } from "./player.js";

/** The admin token the page's URL fragment names (#admin=TOKEN: a fragment never reaches a
 * server or its log), or "". */
export function adminToken() {
  return new URLSearchParams(location.hash.slice(1)).get("admin") ?? "";
}

/** The API path of stream `key` ("app/name") under `/api/streams/`. */
export const streamPath = (key) =>
  `/api/streams/${key.split("/").map(encodeURIComponent).join("/")}`;

/** `method` `url` with `Authorization: Bearer token` (JSON `body` if given): {ok, answer} or
 * {ok: false, error}; `who` names the server in the error when it does not answer. */
export async function authorized(method, url, token, body, who) {
  const init = { method, headers: { authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    const resp = await fetch(url, init);
    const answer = await resp.json().catch(() => ({}));
    if (resp.ok) return { ok: true, answer };
    return { ok: false, error: `${resp.status}: ${answer.error ?? resp.statusText}` };
  } catch (exc) {
    return { ok: false, error: `${who} does not answer (${exc.message})` };
  }
}

/** Show what an action answered (never an alert). */
export function said(text, failed) {
  const p = document.getElementById("action-status");
  p.textContent = text;
  p.classList.toggle("offline", failed);
}

/** A button labelled `text` whose click calls `send(payload)` (`payload` from `body()` if
 * given; null there means the form said what is wrong) and says how `what` went. */
export function actionButton(text, what, send, body = null) {
  const b = el("button", text);
  b.dataset.action = text;
  b.onclick = async () => {
    const payload = body ? body() : undefined;
    if (payload === null) return;
    said(`${what}: …`, false);
    b.disabled = true; // one request at a time (the next update says if it applies again)
    const got = await send(payload);
    b.disabled = false;
    said(got.ok ? `${what}: done` : `${what}: ${got.error}`, !got.ok);
  };
  return b;
}
