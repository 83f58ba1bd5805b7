// Models: every model the gateway can serve with its live state (refreshed every 2 s while
// shown), and for admin keys the actions: load with parameters, unload, swap to another
// file, reload the configuration, and the pull and import panel (views/pull.js).

import { confirmAction, el, formatBytes, formatNumber, formatTime, replace, say } from "../ui.js";

const REFRESH_MS = 2000;
const LOAD_FIELDS = [
  ["n_ctx", "Context (n_ctx)", 0],
  ["n_gpu_layers", "GPU layers (-1 all)", -1],
  ["threads", "Threads", 1],
  ["n_batch", "Batch (n_batch)", 1],
];

export function createView(section, ctx) {
  return new ModelsView(section, ctx);
}

class ModelsView {
  constructor(section, ctx) {
    this.ctx = ctx;
    this.admin = ctx.access !== "inference";
    this.cards = new Map(); // model id → its card's parts
    this.timer = null;
    this.shown = false;
    // Two lines of feedback: what the last action did (kept until the next action), and what
    // is wrong with reading the models (cleared by the next refresh that reads them).
    this.notice = el("p", { class: "notice", id: "models-notice", hidden: true, role: "status" });
    this.problem = el("p", { class: "notice", id: "models-problem", hidden: true, role: "status" });
    this.list = el("div", { class: "cards", id: "model-cards" });
    const reload = el("button", { type: "button", onclick: () => this.reloadConfig() },
      "Reload configuration");
    const tools = el("div", { class: "toolbar" }, el("h2", {}, "Models"),
      this.admin ? reload : null);
    this.pullPanel = this.admin ? el("div", { id: "pull-panel", class: "panel" }) : null;
    replace(section, tools, this.notice, this.problem, this.list, this.pullPanel);
    this.pull = this.admin ? this.mountPull() : Promise.resolve(null);
  }

  async mountPull() {
    try {
      const module = await import("./pull.js");
      return module.createView(this.pullPanel, this.ctx);
    } catch (error) {
      console.warn("views/pull.js:", error);
      replace(this.pullPanel, el("p", { class: "muted" }, "Pull and import are not available."));
      return null;
    }
  }

  show() {
    if (this.shown) return;
    this.shown = true;
    this.refresh();
    this.pull.then((view) => view && this.shown && view.show());
  }

  hide() {
    this.shown = false;
    clearTimeout(this.timer);
    this.timer = null;
    this.pull.then((view) => view && view.hide());
  }

  async refresh() {
    clearTimeout(this.timer);
    try {
      // A peer's models have no lifecycle here: GET /v1/peers shows their peers.
      const models = (await this.ctx.models()).filter((model) => !model.peer);
      const failures = [];
      const details = await Promise.all(models.map((model) =>
        this.ctx.api.json("GET", `/api/v2/models/${encodeURIComponent(model.id)}`)
          .catch((error) => {
            failures.push(`${model.id}: ${error.message}`);
            return null;
          })));
      this.render(models, details);
      if (failures.length) {
        say(this.problem, `Could not read the details of ${failures.join("; ")}`, "error");
      } else if (models.length === 0) {
        say(this.problem, "No models: put .gguf files in a models directory, or pull one.");
      } else {
        say(this.problem, "");
      }
    } catch (error) {
      say(this.problem, `Could not read the models: ${error.message}`, "error");
    }
    // Cleared first: a refresh started while another was under way (an action's, or a quick
    // hide and show) must not leave two timers running.
    clearTimeout(this.timer);
    this.timer = this.shown ? setTimeout(() => this.refresh(), REFRESH_MS) : null;
  }

