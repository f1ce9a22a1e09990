// The topology view of a hakit cluster: nodes on a ring, the master on top, one arrow per
// replication link (replica -> master) coloured by its state. Plain SVG, no dependencies,
// shipped inside the Python package (never loaded from a CDN).

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

const LINK_LABEL = {
  syncing: "syncing",
  streaming: "streaming",
  lagging: "lagging",
  cut: "cut",
  promoting: "promoting",
  connecting: "connecting",
};

function layout(nodes, width, height) {
  // The master first (top of the ring), the others clockwise in their order.
  const order = [...nodes].sort((a, b) => (b.role === "master") - (a.role === "master"));
  const cx = width / 2;
  const cy = height / 2 + 4;
  // Room outside the ring for the role label under the bottom node (about 50 px).
  const r = Math.min(width, height) / 2 - 56;
  const pos = {};
  order.forEach((node, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(order.length, 1);
    pos[node.name] = order.length === 1
      ? { x: cx, y: cy }
      : { x: cx + r * Math.cos(angle), y: cy + r * Math.sin(angle) };
  });
  return pos;
}

function draw(model, root) {
  const graph = model.get("graph") || { nodes: [], links: [] };
  const width = 440;
  const height = 250;
  root.replaceChildren();
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "hakit-topology-svg",
    role: "img",
    "aria-label": "cluster topology",
  }, root);
  const defs = el("defs", {}, svg);
  for (const state of Object.keys(LINK_LABEL)) {
    const marker = el("marker", {
      id: `hakit-arrow-${state}`, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    }, defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `hakit-arrow hakit-link-${state}` }, marker);
  }
  if (!graph.nodes.length) {
    const t = el("text", { x: width / 2, y: height / 2, class: "hakit-empty" }, svg);
    t.textContent = "no nodes yet: add one below";
    return;
  }
  const pos = layout(graph.nodes, width, height);
  const radius = 30;
  for (const link of graph.links) {
    const a = pos[link.replica];
    const b = pos[link.master];
    if (!a || !b) continue;
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1;
    const ux = dx / len;
    const uy = dy / len;
    const x1 = a.x + ux * (radius + 2);
    const y1 = a.y + uy * (radius + 2);
    const x2 = b.x - ux * (radius + 4);
    const y2 = b.y - uy * (radius + 4);
    const state = LINK_LABEL[link.state] ? link.state : "connecting";
    const g = el("g", { class: `hakit-link hakit-link-${state}` }, svg);
    el("line", { x1, y1, x2, y2, "marker-end": `url(#hakit-arrow-${state})` }, g);
    const label = el("text", {
      x: (x1 + x2) / 2 - uy * 12, y: (y1 + y2) / 2 + ux * 12, class: "hakit-link-label",
    }, g);
    let text = LINK_LABEL[state];
    if (state === "syncing" && link.progress !== null && link.progress !== undefined) {
      text += ` ${Math.round(link.progress * 100)}%`;
    } else if (link.lag) {
      text += ` -${link.lag}`;
    }
    label.textContent = text;
  }
  for (const node of graph.nodes) {
    const p = pos[node.name];
    const classes = ["hakit-node", `hakit-role-${node.role}`];
    if (node.writes_disabled) classes.push("hakit-disabled");
    // A node process (hakit node, not in this kernel): dashed; paused or dead: greyed out.
    const off = node.process && node.process !== "running";
    if (node.process) classes.push("hakit-process");
    if (off) classes.push("hakit-process-off");
    const g = el("g", { class: classes.join(" "), transform: `translate(${p.x},${p.y})` }, svg);
    const title = el("title", {}, g);
    title.textContent = `${node.name}: ${node.role}, generation ${node.generation}, txid ${node.txid}` +
      (node.process ? ` (process pid ${node.pid}, ${node.process})` : "");
    el("circle", { r: radius }, g);
    const name = el("text", { y: -3, class: "hakit-node-name" }, g);
    name.textContent = node.name;
    const meta = el("text", { y: 13, class: "hakit-node-meta" }, g);
    meta.textContent = `g${node.generation} · tx ${node.txid}`;
    // The role label sits outside the ring (away from the centre), where no link passes.
    const ox = p.x - width / 2;
    const oy = p.y - (height / 2 + 4);
    const olen = Math.hypot(ox, oy);
    const [lx, ly] = olen < 1 ? [0, radius + 14] : [(ox / olen) * (radius + 16), (oy / olen) * (radius + 12) + 4];
    const anchor = Math.abs(lx) < radius * 0.6 ? "middle" : lx > 0 ? "start" : "end";
    const role = el("text", { x: lx, y: ly, class: "hakit-node-role", "text-anchor": anchor }, g);
    role.textContent = off ? node.process : node.writes_disabled ? "stepped down" : node.role;
    if (node.process && !off) role.textContent += ` · pid ${node.pid}`;
  }
}

function render({ model, el: root }) {
  root.classList.add("hakit-topology");
  const redraw = () => draw(model, root);
  model.on("change:graph", redraw);
  redraw();
  return () => model.off("change:graph", redraw);
}

export default { render };
