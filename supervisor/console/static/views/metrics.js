// Metrics: live charts of the gateway's own figures over the last minutes, from
// GET /api/v2/metrics/history (a sample every 2 s, kept for 10 minutes), polled while shown.

import { el, formatBytes, replace, say } from "../ui.js";
import { createChart, plainNumber } from "./chart.js";

const POLL_MS = 2000;
const WINDOW_S = 600; // the history's whole window: ten minutes

const percent = (value) => (value === null || value === undefined ? "–" : `${value.toFixed(0)}%`);
const millis = (value) => (value === null || value === undefined ? "–" : `${plainNumber(value)} ms`);
const bytes = (value) => (value === null || value === undefined ? "–" : formatBytes(value));

function points(samples, read) {
  return samples.map((sample) => [sample.time, read(sample)]);
}

// Every model that appears in the window, in first-seen order.
function modelIds(samples) {
  const ids = [];
  for (const sample of samples) {
    for (const id of Object.keys(sample.models || {})) if (!ids.includes(id)) ids.push(id);
  }
  return ids;
}

// Every GPU's index that appears in the window, in order (a host's indexes need not be 0..n-1:
// CUDA_VISIBLE_DEVICES, or a GPU that stopped answering).
export function gpuIndexes(samples) {
  const seen = new Set();
  for (const sample of samples) for (const gpu of sample.gpus || []) seen.add(gpu.index);
  return [...seen].sort((a, b) => a - b);
}

export function createView(section, ctx) {
  const notice = el("p", { class: "notice", hidden: true });
  const grid = el("div", { class: "charts", id: "metrics-charts" });
  replace(section, el("div", { class: "toolbar" }, el("h2", {}, "Metrics")), notice, grid);

  const charts = {
    requests: createChart("Requests/s"),
    tokens: createChart("Tokens/s"),
    ttft: createChart("Time to first token", { format: millis }),
    queue: createChart("Queue depth per model"),
    cpu: createChart("Host CPU", { format: percent, max: 100 }),
    memory: createChart("Host RAM used", { format: bytes }),
    gpu: createChart("GPU utilisation", { format: percent, max: 100 }),
    vram: createChart("GPU memory used", { format: bytes }),
  };
  for (const [name, chart] of Object.entries(charts)) {
    chart.node.dataset.chart = name;
    grid.append(chart.node);
  }

  let timer = null;
  let busy = false;

  function draw(history) {
    const samples = history.samples || [];
    const now = samples.length ? samples[samples.length - 1].time : Date.now() / 1000;
    const span = Math.min(WINDOW_S, history.window_s || WINDOW_S);
    charts.requests.update([{ name: "requests/s", points: points(samples, (s) => s.requests_per_s) }], now, span);
    charts.tokens.update(
      [
        { name: "completion", points: points(samples, (s) => s.tokens_per_s) },
        { name: "prompt", points: points(samples, (s) => s.prompt_tokens_per_s) },
      ],
      now,
      span,
    );
    charts.ttft.update(
      [
        { name: "p50", points: points(samples, (s) => s.ttft_p50_ms) },
        { name: "p95", points: points(samples, (s) => s.ttft_p95_ms) },
      ],
      now,
      span,
    );
    const models = modelIds(samples);
    charts.queue.update(
      models.map((id) => ({
        name: id,
        points: points(samples, (s) => (s.models && s.models[id] ? s.models[id].queued : null)),
      })),
      now,
      span,
    );
    charts.cpu.update([{ name: "CPU", points: points(samples, (s) => s.cpu_percent) }], now, span);
    const total = samples.length ? samples[samples.length - 1].memory_total_bytes : null;
    charts.memory.update(
      [{ name: `used of ${bytes(total)}`, points: points(samples, (s) => s.memory_used_bytes) }],
      now,
      span,
      total,
    );
    const each = gpuIndexes(samples);
    charts.gpu.node.hidden = each.length === 0;
    charts.vram.node.hidden = each.length === 0;
    if (each.length > 0) {
      const gpu = (s, i) => (s.gpus || []).find((g) => g.index === i) || null;
      charts.gpu.update(
        each.map((i) => ({
          name: `GPU ${i}`,
          points: points(samples, (s) => (gpu(s, i) ? gpu(s, i).utilization_percent : null)),
        })),
        now,
        span,
      );
      const newest = samples[samples.length - 1].gpus || [];
      charts.vram.update(
        each.map((i) => ({
          name: `GPU ${i}`,
          points: points(samples, (s) => (gpu(s, i) ? gpu(s, i).memory_used_bytes : null)),
        })),
        now,
        span,
        Math.max(0, ...newest.map((g) => g.memory_total_bytes)),
      );
    }
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      draw(await ctx.api.json("GET", "/api/v2/metrics/history"));
      say(notice, "");
    } catch (error) {
      say(notice, `Metrics unavailable: ${error.message}`, "error");
    } finally {
      busy = false;
    }
  }

  return {
    show() {
      if (timer !== null) return;
      poll();
      timer = setInterval(poll, POLL_MS);
    },
    hide() {
      if (timer !== null) clearInterval(timer);
      timer = null;
    },
  };
}
