// The demo page: form, live frames, progress, chart, prompt changes and the final video.
//
// What it is: the wiring between the DOM (index.html), the websocket client (stream.js) and the
// chart (chart.js). It asks `/ui/config` whether the server needs an API key, what the limits
// are and which cache policies (with their knobs) exist; the key goes in the websocket URL's
// `api_key` query parameter (browsers cannot set headers on a websocket) and in an
// `Authorization: Bearer` header when fetching the MP4, which then plays from a blob URL.
// Without keys the video element loads the content URL directly. Every request, an extension
// of a finished video included, goes over the websocket, so frames stream in for all of them.
// `#status[data-state]` says where the page is: loading, idle, sending, queued, running,
// completed, cancelled, error.

import { FrameChart, formatBytes } from "./chart.js";
import { startStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("form"), imageInput: $("image-input"), useSample: $("use-sample"), preview: $("preview"),
  imageInfo: $("image-info"), prompt: $("prompt"), promptLimit: $("prompt-limit"),
  frames: $("frames"), framesLabel: $("frames-label"), policy: $("policy"), knobs: $("knobs"),
  steps: $("steps"), size: $("size"), seed: $("seed"), guidance: $("guidance"),
  openEnded: $("open-ended"), realtime: $("realtime"),
  keyRow: $("api-key-row"), key: $("api-key"), generate: $("generate"), stop: $("stop"),
  cancel: $("cancel"), status: $("status"), error: $("error"), progress: $("progress"),
  progressText: $("progress-text"), frame: $("frame"), frameInfo: $("frame-info"),
  change: $("change"), newPrompt: $("new-prompt"), sendPrompt: $("send-prompt"),
  promptAck: $("prompt-ack"), result: $("result"), video: $("video"), download: $("download"),
  stats: $("stats"), extendForm: $("extend-form"), extendPrompt: $("extend-prompt"),
  extendFrames: $("extend-frames"), extend: $("extend"),
};
const chart = new FrameChart($("chart"));
const state = {
  config: null,
  mode: "image", // what the video starts from: "text", "image" or "video"
  input: null, // the chosen File or Blob (an image or a video)
  previewUrl: null,
  videoUrl: null, // a blob URL we own (revoked on the next run)
  job: null, // {cancel(), stop(), sendPrompt()} while a request runs
  openEnded: false, // the running request has no preset end
  textOnly: false, // the running request generates frame 0 too (text-to-video)
  totalFrames: null, // RGB frames of the running request (null: open-ended)
  lastDrawn: -1,
  finished: null, // id of the last completed video: what Extend continues
};
const VIDEO_ACCEPT = "video/mp4,video/webm,video/quicktime,video/x-matroska,video/x-msvideo," +
  ".mp4,.mov,.webm,.mkv,.avi";

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
  const needsFile = state.mode !== "text";
  ui.generate.disabled = running || state.config === null || (needsFile && state.input === null);
  ui.cancel.disabled = !running;
  ui.stop.disabled = !running || !state.openEnded;
  ui.sendPrompt.disabled = !running;
  ui.extend.disabled = running || state.finished === null;
}

// -- configuration and the form -------------------------------------------------------------

function fillLengths(select, config, added) {
  // `added`: the latent frames a new part adds (a video continued, an extension); else the
  // whole video's, its first frame included.
  select.replaceChildren();
  const first = added ? 1 : 2;
  for (let latent = first; latent <= config.max_latent_frames; latent += 1) {
    const frames = added ? 4 * latent : 1 + 4 * (latent - 1);
    const seconds = ((added ? frames : frames - 1) / config.fps).toFixed(1);
    const text = added ? `+${frames} frames · ${seconds} s (${latent} latent)` :
      `${frames} frames · ${seconds} s (${latent} latent)`;
    select.add(new Option(text, String(latent)));
  }
}

async function loadConfig() {
  const res = await fetch("/ui/config");
  if (!res.ok) throw new Error(`GET /ui/config answered ${res.status}`);
  const config = await res.json();
  state.config = config;
  fillLengths(ui.frames, config, false);
  ui.frames.value = String(config.default_latent_frames);
  fillLengths(ui.extendFrames, config, true);
  ui.extendFrames.value = "2";
  ui.steps.value = String(config.default_steps);
  ui.steps.max = String(config.max_steps);
  for (const name of config.policies) ui.policy.add(new Option(name, name));
  ui.policy.value = config.default_policy;
  showKnobs(config.default_policy_params);
  ui.keyRow.hidden = !config.api_key_required;
  ui.prompt.maxLength = config.max_prompt_chars;
  ui.newPrompt.maxLength = config.max_prompt_chars;
  const template = config.prompt_template_tokens;
  const caption = template === null ? "" :
    `, of which the instruction around the prompt takes ${template}: about ` +
    `${config.stream_prompt_tokens - template} for the prompt itself`;
  ui.promptLimit.textContent = `Up to ${config.max_prompt_chars} characters. A prompt sent ` +
    `while a video runs must fit the ${config.stream_prompt_tokens} text tokens its cache ` +
    `holds${caption}.`;
  setMode(state.mode);
}

