// Line charts over the last minutes, inline SVG: each chart keeps a bounded rolling buffer of
// (time, value) per series, filled from the snapshots the page already receives.

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];
const MAX_SERIES = 16;
const W = 300;
const H = 90;

export class Chart {
  /** A chart titled `title`, values shown with `format`, keeping `seconds` of history. */
  constructor(parent, title, format, seconds = 300) {
    this.format = format;
    this.seconds = seconds;
    this.series = new Map();
    this.figure = document.createElement("figure");
    this.figure.className = "chart";
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.legend = document.createElement("div");
    this.legend.className = "legend";
    this.figure.append(caption, this.svg, this.legend);
    parent.append(this.figure);
  }

  /** Add a value (null: a gap) of series `name` at `t` seconds; older points are dropped. */
  add(name, t, value) {
    let points = this.series.get(name);
    if (!points) {
      if (this.series.size >= MAX_SERIES) return;
      points = [];
      this.series.set(name, points);
    }
    points.push([t, value]);
    while (points.length > 2 * this.seconds || points[0][0] < t - this.seconds) points.shift();
  }

  /** Replace series `name` with `points` ([t, value], at most the last `seconds`). */
  set(name, points) {
    this.series.delete(name);
    for (const [t, v] of points) this.add(name, t, v);
  }

  draw() {
    const all = [...this.series.values()].flat();
    const ts = all.map(([t]) => t);
    const vs = all.map(([, v]) => v).filter((v) => v !== null);
    const t1 = Math.max(...ts, 1);
    const t0 = Math.max(Math.min(...ts, t1), t1 - this.seconds);
    const top = Math.max(...vs, 0) * 1.1 || 1;
    const x = (t) => (W * (t - t0)) / Math.max(t1 - t0, 1);
    const y = (v) => H - 2 - ((H - 4) * v) / top;
    this.svg.replaceChildren();
    this.legend.replaceChildren();
    [...this.series.entries()].forEach(([name, points], i) => {
      const color = COLORS[i % COLORS.length];
      let d = "";
      let pen = "M";
      for (const [t, v] of points) {
        if (v === null) pen = "M";
        else {
          d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
          pen = "L";
        }
      }
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d || "M0,0");
      path.setAttribute("stroke", color);
      path.setAttribute("fill", "none");
      this.svg.append(path);
      const last = points.findLast(([, v]) => v !== null);
      if (last) {
        const dot = { cx: x(last[0]), cy: y(last[1]), r: 2, fill: color };
        const circle = document.createElementNS(SVG, "circle");
        Object.entries(dot).forEach(([k, v]) => circle.setAttribute(k, v));
        this.svg.append(circle);
      }
      const key = document.createElement("span");
      key.style.color = color;
      const now = points.at(-1)?.[1] ?? null;
      key.textContent = `${name} ${now === null ? "–" : this.format(now)}`;
      this.legend.append(key);
    });
    const scale = document.createElementNS(SVG, "text");
    scale.setAttribute("x", 2);
    scale.setAttribute("y", 11);
    scale.textContent = this.format(top);
    this.svg.append(scale);
  }
}
