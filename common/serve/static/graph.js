// The deployment as an SVG graph: the balancer on top, then each tier (origins, edges, edges
// of edges), parent links labelled with their emulated delay/loss/rate (a cut one red, dashed).

const SVG = "http://www.w3.org/2000/svg";
const ROW = 110;

function svgEl(tag, attrs, cls) {
  const node = document.createElementNS(SVG, tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  if (cls) node.setAttribute("class", cls);
  return node;
}

function box(svg, x, y, title, lines, cls) {
  const g = svgEl("g", {});
  const size = { x: x - 60, y, width: 120, height: 22 + 14 * lines.length, rx: 6 };
  g.append(svgEl("rect", { ...size, fill: "#fff" })); // hides the lines behind the box
  g.append(svgEl("rect", { ...size, "fill-opacity": "0.15", stroke: "currentColor" }, cls));
  [title, ...lines].forEach((t, i) => {
    const text = svgEl("text", { x, y: y + 15 + 14 * i, "text-anchor": "middle" });
    text.textContent = t;
    g.append(text);
  });
  g.dataset.node = title;
  svg.append(g);
}

function line(svg, [x1, y1], [x2, y2], cls) {
  svg.append(svgEl("line", { x1, y1, x2, y2 }, cls));
}

function label(svg, x, y, text, cls) {
  const t = svgEl("text", { x, y, "text-anchor": "middle" }, `link-label ${cls}`);
  t.textContent = text;
  svg.append(t);
}

/** A link's emulation in a few characters: "80±5 ms · 1% · 500 kb/s", or "direct". */
export function linkText(l) {
  const parts = [];
  if (l.delay_ms) parts.push(`${l.delay_ms}${l.jitter_ms ? `±${l.jitter_ms}` : ""} ms`);
  if (l.loss) parts.push(`${+(l.loss * 100).toFixed(2)}% loss`);
  if (l.rate_kbps) parts.push(`${l.rate_kbps} kb/s`);
  const text = parts.join(" · ") || "direct";
  return l.state === "cut" ? `cut (${text})` : text;
}

/** Draw `nodes` ({name, tier, lines, cls, balanced}) in rows by tier under the balancer (if
 * `top`: {title, lines, cls}), with `links` ({child, parent, text, cls}) between them. */
export function draw(svg, top, nodes, links) {
  svg.replaceChildren();
  const tiers = [];
  for (const n of nodes) (tiers[n.tier] ??= []).push(n);
  const rows = tiers.filter(Boolean);
  const width = Math.max(480, 150 * Math.max(1, ...rows.map((r) => r.length)));
  const first = top ? 1 : 0;
  svg.setAttribute("viewBox", `0 0 ${width} ${90 + ROW * (rows.length + first - 1)}`);
  svg.setAttribute("width", "100%");
  const at = {};
  rows.forEach((row, r) =>
    row.forEach((n, i) => {
      at[n.name] = [((i + 0.5) * width) / row.length, 10 + ROW * (r + first)];
    }),
  );
  const bal = [width / 2, 10];
  if (top) {
    for (const n of nodes.filter((n) => n.balanced)) line(svg, [bal[0], 30], at[n.name], "control");
  }
  for (const l of links) {
    const [p, c] = [at[l.parent], at[l.child]];
    if (!p || !c) continue;
    line(svg, p, c, l.cls);
    const t = (c[1] - 6 - p[1]) / (c[1] - p[1]); // the label sits just above the child
    label(svg, p[0] + t * (c[0] - p[0]), c[1] - 6, l.text, l.cls);
  }
  if (top) box(svg, bal[0], bal[1], top.title, top.lines, top.cls);
  for (const n of nodes) box(svg, at[n.name][0], at[n.name][1], n.name, n.lines, n.cls);
}
