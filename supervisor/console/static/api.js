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
    const blocks = new EventBlocks();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        for (const block of done ? blocks.end() : blocks.push(value)) {
          const event = parseEvent(block);
          if (event) yield event;
        }
        if (done) break;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

// The text of a stream cut into its events' blocks (the lines between blank lines), whatever
// the chunks: a CR, LF or CRLF ends a line, and a CR at a chunk's end is held back until the
// next chunk says whether an LF follows (else "\r" + "\n" would read as two line ends, a
// blank line that is not there). A block the stream ends inside is dropped, as the SSE
// standard says: it may be half an event.
export class EventBlocks {
  constructor() {
    this.buffer = "";
    this.held = "";
  }

  push(text) {
    let joined = this.held + text;
    this.held = "";
    if (joined.endsWith("\r")) {
      this.held = "\r";
      joined = joined.slice(0, -1);
    }
    this.buffer += joined.replace(/\r\n?/g, "\n");
    return this.complete();
  }

  end() {
    this.buffer += this.held ? "\n" : "";
    this.held = "";
    const blocks = this.complete();
    this.buffer = ""; // unterminated: not an event
    return blocks;
  }

  complete() {
    const blocks = [];
    let cut;
    while ((cut = this.buffer.indexOf("\n\n")) >= 0) {
      blocks.push(this.buffer.slice(0, cut));
      this.buffer = this.buffer.slice(cut + 2);
    }
    return blocks;
  }
}
