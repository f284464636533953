// The demo page: form, live frames, progress, chart and the final video.
//
// What it is: the wiring between the DOM (index.html), the websocket client (stream.js) and the
// chart (chart.js). It asks `/ui/config` whether the server needs an API key; the key goes in
// the websocket URL's `api_key` query parameter (browsers cannot set headers on a websocket)
// and in an `Authorization: Bearer` header when fetching the MP4, which then plays from a blob
// URL.
// Without keys the video element loads the content URL directly. `#status[data-state]` says
// where the page is: loading, idle, sending, queued, running, completed, cancelled, error.

import { FrameChart, formatBytes } from "./chart.js";
import { startStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("form"), imageInput: $("image-input"), useSample: $("use-sample"), preview: $("preview"),
  imageInfo: $("image-info"), prompt: $("prompt"), frames: $("frames"), policy: $("policy"),
  steps: $("steps"), size: $("size"), seed: $("seed"), guidance: $("guidance"),
  keyRow: $("api-key-row"), key: $("api-key"), generate: $("generate"), cancel: $("cancel"),
  status: $("status"), error: $("error"), progress: $("progress"), progressText: $("progress-text"),
  frame: $("frame"), frameInfo: $("frame-info"), result: $("result"), video: $("video"),
  download: $("download"), stats: $("stats"),
};
const chart = new FrameChart($("chart"));
const state = {
  config: null,
  image: null, // the chosen File or Blob
  previewUrl: null,
  videoUrl: null, // a blob URL we own (revoked on the next run)
  job: null, // {cancel()} while a request runs
  totalFrames: 0,
  lastDrawn: -1,
};

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function showError(title, message) {
  ui.error.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = title;
  ui.error.append(strong, message);
  ui.error.hidden = false;
}

function setRunning(running) {
  ui.generate.disabled = running || state.image === null || state.config === null;
  ui.cancel.disabled = !running;
}

// -- configuration and the form -------------------------------------------------------------

async function loadConfig() {
  const res = await fetch("/ui/config");
  if (!res.ok) throw new Error(`GET /ui/config answered ${res.status}`);
  const config = await res.json();
  for (let latent = 2; latent <= config.max_latent_frames; latent += 1) {
    const frames = 1 + 4 * (latent - 1);
    const seconds = ((frames - 1) / config.fps).toFixed(1);
    const option = new Option(`${frames} frames · ${seconds} s (${latent} latent)`, String(latent));
    ui.frames.add(option);
  }
  ui.frames.value = String(config.default_latent_frames);
  ui.steps.value = String(config.default_steps);
  ui.steps.max = String(config.max_steps);
  for (const name of config.policies) ui.policy.add(new Option(name, name));
  ui.imageInfo.textContent = `${config.image_formats.join(", ")}.`;
  ui.policy.value = config.default_policy;
  ui.keyRow.hidden = !config.api_key_required;
  state.config = config;
}

function chooseImage(blob, name) {
  state.image = blob;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(blob);
  ui.preview.src = state.previewUrl;
  ui.preview.hidden = false;
  ui.preview.onload = () => {
    ui.imageInfo.textContent =
      `${name}: ${ui.preview.naturalWidth}×${ui.preview.naturalHeight}, ${formatBytes(blob.size)}`;
  };
  ui.imageInfo.textContent = `${name}, ${formatBytes(blob.size)}`;
  ui.error.hidden = true;
  setRunning(state.job !== null);
}

ui.imageInput.addEventListener("change", () => {
  const file = ui.imageInput.files[0];
  if (file) chooseImage(file, file.name);
});

ui.useSample.addEventListener("click", async () => {
  const res = await fetch("/static/sample.png");
  if (!res.ok) {
    showError("Sample unavailable", `GET /static/sample.png answered ${res.status}.`);
    return;
  }
  ui.imageInput.value = "";
  chooseImage(await res.blob(), "sample.png");
});

function readDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function buildRequest() {
  const request = {
    type: "generate",
    prompt: ui.prompt.value,
    image: await readDataUrl(state.image),
    latent_frames: Number(ui.frames.value),
    cache_policy: ui.policy.value,
    frame_format: "jpeg",
    frame_window: 4, // flow control: the server keeps at most 4 frames ahead of the drawing
  };
  if (ui.steps.value) request.steps = Number(ui.steps.value);
  if (ui.size.value.trim()) request.size = ui.size.value.trim();
  if (ui.seed.value) request.seed = Number(ui.seed.value);
  if (ui.guidance.value) request.guidance_scale = Number(ui.guidance.value);
  return request;
}

// -- one run --------------------------------------------------------------------------------

