// Pull and import, inside the Models view for admin keys (models.js mounts it on
// <div id="pull-panel">): a form that starts a pull (POST /api/v2/models/pull) and follows its
// server-sent events in a <progress> bar, a cancel button (DELETE /api/v2/models/pulls/{id}),
// the pulls running now (GET /api/v2/models/pulls, every 2 s while shown), and a form that
// imports a .gguf from one of the gateway's import_dirs (POST /v1/import).
//
// The gateway carries on with a pull whatever happens to this page: hiding the view stops
// following its events (views stream only while shown), and the running list still shows it.

import { confirmAction, el, formatBytes, formatTime, isAbort, replace, say } from "../ui.js";

const REFRESH_MS = 2000;
const SHA256 = "[0-9a-fA-F]{64}";

export function createView(section, ctx) {
  return new PullView(section, ctx);
}

// "12.0 MiB of 98.0 MiB (12%) · 5.1 MiB/s · 17 s left"; parts the gateway could not know
// (the total of a server that sends none, the rate at the start) are left out.
export function progressText(bytes, total, rate) {
  const parts = [total ? `${formatBytes(bytes)} of ${formatBytes(total)} ` +
    `(${Math.floor((100 * bytes) / total)}%)` : formatBytes(bytes)];
  if (rate > 0) {
    parts.push(`${formatBytes(Math.round(rate))}/s`);
    if (total) parts.push(`${duration((total - bytes) / rate)} left`);
  }
  return parts.join(" · ");
}

