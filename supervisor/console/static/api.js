// The gateway's HTTP API as the console uses it: JSON calls and server-sent events, both
// through fetch so that every request carries the key header (EventSource cannot send one).

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

// The message of an error body in any of the gateway's formats: OpenAI's and Anthropic's
// envelope ({"error": {"message"}}), /api's {"detail"}, or plain text.
export function errorMessage(body, status) {
  if (body && typeof body === "object") {
    if (body.error && typeof body.error === "object" && body.error.message) return body.error.message;
    if (typeof body.error === "string") return body.error;
    if (typeof body.detail === "string") return body.detail;
    if (typeof body.message === "string") return body.message;
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 500);
  return `HTTP ${status}`;
}

function parsed(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// One SSE block ("event: x\ndata: …") as {event, data}; null for comments and empty blocks.
export function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (data.length === 0) return null;
  return { event, data: parsed(data.join("\n")) };
}

export class Api {
  // getKey: () => string|null, read on every request. onUnauthorized: called with the
  // ApiError of any 401, so the page can ask for a key again.
  constructor(getKey, onUnauthorized = null) {
    this.getKey = getKey;
    this.onUnauthorized = onUnauthorized;
  }

  headers(withBody) {
    const headers = {};
    const key = this.getKey();
    if (key) headers["Authorization"] = `Bearer ${key}`;
    if (withBody) headers["Content-Type"] = "application/json";
    return headers;
  }

  async request(method, path, body, signal) {
    const withBody = body !== undefined && body !== null;
    const response = await fetch(path, {
      method,
      headers: this.headers(withBody),
      body: withBody ? JSON.stringify(body) : undefined,
      signal,
      cache: "no-store",
    });
    if (!response.ok) {
      const content = parsed(await response.text());
      const error = new ApiError(response.status, errorMessage(content, response.status), content);
      if (response.status === 401 && this.onUnauthorized) this.onUnauthorized(error);
      throw error;
    }
    return response;
  }

  async json(method, path, body) {
    const response = await this.request(method, path, body);
    return parsed(await response.text());
  }

  // Yields {event, data} per server-sent event until the stream ends; data is parsed JSON, or
  // the raw string where it is not JSON ("[DONE]"). Aborting ``signal`` ends it (the fetch
  // rejects with an AbortError, which the caller sees).
  async *events(path, { method = "GET", body, signal } = {}) {
    const response = await this.request(method, path, body, signal);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event) yield event;
        }
      }
      const last = parseEvent(buffer);
      if (last) yield last;
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}
