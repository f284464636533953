// Client of the websocket /v1/videos/stream (protocol: server/README.md).
//
// What it is: `startStream(request, handlers, apiKey)`, which opens one connection (the key, if
// any, in the `api_key` query parameter: the server checks it at the handshake, and a browser
// cannot set headers on a websocket), sends the request, pairs each `frame` header with the
// binary message after it, and calls one handler per message. It reports exactly one outcome:
// `onCompleted(message)`, or `onFailed(failure)` with a message a person can read (from the
// server's `error` message, or from the close code when the socket closed without one; a
// refused handshake shows only as 1006, so then it asks the API why). What it is not: the page
// (app.js) or the chart (chart.js).

// Close codes of the server (server/errors.py), for a socket that closed without an `error`.
const CLOSE_REASONS = {
  1006: ["Connection lost", "The connection to the server dropped."],
  1007: ["Request rejected", "The server did not accept the request."],
  1008: ["API key rejected", "This server needs a valid API key."],
  1009: ["Too large", "The image is larger than the server accepts."],
  1011: ["Generation failed", "The server failed while generating."],
  1013: ["Server busy", "The server cannot take the request now; try again later."],
};

// Titles for the server's `error` messages, by close code (the message text comes from it).
const ERROR_TITLES = {
  1007: "Request rejected",
  1008: "API key rejected",
  1009: "Too large",
  1011: "Generation failed",
  1013: "Server busy",
};

export function streamUrl(apiKey = null) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = apiKey ? `?api_key=${encodeURIComponent(apiKey)}` : "";
  return `${scheme}://${location.host}/v1/videos/stream${query}`;
}

/**
 * Opens the socket and sends `request` (a StreamRequest object). Handlers (all optional):
 * onQueued(msg), onStarted(msg), onFrame(header, blob), onProgress(msg), onLatentFrame(msg),
 * onPromptChanged(msg), onRejected(msg), onCompleted(msg),
 * onFailed({title, message, code, closeCode, cancelled}).
 * Returns {cancel(), stop(), sendPrompt(text)}: `cancel` asks the server to stop and drop the
 * video (the outcome still arrives through onFailed); `stop` ends an open-ended video, which
 * completes with what it made; `sendPrompt` asks the video to follow a new prompt from its
 * next frame (answered by onPromptChanged with that frame, or onRejected).
 */
export function startStream(request, handlers, apiKey = null) {
  const on = (name, ...args) => handlers[name] && handlers[name](...args);
  const ws = new WebSocket(streamUrl(apiKey));
  ws.binaryType = "blob";
  let header = null; // the `frame` message whose image is the next binary message
  let completed = null;
  let error = null;
  let cancelRequested = false;

  let opened = false;

  ws.onopen = () => {
    opened = true;
    ws.send(JSON.stringify(request));
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {
      const shown = header;
      header = null;
      if (shown === null) return;
      // Flow control (`frame_window`): acknowledge a frame once it is drawn, so the server
      // sends at most that many ahead of what this page has shown.
      Promise.resolve(on("onFrame", shown, event.data)).finally(() => {
        if (request.frame_window && ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: "ack", index: shown.index }));
        }
      });
      return;
    }
    const msg = JSON.parse(event.data);
    switch (msg.type) {
      case "queued": return on("onQueued", msg);
      case "started": return on("onStarted", msg);
      case "frame": header = msg; return undefined;
      case "progress": return on("onProgress", msg);
      case "latent_frame": return on("onLatentFrame", msg);
      case "prompt_changed": return on("onPromptChanged", msg);
      case "rejected": return on("onRejected", msg);
      case "completed": completed = msg; return undefined;
      case "error": error = msg.error; return undefined;
      default: return undefined; // newer servers may add messages: ignore what we don't know
    }
  };
  ws.onclose = async (event) => {
    if (completed !== null) {
      on("onCompleted", completed);
      return;
    }
    const refused = !opened && !cancelRequested ? await keyRefusal(apiKey) : null;
    on("onFailed", refused || describeFailure(error, event.code, cancelRequested));
  };

  const send = (message) => {
    if (ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(message));
    return true;
  };
  return {
    cancel() {
      cancelRequested = true;
      if (!send({ type: "cancel" })) ws.close(); // not open yet: nothing reached the server
    },
    stop() {
      return send({ type: "stop" });
    },
    sendPrompt(prompt) {
      return send({ type: "prompt", prompt });
    },
  };
}

// A socket that closed before it opened: the handshake was refused or never answered. The
// browser hides the server's answer (401 with the reason), so ask a cheap API route.
async function keyRefusal(apiKey) {
  try {
    const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
    const res = await fetch("/v1/videos?limit=1", { headers });
    if (res.status !== 401) return null;
    const body = await res.json();
    return { title: ERROR_TITLES[1008], message: body.error.message, code: body.error.code,
             closeCode: 1008, cancelled: false };
  } catch {
    return null; // the server is unreachable: the close code says so
  }
}

function describeFailure(error, closeCode, cancelRequested) {
  if (error !== null && error.code === "cancelled") {
    return { title: "Cancelled", message: "The job was cancelled.", code: error.code, closeCode,
             cancelled: true };
  }
  if (error !== null) {
    const title = ERROR_TITLES[closeCode] || "Error";
    return { title, message: error.message, code: error.code, closeCode, cancelled: false };
  }
  if (cancelRequested) {
    return { title: "Cancelled", message: "The job was cancelled.", code: "cancelled", closeCode,
             cancelled: true };
  }
  const [title, message] = CLOSE_REASONS[closeCode] ||
    ["Connection closed", `The server closed the connection (code ${closeCode}).`];
  return { title, message, code: null, closeCode, cancelled: false };
}
