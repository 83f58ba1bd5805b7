// The console's shell: finds what the visitor's key may do, asks for a key where one is
// needed, and shows one view at a time, chosen by the URL's hash (#models, #logs, …).

import { Api, ApiError, errorMessage } from "./api.js";
import { el, replace } from "./ui.js";

const KEY = "llama-supervisor.key"; // sessionStorage only: gone when the tab closes
const VIEWS = ["models", "logs", "metrics", "activity", "playground"];
const ADMIN_VIEWS = new Set(["logs", "metrics", "activity"]);
// Views paused while the browser tab is in the background (they poll or follow a stream);
// the playground is left alone: it only ever streams the reply the visitor asked for.
const PAUSED_IN_BACKGROUND = new Set(["models", "logs", "metrics", "activity"]);

class Console {
  constructor() {
    this.api = new Api(() => sessionStorage.getItem(KEY), () => this.keyRefused());
    this.access = null; // "open" | "admin" | "inference"
    this.views = new Map(); // name → Promise of {show, hide}
    this.current = null;
    this.asking = false;
  }

  async start() {
    this.wireKeyDialog();
    document.getElementById("forget-key").addEventListener("click", () => this.forgetKey());
    window.addEventListener("hashchange", () => this.route());
    document.addEventListener("visibilitychange", () => this.visibilityChanged());
    await this.findAccess();
  }

  // An admin read tells what the key may do: 200 admin (or an open gateway, with no key),
  // 403 an inference key, 401 no key or a wrong one.
  async findAccess() {
    const key = sessionStorage.getItem(KEY);
    try {
      const response = await fetch("/api/v2/metrics", {
        headers: key ? { Authorization: `Bearer ${key}` } : {},
        cache: "no-store",
      });
      if (response.status === 401) {
        sessionStorage.removeItem(KEY);
        this.askForKey(key ? "That key was refused." : "");
        return;
      }
      if (response.status === 403) this.begin("inference");
      else if (response.ok) this.begin(key ? "admin" : "open");
      else {
        const text = await response.text();
        let body = text;
        try {
          body = JSON.parse(text);
        } catch {
          // plain text: shown as it is
        }
        this.fail(`The gateway answered ${response.status}: ${errorMessage(body, response.status)}`);
      }
    } catch (error) {
      this.fail(`The gateway cannot be reached: ${error.message}`);
    }
  }

  fail(text) {
    const startup = document.getElementById("startup");
    startup.textContent = text;
    startup.className = "notice error";
    startup.hidden = false;
  }

  begin(access) {
    this.access = access;
    document.body.dataset.access = access;
    document.getElementById("startup").hidden = true;
    const label = { open: "open gateway", admin: "admin key", inference: "inference key" };
    document.getElementById("access").textContent = label[access];
    document.getElementById("forget-key").hidden = access === "open";
    for (const link of document.querySelectorAll(".tabs a[data-admin]")) {
      link.hidden = access === "inference";
    }
    this.route();
  }

  allowed(name) {
    return VIEWS.includes(name) && !(this.access === "inference" && ADMIN_VIEWS.has(name));
  }

  route() {
    if (!this.access) return;
    const wanted = location.hash.replace(/^#/, "");
    const name = this.allowed(wanted) ? wanted : "models";
    if (name !== wanted) {
      history.replaceState(null, "", `#${name}`);
    }
    for (const link of document.querySelectorAll(".tabs a")) {
      if (link.dataset.view === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    this.show(name);
  }

  // Each await lets another tab switch in: after one, a view is shown or hidden only if it
  // still is (or is no longer) the current one, so two quick switches never show two views.
  async show(name) {
    if (this.current === name) return;
    const previous = this.current;
    this.current = name;
    if (previous) {
      document.getElementById(`view-${previous}`).hidden = true;
      const view = await this.views.get(previous);
      if (view && this.current !== previous) view.hide();
    }
    if (this.current !== name) return;
    const section = document.getElementById(`view-${name}`);
    section.hidden = false;
    const view = await this.view(name, section);
    if (view && this.current === name && this.running(name)) view.show();
  }

  // Whether the view may poll or stream now: not while the tab is in the background.
  running(name) {
    return !(document.hidden && PAUSED_IN_BACKGROUND.has(name));
  }

  // A background tab asks the gateway for nothing: the current view is hidden while the
  // document is, and shown again when it comes back.
  async visibilityChanged() {
    const name = this.current;
    if (!name || !this.views.has(name) || !PAUSED_IN_BACKGROUND.has(name)) return;
    const view = await this.views.get(name);
    if (!view || this.current !== name) return;
    if (document.hidden) view.hide();
    else view.show();
  }

  // Each view's module is imported on first use; one that fails to load (not shipped, or
  // broken) leaves its tab saying so and the others working.
  view(name, section) {
    if (!this.views.has(name)) {
      const ctx = { api: this.api, access: this.access, models: () => this.models() };
      const made = import(`./views/${name}.js`)
        .then((module) => module.createView(section, ctx))
        .catch((error) => {
          console.warn(`view ${name}:`, error);
          replace(section, el("p", { class: "notice error" }, `The ${name} view is not available.`));
          return null;
        });
      this.views.set(name, made);
    }
    return this.views.get(name);
  }

  // Every model, from GET /api/v2/models: its available_models entry with "status"
  // ("unloaded", "loaded", "loading", …) and "state" (the lifecycle details, null while
  // unloaded) from loaded_models.
  async models() {
    const listed = await this.api.json("GET", "/api/v2/models");
    const loaded = listed.loaded_models || {};
    return (listed.available_models || []).map((model) => ({
      ...model,
      status: loaded[model.id] ? loaded[model.id].status : "unloaded",
      state: loaded[model.id] ? loaded[model.id].state : null,
    }));
  }

  wireKeyDialog() {
    const dialog = document.getElementById("key-dialog");
    const input = document.getElementById("key-input");
    dialog.addEventListener("cancel", (event) => event.preventDefault()); // no key, no page
    // Closed without a key all the same (Escape pressed twice): offer to ask again.
    dialog.addEventListener("close", () => {
      document.getElementById("key-needed").hidden = !this.asking;
    });
    document.getElementById("ask-key").addEventListener("click", () => this.askForKey(""));
    document.getElementById("key-form").addEventListener("submit", () => {
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      this.asking = false;
      if (this.access) location.reload(); // a new key mid-session: start clean
      else this.findAccess();
    });
  }

  askForKey(message) {
    const dialog = document.getElementById("key-dialog");
    const error = document.getElementById("key-error");
    error.textContent = message;
    error.hidden = !message;
    document.getElementById("startup").hidden = true;
    document.getElementById("key-needed").hidden = true;
    this.asking = true;
    if (!dialog.open) dialog.showModal();
  }

  // A 401 from any call: the key went stale (keys reloaded); ask again.
  keyRefused() {
    if (!this.asking) this.askForKey("The gateway no longer accepts this key.");
  }

  forgetKey() {
    sessionStorage.removeItem(KEY);
    location.reload();
  }
}

new Console().start().catch((error) => {
  if (!(error instanceof ApiError)) console.error(error);
});