function duration(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

// A <progress> showing bytes of total, or sweeping (no value) while the total is unknown.
function setProgress(bar, bytes, total) {
  if (total) {
    bar.max = total;
    bar.value = Math.min(bytes, total);
  } else {
    bar.removeAttribute("value");
  }
}

function field(label, attrs) {
  return el("label", {}, label, el("input", { type: "text", autocomplete: "off", ...attrs }));
}

function optional(form, body, name) {
  const value = form.elements[name].value.trim();
  if (value) body[name] = value;
}

class PullView {
  constructor(section, ctx) {
    this.ctx = ctx;
    this.shown = false;
    this.timer = null;
    this.active = null; // the pull this page follows: {id, file, controller}

    this.notice = el("p", { class: "notice", id: "pull-notice", hidden: true, role: "status" });
    this.pullForm = el("form", { class: "inline-form", id: "pull-form" },
      field("URL (http, https, or hf://ORG/REPO/FILE.gguf)", {
        name: "url", required: true, placeholder: "https://…/model.Q4_K_M.gguf",
      }),
      field("sha256 (optional)", { name: "sha256", pattern: SHA256, placeholder: "64 hex digits" }),
      field("File name (optional)", { name: "file", placeholder: "from the URL" }),
      el("div", { class: "buttons" },
        el("button", { type: "submit", class: "primary", id: "pull-start" }, "Pull")));
    this.pullForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.startPull();
    });

    this.bar = el("progress", { id: "pull-progress", max: 1 });
    this.figures = el("span", { class: "muted", id: "pull-figures" });
    this.cancelButton = el("button", {
      type: "button", class: "danger", id: "pull-cancel", onclick: () => this.cancelActive(),
    }, "Cancel pull");
    this.title = el("strong", {});
    this.progress = el("div", { id: "pull-active", hidden: true },
      el("p", {}, this.title, " ", this.figures), this.bar,
      el("div", { class: "buttons" }, this.cancelButton));

    this.rows = el("tbody", { id: "pull-rows" });
    this.none = el("p", { class: "muted", id: "pulls-empty" }, "No pulls running.");
    this.table = el("table", { id: "pulls-table", hidden: true },
      el("thead", {}, el("tr", {}, el("th", {}, "File"), el("th", {}, "From"),
        el("th", {}, "Progress"), el("th", { class: "number" }, "Rate"),
        el("th", {}, "Started"), el("th", {}, ""))),
      this.rows);

    this.importNotice = el("p", { class: "notice", id: "import-notice", hidden: true,
      role: "status" });
    this.importForm = el("form", { class: "inline-form", id: "import-form" },
      field("Path (.gguf in an import folder)", {
        name: "path", required: true, placeholder: "/media/card/model.gguf",
      }),
      field("sha256 (optional)", { name: "sha256", pattern: SHA256, placeholder: "64 hex digits" }),
      field("File name (optional)", { name: "file", placeholder: "from the path" }),
      el("div", { class: "buttons" },
        el("button", { type: "submit", class: "primary", id: "import-start" }, "Import")));
    this.importForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.startImport();
    });

    replace(section,
      el("section", { "aria-labelledby": "pull-title" },
        el("h3", { id: "pull-title" }, "Pull a model"), this.notice, this.pullForm, this.progress),
      el("section", { "aria-labelledby": "pulls-title" },
        el("h3", { id: "pulls-title" }, "Running pulls"), this.table, this.none),
      el("section", { "aria-labelledby": "import-title" },
        el("h3", { id: "import-title" }, "Import from a folder"), this.importNotice,
        this.importForm));
  }

  show() {
    this.shown = true;
    this.refreshPulls();
  }

  hide() {
    this.shown = false;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.active) this.active.controller.abort(); // the pull runs on, listed when back
  }

  async startPull() {
    if (this.active) return;
    const body = { url: this.pullForm.elements.url.value.trim() };
    optional(this.pullForm, body, "sha256");
    optional(this.pullForm, body, "file");
    const active = { id: null, file: body.file || body.url.split("/").pop(),
      controller: new AbortController() };
    this.active = active;
    this.following(active);
    say(this.notice, `Pulling ${active.file}…`);
    let ended = false;
    try {
      const events = this.ctx.api.events("/api/v2/models/pull",
        { method: "POST", body, signal: active.controller.signal });
      for await (const { event, data } of events) {
        if (data && typeof data === "object") {
          if (data.id !== undefined && active.id === null) {
            active.id = String(data.id);
            this.refreshPulls(); // list it now, not at the next poll
          }
          if (data.file) active.file = data.file;
        }
        if (event === "progress") this.showProgress(active, data);
        else if (event === "done" || event === "error") {
          this.finished(event, data);
          ended = true;
          break;
        }
      }
      if (!ended && !active.controller.signal.aborted) {
        say(this.notice, "The gateway ended the stream before the pull finished; if it runs " +
          "on, it is listed below.", "error");
      }
    } catch (error) {
      if (!isAbort(error)) say(this.notice, error.message, "error");
      else say(this.notice, `Stopped following the pull of ${active.file}: it runs on while it ` +
        "is listed below.");
    } finally {
      this.active = null;
      this.following(null);
      this.refreshPulls();
    }
  }

  following(active) {
    this.progress.hidden = !active;
    this.pullForm.elements.url.disabled = Boolean(active);
    this.pullForm.querySelector("#pull-start").disabled = Boolean(active);
    this.cancelButton.disabled = false;
    if (active) {
      this.title.textContent = active.file;
      this.figures.textContent = "starting…";
      setProgress(this.bar, 0, null);
    }
  }

  showProgress(active, data) {
    this.title.textContent = active.file;
    setProgress(this.bar, data.bytes || 0, data.total);
    this.figures.textContent = progressText(data.bytes || 0, data.total, data.rate);
  }

  finished(event, data) {
    if (event === "done") {
      say(this.notice, `Pulled ${data.file} (${formatBytes(data.bytes)}): served as ` +
        `${data.model}. Load it from its card above.`, "ok");
      return;
    }
    const error = data && data.error ? data.error : {};
    const kind = error.type ? ` (${error.type})` : "";
    say(this.notice, `Pull of ${data.file || "the file"} failed${kind}: ${error.message || "?"}`,
      "error");
  }

  async cancelActive() {
    const active = this.active;
    if (!active) return;
    if (!active.id) {
      say(this.notice, "The gateway has not named this pull yet; try again in a moment.");
      return;
    }
    this.cancelButton.disabled = true;
    // The stream's error event ("cancelled") says it is done.
    await this.cancel(active.id, active.file, this.notice);
    this.cancelButton.disabled = false;
  }

  async cancel(id, file, notice) {
    const question = `Cancel the pull of ${file}? Nothing of it reaches the models directory.`;
    if (!(await confirmAction(question, "Cancel pull"))) return;
    try {
      await this.ctx.api.json("DELETE", `/api/v2/models/pulls/${encodeURIComponent(id)}`);
    } catch (error) {
      say(notice, error.status === 404 ? `The pull of ${file} had already ended.` : error.message,
        error.status === 404 ? "" : "error");
    }
    this.refreshPulls();
  }

  async refreshPulls() {
    clearTimeout(this.timer);
    try {
      const listed = await this.ctx.api.json("GET", "/api/v2/models/pulls");
      this.renderPulls(listed && Array.isArray(listed.data) ? listed.data : []);
    } catch (error) {
      say(this.notice, `Could not read the running pulls: ${error.message}`, "error");
    }
    clearTimeout(this.timer); // one poll at a time, when two refreshes overlapped
    if (this.shown) this.timer = setTimeout(() => this.refreshPulls(), REFRESH_MS);
  }

  renderPulls(pulls) {
    this.table.hidden = pulls.length === 0;
    this.none.hidden = pulls.length > 0;
    replace(this.rows, pulls.map((pull) => {
      const bar = el("progress", { max: 1 });
      setProgress(bar, pull.bytes || 0, pull.total);
      return el("tr", { "data-pull": pull.id },
        el("td", {}, pull.file),
        el("td", {}, pull.url),
        el("td", {}, bar, el("span", { class: "muted" },
          `${progressText(pull.bytes || 0, pull.total, 0)}${pull.state ? ` · ${pull.state}` : ""}`)),
        el("td", { class: "number" }, pull.rate ? `${formatBytes(Math.round(pull.rate))}/s` : "–"),
        el("td", {}, formatTime(pull.started_at)),
        el("td", {}, el("button", { type: "button", class: "danger",
          onclick: () => this.cancel(pull.id, pull.file, this.notice) }, "Cancel")));
    }));
  }

  async startImport() {
    const form = this.importForm;
    const body = { path: form.elements.path.value.trim() };
    optional(form, body, "sha256");
    optional(form, body, "file");
    const button = form.querySelector("#import-start");
    button.disabled = true;
    say(this.importNotice, `Importing ${body.path}…`);
    try {
      const done = await this.ctx.api.json("POST", "/v1/import", body);
      say(this.importNotice, `Imported ${body.path} as ${done.file} (${formatBytes(done.bytes)}): ` +
        `served as ${done.id}. Load it from its card above.`, "ok");
      form.reset();
    } catch (error) {
      say(this.importNotice, error.message, "error");
    } finally {
      button.disabled = false;
    }
  }
}