function resetView() {
  ui.error.hidden = true;
  ui.result.hidden = true;
  ui.video.removeAttribute("src");
  ui.video.load();
  if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
  state.videoUrl = null;
  ui.progress.value = 0;
  ui.progressText.textContent = "0 %";
  ui.frame.dataset.index = "";
  ui.frame.getContext("2d").clearRect(0, 0, ui.frame.width, ui.frame.height);
  ui.frameInfo.textContent = "No frames yet.";
  state.lastDrawn = -1;
  chart.reset(0, 0);
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.image === null || state.job !== null) return;
  resetView();
  setStatus("sending", "Sending the image…");
  let request;
  try {
    request = await buildRequest();
  } catch (e) {
    showError("Could not read the image", String(e));
    setStatus("error", "Error");
    return;
  }
  state.job = startStream(request, handlers, state.config.api_key_required ? ui.key.value : null);
  setRunning(true);
});

ui.cancel.addEventListener("click", () => {
  if (state.job === null) return;
  ui.cancel.disabled = true;
  setStatus(ui.status.dataset.state, "Cancelling…");
  state.job.cancel();
});

const handlers = {
  onQueued(msg) {
    if (msg.position === 0) setStatus("queued", "Starting…");
    else setStatus("queued", `Waiting in the queue: position ${msg.position}`);
  },

  onStarted(msg) {
    setStatus("running", `Generating ${msg.frames} frames at ${msg.width}×${msg.height} ` +
      `(${msg.cache_policy}, cache ${formatBytes(msg.cache_bytes)})`);
    state.totalFrames = msg.frames;
    ui.frame.width = msg.width;
    ui.frame.height = msg.height;
    chart.reset(msg.latent_frames - 1, msg.cache_bytes);
  },

  async onFrame(header, blob) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob);
    } catch (e) {
      return; // one undecodable frame: the next one replaces it anyway
    }
    // Decoding is asynchronous: never let an older frame overwrite a newer one.
    if (header.index <= state.lastDrawn) return;
    state.lastDrawn = header.index;
    ui.frame.getContext("2d").drawImage(bitmap, 0, 0, ui.frame.width, ui.frame.height);
    bitmap.close();
    ui.frame.dataset.index = String(header.index);
    ui.frameInfo.textContent =
      `Frame ${header.index + 1} of ${state.totalFrames} (latent frame ${header.latent_index})`;
  },

  onProgress(msg) {
    ui.progress.value = msg.progress;
    const dropped = msg.dropped ? `, ${msg.dropped} dropped (slow connection)` : "";
    ui.progressText.textContent = `${msg.progress} % · step ${msg.steps_done}/${msg.total_steps}` +
      ` · ${msg.frames_sent} frames${dropped}`;
  },

  onLatentFrame(msg) {
    chart.add(msg);
  },

  async onCompleted(msg) {
    state.job = null;
    setRunning(false);
    ui.progress.value = 100;
    ui.progressText.textContent = `100 % · ${msg.frames_sent} frames`;
    const s = msg.stats;
    const first = s.time_to_first_frame_s === null ? "" :
      ` · first frame after ${s.time_to_first_frame_s.toFixed(2)} s`;
    ui.stats.textContent = `${s.frames} frames in ${s.duration_s.toFixed(2)} s${first}` +
      ` · peak memory ${formatBytes(s.peak_memory_bytes)}`;
    try {
      await showVideo(msg.id, msg.url);
      setStatus("completed", "Completed");
    } catch (e) {
      showError("Could not load the video", String(e.message || e));
      setStatus("error", "Error");
    }
  },

  onFailed(failure) {
    state.job = null;
    setRunning(false);
    if (failure.cancelled) {
      setStatus("cancelled", "Cancelled");
      return;
    }
    showError(failure.title, failure.message);
    setStatus("error", failure.title);
  },
};

async function showVideo(id, url) {
  let src = url;
  if (state.config.api_key_required) {
    // The content route needs `Authorization`, which a <video src> cannot send.
    const res = await fetch(url, { headers: { Authorization: `Bearer ${ui.key.value}` } });
    if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
    state.videoUrl = URL.createObjectURL(await res.blob());
    src = state.videoUrl;
  }
  ui.video.src = src;
  ui.download.href = src;
  ui.download.download = `${id}.mp4`;
  ui.result.hidden = false;
}

// -- start ----------------------------------------------------------------------------------

loadConfig().then(
  () => {
    setStatus("idle", "Choose an image, then Generate.");
    setRunning(false);
  },
  (e) => {
    showError("Server unavailable", `Could not read the page settings: ${e.message || e}`);
    setStatus("error", "Error");
  },
);
