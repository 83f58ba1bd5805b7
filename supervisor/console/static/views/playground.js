// Playground: a chat with any model, kept in the page, streamed through
// POST /v1/chat/completions with tokens/s shown; Stop aborts the fetch, and the gateway
// cancels the child's request when its client goes.

import { el, formatNumber, isAbort, replace, say } from "../ui.js";

export function createView(section, ctx) {
  return new PlaygroundView(section, ctx);
}

// Tokens per second of a finished or stopped reply: llama-server's own figure from the last
// chunk's "timings" where it sent one, else the content chunks counted over the time since
// the first of them.
export function speedOf(timings, chunks, firstAt, lastAt) {
  if (timings && typeof timings.predicted_per_second === "number") {
    return { tokens: timings.predicted_n ?? chunks, perSecond: timings.predicted_per_second };
  }
  const seconds = firstAt !== null && lastAt > firstAt ? (lastAt - firstAt) / 1000 : 0;
  return { tokens: chunks, perSecond: seconds > 0 && chunks > 1 ? (chunks - 1) / seconds : null };
}

class PlaygroundView {
  constructor(section, ctx) {
    this.ctx = ctx;
    this.history = []; // [{role, content}]
    this.conversation = 0; // counts Clears: a reply from before one must not enter the new history
    this.controller = null;
    this.picker = el("select", { id: "chat-model", "aria-label": "Model" });
    this.maxTokens = el("input", { type: "number", id: "chat-max-tokens", min: 1, value: 256 });
    this.temperature = el("input", { type: "number", id: "chat-temperature", min: 0, max: 2,
      step: 0.1, value: 0.7 });
    this.transcript = el("div", { class: "transcript", id: "chat-transcript", role: "log" });
    this.input = el("textarea", { id: "chat-input", rows: 3, required: true,
      placeholder: "Say something… (Enter sends, Shift+Enter a new line)" });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.send = el("button", { type: "submit", class: "primary", id: "chat-send" }, "Send");
    this.stopButton = el("button", { type: "button", class: "danger", id: "chat-stop",
      disabled: true, onclick: () => this.stop() }, "Stop");
    const clear = el("button", { type: "button", onclick: () => this.clear() }, "Clear");
    this.stats = el("span", { class: "muted", id: "chat-stats", "aria-live": "polite" });
    this.notice = el("p", { class: "notice", hidden: true, role: "status" });
    this.form = el("form", { class: "composer" }, this.input,
      el("div", { class: "buttons" }, this.send, this.stopButton, clear, this.stats));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.ask();
    });
    replace(section,
      el("div", { class: "toolbar" }, el("h2", {}, "Playground"),
        el("label", {}, "Model ", this.picker),
        el("label", {}, "Max tokens ", this.maxTokens),
        el("label", {}, "Temperature ", this.temperature)),
      this.notice, this.transcript, this.form);
  }

  async show() {
    try {
      const models = await this.ctx.models();
      const chosen = this.picker.value;
      replace(this.picker, models.map((model) => el("option", { value: model.id }, model.id)));
      if (models.some((model) => model.id === chosen)) this.picker.value = chosen;
      if (models.length === 0) say(this.notice, "No models to chat with.");
    } catch (error) {
      say(this.notice, `Could not list the models: ${error.message}`, "error");
    }
  }

  hide() {
    this.stop(); // a view streams only while shown
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  clear() {
    this.stop();
    this.conversation += 1;
    this.history = [];
    replace(this.transcript);
    this.stats.textContent = "";
  }

  bubble(role, text) {
    const body = el("div", { class: "content" }, text);
    const node = el("div", { class: `message ${role}`, "data-role": role },
      el("span", { class: "who" }, role === "user" ? "You" : this.picker.value), body);
    this.transcript.append(node);
    this.transcript.scrollTop = this.transcript.scrollHeight;
    return { node, body };
  }

  async ask() {
    const text = this.input.value.trim();
    const model = this.picker.value;
    if (!text || !model || this.controller) return;
    const conversation = this.conversation;
    this.input.value = "";
    say(this.notice, "");
    this.history.push({ role: "user", content: text });
    this.bubble("user", text);
    const reply = this.bubble("assistant", "");
    reply.node.classList.add("streaming");
    const controller = new AbortController();
    this.controller = controller;
    this.send.disabled = true;
    this.stopButton.disabled = false;
    this.stats.textContent = "waiting for the first token…";
    const body = {
      model,
      messages: [...this.history],
      stream: true,
      max_tokens: Number.parseInt(this.maxTokens.value, 10) || 256,
      temperature: Number.parseFloat(this.temperature.value) || 0,
    };
    let content = "";
    let chunks = 0;
    let timings = null;
    let firstAt = null;
    let outcome = "done";
    try {
      const events = this.ctx.api.events("/v1/chat/completions",
        { method: "POST", body, signal: controller.signal });
      for await (const { data } of events) {
        if (data === "[DONE]") break;
        if (!data || typeof data !== "object") continue;
        if (data.error) throw new Error(data.error.message || "the model failed");
        if (data.timings) timings = data.timings;
        const delta = data.choices && data.choices[0] ? data.choices[0].delta : null;
        if (delta && delta.content) {
          content += delta.content;
          chunks += 1;
          if (firstAt === null) firstAt = performance.now();
          reply.body.textContent = content;
          this.showSpeed(speedOf(null, chunks, firstAt, performance.now()), "");
          this.transcript.scrollTop = this.transcript.scrollHeight;
        }
      }
    } catch (error) {
      outcome = isAbort(error) || controller.signal.aborted ? "stopped" : "failed";
      if (outcome === "failed") say(this.notice, error.message, "error");
    }
    reply.node.classList.remove("streaming");
    reply.node.dataset.outcome = outcome;
    if (outcome === "stopped") reply.node.append(el("span", { class: "muted stopped" }, " (stopped)"));
    if (conversation === this.conversation) { // else cleared meanwhile: nothing to keep
      if (content) this.history.push({ role: "assistant", content });
      else if (outcome !== "done") this.history.pop(); // the question got no answer: ask again
      this.showSpeed(speedOf(timings, chunks, firstAt, performance.now()), outcome);
    }
    this.controller = null;
    this.send.disabled = false;
    this.stopButton.disabled = true;
  }

  showSpeed({ tokens, perSecond }, outcome) {
    const speed = perSecond === null ? "" : ` · ${formatNumber(perSecond, 1)} tokens/s`;
    const end = outcome && outcome !== "done" ? ` · ${outcome}` : "";
    this.stats.textContent = `${tokens} tokens${speed}${end}`;
  }
}
