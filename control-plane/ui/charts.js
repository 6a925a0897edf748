// Small SVG charts: no library, no network. Each chart is an image with a
// text alternative; the numbers are also in the table beside it.

const NS = "http://www.w3.org/2000/svg";

function svg(width, height, label) {
  const el = document.createElementNS(NS, "svg");
  el.setAttribute("viewBox", `0 0 ${width} ${height}`);
  el.setAttribute("role", "img");
  el.setAttribute("aria-label", label);
  el.classList.add("chart");
  return el;
}

function node(name, attrs, text) {
  const el = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Horizontal bars: [{label, value}], largest first.
export function bars(items, title, unit = "") {
  const rows = items.slice(0, 12);
  const height = 24 * rows.length + 8;
  const chart = svg(600, Math.max(height, 32), `${title}: ${rows.map((r) => `${r.label} ${r.value}${unit}`).join(", ")}`);
  const max = Math.max(...rows.map((r) => r.value), 0) || 1;
  rows.forEach((row, i) => {
    const y = 4 + i * 24;
    chart.append(node("text", { x: 0, y: y + 15, class: "label" }, row.label.slice(0, 28)));
    const width = Math.max(1, (row.value / max) * 330);
    const bar = node("rect", { x: 200, y, width, height: 18, class: "bar" });
    bar.append(node("title", {}, `${row.label}: ${row.value}${unit}`));
    chart.append(bar);
    chart.append(node("text", { x: 206 + width, y: y + 15, class: "value" }, `${row.value}${unit}`));
  });
  if (!rows.length) chart.append(node("text", { x: 0, y: 20, class: "label" }, "No data in this range"));
  return chart;
}

// A line over time against a ceiling: points [{x: label, y: number}].
export function line(points, title, ceiling) {
  const chart = svg(600, 160, `${title}: ${points.map((p) => `${p.x} ${p.y}`).join(", ")}${ceiling ? `; budget ${ceiling}` : ""}`);
  const top = Math.max(ceiling || 0, ...points.map((p) => p.y), 0) || 1;
  const x = (i) => 40 + (points.length > 1 ? (i / (points.length - 1)) * 540 : 270);
  const y = (v) => 140 - (v / top) * 120;
  if (ceiling) {
    chart.append(node("line", { x1: 40, x2: 580, y1: y(ceiling), y2: y(ceiling), class: "ceiling" }));
    chart.append(node("text", { x: 42, y: y(ceiling) - 4, class: "label" }, `budget ${ceiling}`));
  }
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ");
  if (points.length) chart.append(node("path", { d: path, class: "trend" }));
  points.forEach((p, i) => {
    const dot = node("circle", { cx: x(i), cy: y(p.y), r: 3, class: "dot" });
    dot.append(node("title", {}, `${p.x}: ${p.y}`));
    chart.append(dot);
  });
  if (points.length) {
    chart.append(node("text", { x: 40, y: 156, class: "label" }, points[0].x));
    chart.append(node("text", { x: 580, y: 156, class: "label", "text-anchor": "end" }, points[points.length - 1].x));
  }
  return chart;
}

// The last values of a live figure.
export function spark(values, title) {
  const chart = svg(200, 40, `${title}, recent values: ${values.join(", ")}`);
  chart.classList.add("spark");
  const top = Math.max(...values, 0) || 1;
  const x = (i) => (values.length > 1 ? (i / (values.length - 1)) * 196 + 2 : 100);
  const path = values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${(38 - (v / top) * 34).toFixed(1)}`).join(" ");
  if (values.length) chart.append(node("path", { d: path, class: "trend" }));
  return chart;
}
