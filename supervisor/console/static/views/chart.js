// A small line chart drawn as SVG: one or more series over a time window, a y axis from 0
// with a few round labels, a time axis in minutes before now, and each series' latest value
// in the legend. Colours come from charts.css (series-0 …), never from style attributes.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 180;
const PAD = { left: 56, right: 12, top: 10, bottom: 24 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

// The smallest of 1, 2, 4, 8 × 10^n at or above value: the y axis' top, whose quarters (the
// grid lines) are round too.
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 4, 8, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

export function plainNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const size = Math.abs(value);
  if (size >= 1e9) return `${(value / 1e9).toFixed(1)}G`;
  if (size >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (size >= 1e4) return `${(value / 1e3).toFixed(0)}k`;
  if (size >= 100 || Number.isInteger(value)) return value.toFixed(0);
  return value.toFixed(size >= 10 ? 1 : 2);
}

// createChart(title, {format, max}) → {node, update(series, now, windowS, top?)}.
// series: [{name, points: [[epochSeconds, value|null], …]}]; a null value breaks the line.
// format(value) → label text; max: a fixed top for the y axis (100 for percentages); top:
// one for this update only (the host's total RAM); else the values' round ceiling.
export function createChart(title, { format = plainNumber, max = null } = {}) {
  const legend = document.createElement("div");
  legend.className = "chart-legend";
  const caption = document.createElement("figcaption");
  const heading = document.createElement("span");
  heading.className = "chart-title";
  heading.textContent = title;
  caption.append(heading, legend);
  const drawing = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart-svg",
    role: "img",
    "aria-label": title,
  });
  const node = document.createElement("figure");
  node.className = "chart";
  node.append(caption, drawing);

  function update(series, now, windowS, fixedTop = null) {
    const start = now - windowS;
    let highest = 0;
    for (const line of series) {
      for (const [, value] of line.points) if (value !== null && value > highest) highest = value;
    }
    const top = fixedTop || (max !== null ? max : niceCeiling(highest));
    const plotW = WIDTH - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + ((t - start) / windowS) * plotW;
    const y = (v) => PAD.top + plotH - (Math.min(v, top) / top) * plotH;

    drawing.replaceChildren();
    for (let i = 0; i <= 4; i += 1) {
      const value = (top * i) / 4;
      const at = y(value);
      drawing.append(
        svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: at, y2: at, class: "chart-grid" }),
        svg("text", { x: PAD.left - 6, y: at + 4, class: "chart-label chart-y" }, format(value)),
      );
    }
    const minutes = windowS / 60;
    const step = minutes > 6 ? 2 : 1;
    for (let m = 0; m <= minutes; m += step) {
      const at = x(now - m * 60);
      const label = m === 0 ? "now" : `-${m}m`;
      drawing.append(
        svg("line", { x1: at, x2: at, y1: PAD.top + plotH, y2: PAD.top + plotH + 4, class: "chart-axis" }),
        svg("text", { x: at, y: HEIGHT - 6, class: "chart-label chart-x" }, label),
      );
    }
    drawing.append(
      svg("line", {
        x1: PAD.left, x2: WIDTH - PAD.right, y1: PAD.top + plotH, y2: PAD.top + plotH, class: "chart-axis",
      }),
    );

    legend.replaceChildren();
    series.forEach((line, index) => {
      let path = "";
      let pen = false;
      let latest = null;
      let last = null; // the newest point drawn, marked with a dot
      for (const [t, value] of line.points) {
        if (t < start) continue;
        if (value === null || value === undefined) {
          pen = false;
          latest = null;
          continue;
        }
        path += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(value).toFixed(1)}`;
        pen = true;
        latest = value;
        last = [x(t), y(value)];
      }
      const colour = `series-${index % 8}`;
      if (path) drawing.append(svg("path", { d: path, class: `chart-line ${colour}` }));
      if (last) {
        drawing.append(svg("circle", { cx: last[0], cy: last[1], r: 3, class: `chart-dot ${colour}` }));
      }
      const item = document.createElement("span");
      item.className = `chart-key ${colour}`;
      item.textContent = `${line.name}: ${format(latest)}`;
      legend.append(item);
    });
  }

  return { node, update };
}
