// Small DOM helpers the views share. Text always goes in as text, never parsed as HTML.

// el("button", {class: "primary", type: "button", onclick: f}, "Load") → <button>.
// Attributes named on… become listeners; null/false ones are left out; true is a bare one.
// A style attribute or an on… attribute given as text throws: the page's CSP would refuse
// it without a word (the style not applied, the handler never run), so it is a bug to catch.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    const lower = name.toLowerCase();
    if (lower.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (lower === "style" || lower.startsWith("on")) {
      throw new TypeError(`el(${tag}): no ${name} attribute (the CSP refuses inline ones); ` +
        "use a class, or a function for a listener");
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatNumber(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits);
}

export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString();
}

// Ask before a destructive action, with the page's own <dialog> (confirm() cannot be styled
// and blocks the page). Resolves true when the operator confirms.
export function confirmAction(message, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = message;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

// A line of feedback at the top of a view: kind "error", "ok" or "" (plain).
export function say(node, text, kind = "") {
  node.textContent = text;
  node.className = `notice ${kind}`.trim();
  node.hidden = !text;
}

export function isAbort(error) {
  return error && error.name === "AbortError";
}
