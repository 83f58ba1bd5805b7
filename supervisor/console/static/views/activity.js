// Activity: the gateway's last finished requests (GET /api/v2/activity), then each new one
// as it finishes (the SSE follow, /api/v2/activity/stream), newest on top. Only POSTs and
// other changes are logged: the console's own polling never shows here.

import { el, formatNumber, isAbort, replace, say } from "../ui.js";

const MAX_ROWS = 200; // rows kept on the page; older ones fall off the bottom
const RETRY_MS = 3000; // wait before following again after the stream broke

const COLUMNS = [
  ["Time", "time"],
  ["Method", "method"],
  ["Route", "route"],
  ["Model", "model"],
  ["Status", "status"],
  ["Prompt tok", "number"],
  ["Completion tok", "number"],
  ["TTFT", "number"],
  ["Tokens/s", "number"],
  ["Duration", "number"],
];

function timeOf(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString();
}

function millis(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(0)} ms`;
}

function count(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function statusClass(status) {
  if (status >= 500 || status === 499) return "status-error";
  if (status >= 400) return "status-warn";
  return "status-ok";
}

// One entry as a table row; with its text (when the gateway keeps it) in a detail row.
export function entryRows(entry) {
  const row = el(
    "tr",
    { class: `activity-row ${statusClass(entry.status)}`, "data-id": entry.id },
    el("td", { title: entry.time }, timeOf(entry.time)),
    el("td", {}, entry.method),
    el("td", { class: "route" }, entry.route, entry.stream ? el("span", { class: "tag" }, "stream") : null),
    el("td", {}, entry.model || "–"),
    el("td", { class: "status" }, String(entry.status)),
    el("td", { class: "number" }, count(entry.prompt_tokens)),
    el("td", { class: "number" }, count(entry.completion_tokens)),
    el("td", { class: "number" }, millis(entry.ttft_ms)),
    el("td", { class: "number" }, formatNumber(entry.tokens_per_second)),
    el("td", { class: "number" }, millis(entry.duration_ms)),
  );
  const rows = [row];
  if (entry.prompt || entry.completion) {
    rows.push(
      el(
        "tr",
        { class: "activity-text" },
        el(
          "td",
          { colspan: COLUMNS.length },
          entry.prompt ? el("div", {}, el("strong", {}, "Prompt: "), entry.prompt) : null,
          entry.completion ? el("div", {}, el("strong", {}, "Completion: "), entry.completion) : null,
        ),
      ),
    );
  }
  return rows;
}

export function createView(section, ctx) {
  const notice = el("p", { class: "notice", hidden: true });
  const summary = el("span", { class: "muted" });
  const body = el("tbody", { id: "activity-rows" });
  const empty = el("p", { class: "muted", id: "activity-empty" }, "No requests yet.");
  const table = el(
    "table",
    { class: "activity", id: "activity-table" },
    el("thead", {}, el("tr", {}, COLUMNS.map(([label, kind]) => el("th", { class: kind }, label)))),
    body,
  );
  replace(
    section,
    el("div", { class: "toolbar" }, el("h2", {}, "Activity"), summary),
    notice,
    table,
    empty,
  );

  let controller = null;
  let lastId = 0;
  let shown = 0;

  function add(entry, atTop) {
    if (entry.id <= lastId && atTop) return; // already on the page (the follow's recent ones)
    lastId = Math.max(lastId, entry.id);
    const rows = entryRows(entry);
    if (atTop) body.prepend(...rows);
    else body.append(...rows);
    shown += 1;
    while (shown > MAX_ROWS && body.lastElementChild) {
      const last = body.lastElementChild;
      last.remove();
      if (last.classList.contains("activity-row")) shown -= 1;
    }
    empty.hidden = shown > 0;
    summary.textContent = `last ${shown} requests, live`;
  }

  async function run(signal) {
    const listed = await ctx.api.json("GET", "/api/v2/activity?limit=100");
    if (signal.aborted) return;
    body.replaceChildren();
    shown = 0;
    lastId = 0;
    const entries = listed.data || [];
    for (const entry of entries) add(entry, false); // newest first already
    lastId = entries.length ? entries[0].id : 0;
    empty.hidden = shown > 0;
    summary.textContent = `last ${shown} requests, live`;
    for await (const event of ctx.api.events("/api/v2/activity/stream?recent=20", { signal })) {
      if (event.data && typeof event.data === "object") add(event.data, true);
    }
  }

  async function follow(signal) {
    while (!signal.aborted) {
      try {
        say(notice, "");
        await run(signal);
      } catch (error) {
        if (isAbort(error) || signal.aborted) return;
        say(notice, `Activity unavailable: ${error.message}`, "error");
      }
      if (signal.aborted) return;
      summary.textContent = "reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }

  return {
    show() {
      if (controller) return;
      controller = new AbortController();
      follow(controller.signal);
    },
    hide() {
      if (controller) controller.abort();
      controller = null;
    },
  };
}