  render(models, details) {
    const seen = new Set();
    models.forEach((model, index) => {
      seen.add(model.id);
      let card = this.cards.get(model.id);
      if (!card) {
        card = this.makeCard(model.id);
        this.cards.set(model.id, card);
      }
      this.list.append(card.root); // keeps the gateway's order
      fillCard(card, model, details[index]);
    });
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.root.remove();
        this.cards.delete(id);
      }
    }
  }

  makeCard(id) {
    const badge = el("span", { class: "state" });
    const facts = el("dl", { class: "facts" });
    const children = el("div", { class: "children" });
    const problem = el("p", { class: "error", hidden: true });
    const root = el("article", { class: "card model", "data-model": id },
      el("header", {}, el("h3", {}, id), badge), facts, children, problem);
    const card = { root, badge, facts, children, problem };
    if (this.admin) {
      const actions = this.actions(id);
      card.unload = actions.querySelector("button.danger");
      root.append(actions);
    }
    return card;
  }

  actions(id) {
    const loadForm = el("form", { class: "inline-form load-form", hidden: true },
      LOAD_FIELDS.map(([name, label, min]) => el("label", {}, label,
        el("input", { type: "number", name, min, step: 1, placeholder: "default" }))),
      el("div", { class: "buttons" }, el("button", { type: "submit", class: "primary" }, "Load")));
    loadForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.load(id, loadForm);
    });
    const swapForm = el("form", { class: "inline-form swap-form", hidden: true },
      el("label", {}, "File (.gguf in a models directory)",
        el("input", { type: "text", name: "path", required: true, placeholder: "model-v2.gguf" })),
      el("div", { class: "buttons" }, el("button", { type: "submit", class: "danger" }, "Swap")));
    swapForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.swap(id, swapForm);
    });
    const toggle = (form) => () => {
      form.hidden = !form.hidden;
      if (!form.hidden) form.querySelector("input").focus();
    };
    return el("div", { class: "actions" },
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "primary", onclick: toggle(loadForm) }, "Load…"),
        el("button", { type: "button", class: "danger", onclick: () => this.unload(id) }, "Unload"),
        el("button", { type: "button", onclick: toggle(swapForm) }, "Swap…")),
      loadForm, swapForm);
  }

  async act(text, call) {
    say(this.notice, text);
    try {
      const answer = await call();
      say(this.notice, answer && answer.message ? answer.message : "Done.", "ok");
    } catch (error) {
      say(this.notice, error.message, "error");
    }
    this.refresh();
  }

  load(id, form) {
    const params = {};
    for (const [name] of LOAD_FIELDS) {
      const value = form.elements[name].value.trim();
      if (value !== "") params[name] = Number.parseInt(value, 10);
    }
    form.hidden = true;
    this.act(`Loading ${id}…`, () =>
      this.ctx.api.json("POST", `/api/v2/models/${encodeURIComponent(id)}/load`, params));
  }

  async unload(id) {
    if (!(await confirmAction(`Unload ${id}? Requests in flight finish first.`, "Unload"))) return;
    this.act(`Unloading ${id}…`, () =>
      this.ctx.api.json("POST", `/api/v2/models/${encodeURIComponent(id)}/unload`));
  }

  async swap(id, form) {
    const path = form.elements.path.value.trim();
    const question = `Swap ${id} to ${path}? The new file starts beside the old one, which ` +
      "then drains and stops.";
    if (!(await confirmAction(question, "Swap"))) return;
    form.hidden = true;
    this.act(`Swapping ${id} to ${path}…`, () =>
      this.ctx.api.json("POST", `/api/v2/models/${encodeURIComponent(id)}/swap`, { path }));
  }

  async reloadConfig() {
    const question = "Reload the configuration? Changed models are swapped, removed ones " +
      "drained and unloaded.";
    if (!(await confirmAction(question, "Reload"))) return;
    this.act("Reloading the configuration…", () => this.ctx.api.json("POST", "/api/v2/reload"));
  }
}

function fillCard(card, model, info) {
  const state = info ? info.state : model.state;
  const word = state ? state.state : "unloaded";
  card.badge.textContent = word;
  card.badge.dataset.state = word;
  card.root.dataset.state = word;
  if (card.unload) card.unload.disabled = word === "unloaded";
  const speed = info && info.performance ? info.performance.average_speed : null;
  const facts = [
    ["Size", formatBytes(model.size)],
    ["Memory estimate", formatBytes(state ? state.memory_estimate_bytes : null)],
    ["RSS", formatBytes(state ? state.rss_bytes : null)],
    ["PID", state && state.pid ? state.pid : "–"],
    ["In flight", state ? state.in_flight : 0],
    ["Queued", state ? state.queued : 0],
    ["Load time", state && state.load_seconds != null ? `${formatNumber(state.load_seconds, 2)} s` : "–"],
    ["Loaded at", formatTime(state ? state.loaded_at : null)],
    ["Tokens/s", speed ? formatNumber(speed, 1) : "–"],
    ["Type", (model.metadata && model.metadata.model_type) || "–"],
  ];
  replace(card.facts, facts.map(([name, value]) => [
    el("dt", {}, name), el("dd", { "data-fact": name }, String(value))]));
  const kids = state ? state.children || [] : [];
  replace(card.children, kids.map((child) => el("p", { class: "child" },
    el("strong", {}, child.role), ` pid ${child.pid ?? "–"} · ${child.threads == null ? "default" : child.threads} threads`,
    child.cpus.length ? ` · CPUs ${compactCpus(child.cpus)}` : "",
    child.gpus.length ? ` · GPU ${child.gpus.map((gpu) => `${gpu.index} ${gpu.name}`).join(", ")}`
      : " · CPU only")));
  const error = state ? state.last_error : null;
  card.problem.textContent = error ? `Last error: ${error}` : "";
  card.problem.hidden = !error;
}

// [0, 1, 2, 3, 6] → "0-3,6"
function compactCpus(cpus) {
  const parts = [];
  let start = null;
  let previous = null;
  for (const cpu of [...cpus].sort((a, b) => a - b)) {
    if (start === null) start = cpu;
    else if (cpu !== previous + 1) {
      parts.push(start === previous ? `${start}` : `${start}-${previous}`);
      start = cpu;
    }
    previous = cpu;
  }
  if (start !== null) parts.push(start === previous ? `${start}` : `${start}-${previous}`);
  return parts.join(",");
}
