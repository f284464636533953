// A live chart on a <canvas>, drawn by hand (no library): one point per generated latent frame.
//
// Bars: the frame's latency (seconds since the previous latent frame, left axis). Line: the KV
// cache bytes in use after the frame was written back (right axis), with the request's fixed
// cache size dashed. The x axis has room for every latent frame of the request from the start,
// so the chart fills in rather than rescaling sideways.

const COLORS = { latency: "#2459d6", cache: "#d9822b", grid: "#e3e7ec", text: "#5b6675" };
const PAD = { left: 52, right: 64, top: 26, bottom: 34 };

export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

function formatSeconds(s) {
  return s >= 10 ? `${s.toFixed(0)} s` : s >= 1 ? `${s.toFixed(1)} s` : `${(s * 1000).toFixed(0)} ms`;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

export class FrameChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.reset(0, 0);
  }

  /** Start a new request: `frames` generated latent frames, a cache of `capacityBytes`. Each
   * point sits at its own `latent_index` (1 = the first generated), so the frames of a video
   * continued or extended, given or replayed before the first point, leave their slots empty. */
  reset(frames, capacityBytes) {
    this.frames = frames;
    this.capacity = capacityBytes;
    this.points = []; // {latent_index, latency_s, cache_bytes_used}
    this.draw();
  }

  add(point) {
    this.points.push(point);
    this.draw();
  }

  draw() {
    const { ctx, width, height } = this._prepare();
    const plot = { x: PAD.left, y: PAD.top, w: width - PAD.left - PAD.right,
                   h: height - PAD.top - PAD.bottom };
    const n = Math.max(this.frames, ...this.points.map((p) => p.latent_index), 1);
    const maxLatency = niceMax(Math.max(0, ...this.points.map((p) => p.latency_s)));
    const maxBytes = niceMax(Math.max(this.capacity, ...this.points.map((p) => p.cache_bytes_used)));
    this._axes(ctx, plot, n, maxLatency, maxBytes);
    const slot = plot.w / n;
    const xOf = (i) => plot.x + slot * (this.points[i].latent_index - 0.5);
    const yLatency = (s) => plot.y + plot.h * (1 - s / maxLatency);
    const yBytes = (b) => plot.y + plot.h * (1 - b / maxBytes);

    ctx.fillStyle = COLORS.latency;
    this.points.forEach((p, i) => {
      const top = yLatency(p.latency_s);
      ctx.fillRect(xOf(i) - slot * 0.3, top, slot * 0.6, plot.y + plot.h - top);
    });
    if (this.capacity > 0) {
      ctx.strokeStyle = COLORS.cache;
      ctx.setLineDash([5, 4]);
      this._line(ctx, plot.x, yBytes(this.capacity), plot.x + plot.w, yBytes(this.capacity));
      ctx.setLineDash([]);
    }
    ctx.strokeStyle = ctx.fillStyle = COLORS.cache;
    ctx.lineWidth = 2;
    ctx.beginPath();
    this.points.forEach((p, i) => {
      const [x, y] = [xOf(i), yBytes(p.cache_bytes_used)];
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    this.points.forEach((p, i) => {
      ctx.beginPath();
      ctx.arc(xOf(i), yBytes(p.cache_bytes_used), 3, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.lineWidth = 1;
    this._legend(ctx, plot);
    this.canvas.dataset.points = String(this.points.length);
  }

  // Size the backing store to the element's CSS size times the pixel ratio: crisp lines.
  _prepare() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth || this.canvas.width;
    const height = this.canvas.clientHeight || this.canvas.height;
    if (this.canvas.width !== Math.round(width * ratio)) this.canvas.width = Math.round(width * ratio);
    if (this.canvas.height !== Math.round(height * ratio)) this.canvas.height = Math.round(height * ratio);
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    return { ctx, width, height };
  }

  _axes(ctx, plot, n, maxLatency, maxBytes) {
    const ticks = 4;
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    for (let t = 0; t <= ticks; t += 1) {
      const y = plot.y + plot.h * (1 - t / ticks);
      this._line(ctx, plot.x, y, plot.x + plot.w, y);
      ctx.textAlign = "right";
      ctx.fillText(formatSeconds((maxLatency * t) / ticks), plot.x - 6, y + 4);
      if (this.capacity === 0 && this.points.length === 0) continue; // no request yet
      ctx.textAlign = "left";
      ctx.fillText(formatBytes((maxBytes * t) / ticks), plot.x + plot.w + 6, y + 4);
    }
    ctx.textAlign = "center";
    const every = Math.ceil(n / 12); // at most ~12 labels
    for (let i = 0; i < n; i += every) {
      ctx.fillText(String(i + 1), plot.x + (plot.w / n) * (i + 0.5), plot.y + plot.h + 14);
    }
    ctx.fillText("latent frame", plot.x + plot.w / 2, plot.y + plot.h + 29);
  }

  _legend(ctx, plot) {
    ctx.textAlign = "left";
    ctx.fillStyle = COLORS.latency;
    ctx.fillRect(plot.x, 8, 10, 10);
    ctx.fillStyle = COLORS.text;
    ctx.fillText("latency", plot.x + 14, 17);
    ctx.fillStyle = COLORS.cache;
    ctx.fillRect(plot.x + 80, 12, 12, 2);
    ctx.fillStyle = COLORS.text;
    ctx.fillText("cache in use", plot.x + 96, 17);
  }

  _line(ctx, x0, y0, x1, y1) {
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
  }
}
