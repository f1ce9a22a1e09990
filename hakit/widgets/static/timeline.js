// The message timeline of a hakit cluster: a message-sequence (Lamport) diagram.
// One lane per node, time flowing down (one row per instant, its time in the margin), one
// arrow per frame from sender to receiver coloured by kind; drops end in a cross, held frames
// are dashed, node events are tags on their lane, network faults are bands across it.
// A scrubber shows every node's role, generation and txid at any row. Plain SVG and DOM, no
// dependencies, shipped inside the Python package (never loaded from a CDN).

const SVG = "http://www.w3.org/2000/svg";
const LANE = 170;
const ROW = 22;
const LEFT = 90;
const HEAD = 34;

function el(name, attrs, parent, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function div(cls, parent, text) {
  const node = document.createElement("div");
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

const laneX = (data, lane) => LEFT + LANE * data.lanes.indexOf(lane) + LANE / 2;
const rowY = (row) => ROW * row + ROW / 2 + 8;

// The state of every lane at `row`: replay the state changes up to it.
function stateAt(data, row) {
  const out = {};
  for (const lane of data.lanes) out[lane] = { role: "standalone", generation: 0, txid: 0 };
  for (const s of data.states) {
    if (s.row > row) continue;
    const cur = out[s.lane];
    for (const key of ["role", "generation", "txid"]) if (s[key] !== undefined) cur[key] = s[key];
  }
  return out;
}

function roleSpans(data, lane, lastRow) {
  const spans = [];
  let role = "standalone";
  let start = 0;
  for (const s of data.states) {
    if (s.lane !== lane || s.role === undefined) continue;
    if (s.row > start) spans.push([start, s.row - 1, role]);
    role = s.role;
    start = s.row;
  }
  spans.push([start, lastRow, role]);
  return spans;
}

function describe(m) {
  const lines = [];
  lines.push(`${m.from} \u2192 ${m.to}   ${m.outcome}`);
  let when = `sent ${m.t_sent.toFixed(4)} s`;
  if (m.t_end !== null) when += `, ${m.outcome} ${m.t_end.toFixed(4)} s`;
  lines.push(`${when}   ${m.size} B`);
  if (m.t_held !== null) lines.push(`held from ${m.t_held.toFixed(4)} s`);
  if (m.retransmits) lines.push(`${m.retransmits} transmission(s) lost first`);
  if (m.detail) lines.push(m.detail);
  return lines;
}

function fieldsTable(fields, parent) {
  const table = document.createElement("table");
  table.className = "hakit-tl-fields";
  for (const [key, value] of Object.entries(fields || {})) {
    const tr = document.createElement("tr");
    const k = document.createElement("td");
    k.textContent = key;
    const v = document.createElement("td");
    v.textContent = typeof value === "string" ? value : JSON.stringify(value);
    tr.append(k, v);
    table.appendChild(tr);
  }
  parent.appendChild(table);
}

function showMessage(box, m, colour) {
  box.replaceChildren();
  const title = div("hakit-tl-kind", box, m.kind);
  title.style.color = colour;
  for (const line of describe(m)) div("hakit-tl-line", box, line);
  fieldsTable(m.fields, box);
}

function draw(model, root, ui) {
  const data = model.get("data") || {};
  if (!data.lanes) data.lanes = [];
  const rows = data.rows || [];
  const lastRow = Math.max(rows.length - 1, 0);
  // Room on the right for the tags of the last lane and for the band labels.
  const width = LEFT + LANE * Math.max(data.lanes.length, 1) + 120;
  const height = rowY(lastRow) + ROW;

  // Lane names stay on top while the body scrolls.
  ui.head.replaceChildren();
  const head = el("svg", { width, height: HEAD, class: "hakit-tl-head" }, ui.head);
  for (const lane of data.lanes) {
    el("text", { x: laneX(data, lane), y: 22, "text-anchor": "middle", class: "hakit-tl-lane" },
      head, lane);
  }

  ui.body.replaceChildren();
  if (!rows.length) {
    div("hakit-tl-empty", ui.body, "No messages yet.");
    ui.panel.replaceChildren();
    return;
  }
  const svg = el("svg", { width, height, class: "hakit-tl-svg" }, ui.body);
  const defs = el("defs", {}, svg);
  for (const [kind, colour] of Object.entries(data.colours || {})) {
    const marker = el("marker", { id: `hakit-tl-a-${kind}`, viewBox: "0 0 10 10", refX: 9,
      refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0 0L10 5L0 10z", fill: colour }, marker);
  }
  for (const lane of data.lanes) {
    const x = laneX(data, lane);
    for (const [a, b, role] of roleSpans(data, lane, lastRow)) {
      const fill = role === "crashed" ? "#fee2e2" : (data.roles[role] || "#f3f4f6");
      const y0 = rowY(a) - ROW / 2;
      const rect = el("rect", { x: x - 7, y: y0, width: 14, height: rowY(b) + ROW / 2 - y0,
        rx: 3, fill, class: `hakit-tl-role hakit-tl-role-${role}` }, svg);
      el("title", {}, rect, `${lane}: ${role}`);
    }
    el("line", { x1: x, y1: 0, x2: x, y2: height, class: "hakit-tl-lane-line" }, svg);
  }
  let shown = null;
  rows.forEach((t, i) => {
    const label = `${t.toFixed(3)} s`;
    if (label === shown) return;
    shown = label;
    el("text", { x: LEFT - 12, y: rowY(i) + 4, "text-anchor": "end", class: "hakit-tl-time" },
      svg, label);
  });
  for (const band of data.bands || []) {
    const y = rowY(band.row);
    el("line", { x1: LEFT, y1: y, x2: width - 8, y2: y, class: `hakit-tl-band hakit-tl-band-${band.type}` }, svg);
    el("text", { x: width - 10, y: y - 4, "text-anchor": "end", class: "hakit-tl-band-label" },
      svg, band.label);
  }
  const selected = model.get("selected");
  for (const m of data.messages || []) {
    const colour = (data.colours || {})[m.kind] || "#111827";
    const x1 = laneX(data, m.from);
    const y1 = rowY(m.sent);
    let x2 = laneX(data, m.to);
    const end = m.end !== null ? m.end : Math.min(m.sent + 2, lastRow);
    const y2 = rowY(end);
    const short = m.outcome === "dropped" || m.outcome === "in flight";
    if (short) x2 = x1 + (x2 - x1) * 0.7;
    const g = el("g", { class: `hakit-tl-msg hakit-tl-${m.outcome.replace(" ", "-")}` +
      (m.id === selected ? " hakit-tl-selected" : ""), "data-id": m.id, "data-kind": m.kind }, svg);
    const attrs = { x1, y1, x2, y2, stroke: colour, class: "hakit-tl-arrow" };
    if (m.held !== null || m.outcome === "in flight") attrs["stroke-dasharray"] = "5 3";
    if (m.outcome !== "dropped") attrs["marker-end"] = `url(#hakit-tl-a-${m.kind})`;
    el("line", attrs, g);
    // A wide invisible line makes thin arrows easy to hover and click.
    el("line", { x1, y1, x2, y2, class: "hakit-tl-hit" }, g);
    if (m.outcome === "dropped") {
      el("path", { d: `M${x2 - 5} ${y2 - 5}L${x2 + 5} ${y2 + 5}M${x2 - 5} ${y2 + 5}L${x2 + 5} ${y2 - 5}`,
        class: "hakit-tl-drop" }, g);
    }
    if (m.held !== null) {
      const hx = x1 + (x2 - x1) * 0.15;
      const hy = y1 + (y2 - y1) * 0.15;
      el("rect", { x: hx - 5, y: hy - 5, width: 3, height: 10, class: "hakit-tl-hold" }, g);
      el("rect", { x: hx + 1, y: hy - 5, width: 3, height: 10, class: "hakit-tl-hold" }, g);
    }
    const label = el("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, "text-anchor": "middle",
      class: "hakit-tl-label", fill: colour }, g, m.kind + (m.retransmits ? ` \u21bb${m.retransmits}` : ""));
    g.addEventListener("mouseenter", (ev) => {
      showMessage(ui.tip, m, colour);
      ui.tip.style.display = "block";
      place(ui, ev);
    });
    g.addEventListener("mousemove", (ev) => place(ui, ev));
    g.addEventListener("mouseleave", () => { ui.tip.style.display = "none"; });
    g.addEventListener("click", () => {
      model.set("selected", m.id);
      model.save_changes();
      ui.pinned = m;
      panel(model, ui, data);
    });
  }
  for (const mark of data.marks || []) {
    const x0 = laneX(data, mark.lane);
    const x = x0 + (mark.dx || 0);
    const y = rowY(mark.row);
    const g = el("g", { class: `hakit-tl-mark hakit-tl-mark-${mark.type}` }, svg);
    el("title", {}, g, mark.detail);
    const rect = el("rect", { x: x + 10, y: y - 8, width: 6 * mark.label.length + 14, height: 16, rx: 8 }, g);
    const text = el("text", { x: x + 16, y: y + 4 }, g, mark.label);
    // Fit the tag to its text as drawn (fonts differ between browsers).
    const measured = text.getComputedTextLength ? text.getComputedTextLength() : 0;
    if (measured > 0) rect.setAttribute("width", String(Math.min(measured + 12, 6 * mark.label.length + 14)));
    if (mark.type === "crash") {
      el("path", { d: `M${x0 - 6} ${y - 6}L${x0 + 6} ${y + 6}M${x0 - 6} ${y + 6}L${x0 + 6} ${y - 6}`,
        class: "hakit-tl-crash" }, g);
    }
  }
  // The scrubber's line.
  const scrub = model.get("scrub");
  const at = scrub < 0 || scrub > lastRow ? lastRow : scrub;
  el("line", { x1: 4, y1: rowY(at), x2: width - 4, y2: rowY(at), class: "hakit-tl-scrub-line" }, svg);
  ui.range.max = String(lastRow);
  ui.range.value = String(at);
  panel(model, ui, data);
  if (model.get("follow") && !ui.userScrolled) ui.body.scrollTop = ui.body.scrollHeight;
}

function place(ui, ev) {
  const box = ui.root.getBoundingClientRect();
  ui.tip.style.left = `${Math.min(ev.clientX - box.left + 14, box.width - 330)}px`;
  ui.tip.style.top = `${ev.clientY - box.top + 14}px`;
}

function panel(model, ui, data) {
  const rows = data.rows || [];
  const lastRow = Math.max(rows.length - 1, 0);
  const scrub = model.get("scrub");
  const at = scrub < 0 || scrub > lastRow ? lastRow : scrub;
  ui.panel.replaceChildren();
  div("hakit-tl-panel-title", ui.panel, rows.length ? `at ${rows[at].toFixed(4)} s` : "");
  const table = document.createElement("table");
  table.className = "hakit-tl-state";
  table.innerHTML = "<tr><th>node</th><th>role</th><th>gen</th><th>txid</th></tr>";
  const state = stateAt(data, at);
  for (const lane of data.lanes) {
    if (lane === "?") continue;
    const s = state[lane];
    const tr = document.createElement("tr");
    for (const [value, cls] of [[lane, "hakit-tl-node"], [s.role, `hakit-tl-role-cell-${s.role}`],
      [s.generation, "hakit-tl-num"], [s.txid, "hakit-tl-num"]]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      td.className = cls;
      tr.appendChild(td);
    }
    table.appendChild(tr);
  }
  ui.panel.appendChild(table);
  const notes = [];
  if (data.cut) notes.push(`${data.cut} older messages not drawn`);
  if (data.dropped) notes.push(`${data.dropped} events dropped by the log`);
  if (data.hidden && data.hidden.length) notes.push(`hidden: ${data.hidden.join(", ")}`);
  if (notes.length) div("hakit-tl-note", ui.panel, notes.join("; "));
  if (ui.pinned) {
    const box = div("hakit-tl-pinned", ui.panel);
    showMessage(box, ui.pinned, (data.colours || {})[ui.pinned.kind] || "#111827");
  } else {
    div("hakit-tl-note", ui.panel, "Hover an arrow for its fields; click to pin it.");
  }
}

function render({ model, el: root }) {
  root.classList.add("hakit-timeline");
  const ui = { root, pinned: null, userScrolled: false };
  const main = div("hakit-tl-main", root);
  const left = div("hakit-tl-left", main);
  ui.head = div("hakit-tl-headbox", left);
  ui.body = div("hakit-tl-body", left);
  ui.body.style.maxHeight = `${model.get("height") || 480}px`;
  ui.panel = div("hakit-tl-panel", main);
  const bar = div("hakit-tl-bar", root);
  div("hakit-tl-bar-label", bar, "time");
  ui.range = document.createElement("input");
  ui.range.type = "range";
  ui.range.min = "0";
  ui.range.className = "hakit-tl-range";
  bar.appendChild(ui.range);
  const latest = document.createElement("button");
  latest.textContent = "latest";
  latest.className = "hakit-tl-latest";
  bar.appendChild(latest);
  ui.tip = div("hakit-tl-tip", root);
  ui.tip.style.display = "none";
  ui.range.addEventListener("input", () => {
    model.set("scrub", Number(ui.range.value));
    model.save_changes();
    draw(model, root, ui);
  });
  latest.addEventListener("click", () => {
    model.set("scrub", -1);
    model.save_changes();
    ui.userScrolled = false;
    draw(model, root, ui);
  });
  ui.body.addEventListener("scroll", () => {
    ui.head.scrollLeft = ui.body.scrollLeft;
    const atBottom = ui.body.scrollTop + ui.body.clientHeight >= ui.body.scrollHeight - 4;
    ui.userScrolled = !atBottom;
  });
  const redraw = () => draw(model, root, ui);
  model.on("change:data", redraw);
  model.on("change:scrub", redraw);
  model.on("change:selected", redraw);
  redraw();
}

export default { render };