// The knobs of the chosen policy, one input each, set to `values` (the registry's defaults,
// or the server's for its default policy).
function showKnobs(values) {
  ui.knobs.replaceChildren();
  for (const [name, value] of Object.entries(values)) {
    const label = document.createElement("label");
    label.textContent = name;
    const input = document.createElement("input");
    input.dataset.knob = name;
    if (typeof value === "boolean") {
      input.type = "checkbox";
      input.checked = value;
    } else if (typeof value === "number") {
      input.type = "number";
      input.step = "any";
      input.value = String(value);
    } else {
      input.type = "text";
      input.value = value === null ? "" : String(value);
    }
    label.append(input);
    ui.knobs.append(label);
  }
}

function knobValues() {
  const out = {};
  for (const input of ui.knobs.querySelectorAll("input[data-knob]")) {
    if (input.type === "checkbox") out[input.dataset.knob] = input.checked;
    else if (input.type === "number" && input.value !== "") {
      out[input.dataset.knob] = Number(input.value);
    } else if (input.value !== "") out[input.dataset.knob] = input.value;
  }
  return out;
}

ui.policy.addEventListener("change", () => {
  const c = state.config;
  showKnobs(ui.policy.value === c.default_policy ? c.default_policy_params :
    c.policy_params[ui.policy.value]);
});

function setMode(mode) {
  const config = state.config;
  state.mode = mode;
  state.input = null;
  ui.imageInput.value = "";
  ui.preview.hidden = true;
  $("input-row").hidden = mode === "text";
  ui.useSample.hidden = mode !== "image";
  ui.imageInput.accept = mode === "video" ? VIDEO_ACCEPT : "image/*";
  const kinds = mode === "video" ? config.video_formats : config.image_formats;
  const longest = mode === "video" ? `, up to ${config.max_input_video_seconds} s` : "";
  ui.imageInfo.textContent = `${kinds.join(", ")}${longest}.`;
  const added = mode === "video";
  const chosen = ui.frames.value;
  fillLengths(ui.frames, config, added);
  ui.frames.value = added ? "2" : chosen || String(config.default_latent_frames);
  ui.framesLabel.textContent = added ? "New part" : "Frames";
  setRunning(state.job !== null);
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => setMode(radio.value));
}

function chooseInput(blob, name) {
  state.input = blob;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = null;
  ui.imageInfo.textContent = `${name}, ${formatBytes(blob.size)}`;
  ui.preview.hidden = true;
  if (state.mode === "image") {
    state.previewUrl = URL.createObjectURL(blob);
    ui.preview.src = state.previewUrl;
    ui.preview.hidden = false;
    ui.preview.onload = () => {
      ui.imageInfo.textContent =
        `${name}: ${ui.preview.naturalWidth}×${ui.preview.naturalHeight}, ${formatBytes(blob.size)}`;
    };
  }
  ui.error.hidden = true;
  setRunning(state.job !== null);
}

ui.imageInput.addEventListener("change", () => {
  const file = ui.imageInput.files[0];
  if (file) chooseInput(file, file.name);
});

ui.useSample.addEventListener("click", async () => {
  const res = await fetch("/static/sample.png");
  if (!res.ok) {
    showError("Sample unavailable", `GET /static/sample.png answered ${res.status}.`);
    return;
  }
  ui.imageInput.value = "";
  chooseInput(await res.blob(), "sample.png");
});

function readDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// Flow control: the server keeps at most 4 frames ahead of the drawing.
const STREAM = { type: "generate", frame_format: "jpeg", frame_window: 4 };

async function buildRequest() {
  const request = {
    ...STREAM,
    prompt: ui.prompt.value,
    latent_frames: Number(ui.frames.value), // a video continued: the new part's
    cache_policy: ui.policy.value,
    ...knobValues(),
  };
  // The server tells an image from a video by its first bytes.
  if (state.mode !== "text") request.image = await readDataUrl(state.input);
  if (ui.openEnded.checked) request.open_ended = true;
  if (ui.realtime.checked) request.realtime = true;
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
  ui.promptAck.textContent = "";
  ui.promptAck.dataset.latent = "";
  state.lastDrawn = -1;
  chart.reset(0, 0);
}

