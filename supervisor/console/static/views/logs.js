// Logs: one model's llama-server output, the recent lines then each new one as the child
// prints it (GET /api/v2/models/{id}/logs/stream), warnings and errors marked, with a filter
// and auto-scroll that can be paused.

import { el, formatTime, isAbort, replace, say } from "../ui.js";

const KEEP_LINES = 2000; // lines kept on the page; older ones are dropped
const TAIL_LINES = 200;
const RETRY_MS = 3000;
// llama.cpp's prefix: an optional timestamp, then the level's letter (children/logs.py).
const MARK = /^(?:\d+\.\d+\.\d+\.\d+ )?([DIWE]) /;

// "error", "warn" or "info" for one line of a child's output.
export function levelOf(line) {
  const mark = MARK.exec(line);
  if (mark) return mark[1] === "E" ? "error" : mark[1] === "W" ? "warn" : "info";
  if (/\b(error|failed|fatal|abort(ed)?|exception)\b/i.test(line)) return "error";
  if (/\bwarn(ing)?\b/i.test(line)) return "warn";
  return "info";
}

export function createView(section, ctx) {
  return new LogsView(section, ctx);
}

class LogsView {
  constructor(section, ctx) {
    this.ctx = ctx;
    this.controller = null;
    this.retry = null;
    this.paused = false;
    this.picker = el("select", { id: "logs-model", "aria-label": "Model" });
    this.picker.addEventListener("change", () => this.follow());
    this.filter = el("select", { id: "logs-filter", "aria-label": "Show" },
      el("option", { value: "all" }, "All lines"),
      el("option", { value: "problems" }, "Warnings and errors"));
    this.filter.addEventListener("change", () => {
      this.output.classList.toggle("problems-only", this.filter.value === "problems");
      this.scroll();
    });
    this.pause = el("button", { type: "button", "aria-pressed": "false",
      onclick: () => this.togglePause() }, "Pause scrolling");
    const clear = el("button", { type: "button", onclick: () => replace(this.output) }, "Clear");
    this.notice = el("p", { class: "notice", hidden: true, role: "status" });
    this.output = el("div", { class: "log", id: "log-lines", role: "log" });
    replace(section,
      el("div", { class: "toolbar" }, el("h2", {}, "Logs"),
        el("label", {}, "Model ", this.picker), el("label", {}, "Show ", this.filter),
        this.pause, clear),
      this.notice, this.output);
  }

  async show() {
    this.shown = true;
    try {
      const models = (await this.ctx.models()).filter((model) => !model.peer); // no logs here
      const chosen = this.picker.value;
      replace(this.picker, models.map((model) => el("option", { value: model.id }, model.id)));
      const loaded = models.find((model) => model.state);
      if (models.some((model) => model.id === chosen)) this.picker.value = chosen;
      else if (loaded) this.picker.value = loaded.id;
    } catch (error) {
      say(this.notice, `Could not list the models: ${error.message}`, "error");
      return;
    }
    if (this.shown) this.follow();
  }

  hide() {
    this.shown = false;
    this.stop();
  }

  stop() {
    clearTimeout(this.retry);
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async follow() {
    this.stop();
    const id = this.picker.value;
    if (!id) {
      say(this.notice, "No models.");
      return;
    }
    replace(this.output);
    say(this.notice, "");
    const controller = new AbortController();
    this.controller = controller;
    const path = `/api/v2/models/${encodeURIComponent(id)}/logs/stream?lines=${TAIL_LINES}`;
    try {
      for await (const { data } of this.ctx.api.events(path, { signal: controller.signal })) {
        if (data && typeof data === "object") this.add(data);
      }
      say(this.notice, "The log stream ended; following again shortly.");
    } catch (error) {
      if (isAbort(error) || controller.signal.aborted) return;
      say(this.notice, `Log stream: ${error.message}`, "error");
    }
    if (this.controller === controller && this.shown) {
      this.retry = setTimeout(() => this.follow(), RETRY_MS);
    }
  }

  add(entry) {
    const level = levelOf(entry.line);
    this.output.append(el("div", { class: `log-line level-${level}`, "data-level": level,
      "data-pid": entry.pid ?? "" },
      el("time", { datetime: entry.time }, formatTime(entry.time)),
      el("span", { class: "role" }, entry.role),
      el("span", { class: "text" }, entry.line)));
    while (this.output.childElementCount > KEEP_LINES) this.output.firstElementChild.remove();
    this.scroll();
  }

  scroll() {
    if (!this.paused) this.output.scrollTop = this.output.scrollHeight;
  }

  togglePause() {
    this.paused = !this.paused;
    this.pause.textContent = this.paused ? "Resume scrolling" : "Pause scrolling";
    this.pause.setAttribute("aria-pressed", String(this.paused));
    this.scroll();
  }
}