function run(request, openEnded) {
  state.openEnded = openEnded;
  state.textOnly = request.image === undefined && request.extend === undefined;
  state.job = startStream(request, handlers, state.config.api_key_required ? ui.key.value : null);
  setRunning(true);
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.job !== null || (state.mode !== "text" && state.input === null)) return;
  resetView();
  setStatus("sending", state.mode === "text" ? "Sending the prompt…" : `Sending the ${state.mode}…`);
  let request;
  try {
    request = await buildRequest();
  } catch (e) {
    showError(`Could not read the ${state.mode}`, String(e));
    setStatus("error", "Error");
    return;
  }
  run(request, Boolean(request.open_ended));
});

ui.extendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.job !== null || state.finished === null) return;
  const request = {
    ...STREAM,
    extend: state.finished,
    prompt: ui.extendPrompt.value,
    latent_frames: Number(ui.extendFrames.value),
  };
  if (ui.realtime.checked) request.realtime = true;
  resetView();
  setStatus("sending", `Extending ${state.finished}…`);
  run(request, false);
});

ui.cancel.addEventListener("click", () => {
  if (state.job === null) return;
  ui.cancel.disabled = true;
  setStatus(ui.status.dataset.state, "Cancelling…");
  state.job.cancel();
});

ui.stop.addEventListener("click", () => {
  if (state.job === null) return;
  ui.stop.disabled = true;
  setStatus(ui.status.dataset.state, "Stopping after the frames made so far…");
  state.job.stop();
});

ui.change.addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = ui.newPrompt.value.trim();
  if (state.job === null || !prompt) return;
  if (state.job.sendPrompt(prompt)) {
    ui.promptAck.dataset.latent = "";
    ui.promptAck.textContent = `Sent “${prompt}”; waiting for the server…`;
  }
});

const handlers = {
  onQueued(msg) {
    if (msg.position === 0) setStatus("queued", "Starting…");
    else setStatus("queued", `Waiting in the queue: position ${msg.position}`);
  },

  onStarted(msg) {
    const what = msg.frames === null ? "frames until Stop" : `${msg.frames} frames`;
    setStatus("running", `Generating ${what} at ${msg.width}×${msg.height} ` +
      `(${msg.cache_policy}, cache ${formatBytes(msg.cache_bytes)})`);
    state.totalFrames = msg.frames;
    ui.frame.width = msg.width;
    ui.frame.height = msg.height;
    const made = state.textOnly ? 0 : 1; // frame 0 given, unless text-to-video makes it
    chart.reset(msg.latent_frames === null ? 0 : msg.latent_frames - made, msg.cache_bytes);
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
    ui.frame.dataset.latent = String(header.latent_index);
    const of = state.totalFrames === null ? "" : ` of ${state.totalFrames}`;
    ui.frameInfo.textContent =
      `Frame ${header.index + 1}${of} (latent frame ${header.latent_index})`;
  },

  onProgress(msg) {
    if (msg.total_steps !== null) ui.progress.value = msg.progress;
    const dropped = msg.dropped ? `, ${msg.dropped} dropped (slow connection)` : "";
    const total = msg.total_steps === null ? "" : `/${msg.total_steps}`;
    const share = msg.total_steps === null ? "open-ended" : `${msg.progress} %`;
    ui.progressText.textContent = `${share} · step ${msg.steps_done}${total}` +
      ` · ${msg.frames_sent} frames${dropped}`;
  },

  onLatentFrame(msg) {
    chart.add(msg);
  },

  onPromptChanged(msg) {
    ui.promptAck.dataset.latent = String(msg.latent_index);
    ui.promptAck.textContent =
      `Acknowledged: “${msg.prompt}” takes effect at latent frame ${msg.latent_index}.`;
  },

  onRejected(msg) {
    if (msg.request !== "prompt" && msg.request !== "stop") return; // acks are the page's own
    ui.promptAck.dataset.latent = "";
    ui.promptAck.textContent = `Not taken: ${msg.error.message}`;
  },

  async onCompleted(msg) {
    state.job = null;
    state.finished = msg.id;
    setRunning(false);
    ui.progress.value = 100;
    const dropped = msg.dropped ? `, ${msg.dropped} dropped (slow connection; all are in the MP4)` : "";
    ui.progressText.textContent = `100 % · ${msg.frames_sent} frames${dropped}`;
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
    setStatus("idle", "Choose what to start from, then Generate.");
    setRunning(false);
  },
  (e) => {
    showError("Server unavailable", `Could not read the page settings: ${e.message || e}`);
    setStatus("error", "Error");
  },
);
