// Live video worker: the WebSocket (fragmented MP4 + JSON) feeds a MediaSource made here, whose handle the page puts
// on its <video> (video.srcObject): no blob: URL, so the strict CSP stays as it is. Everything that is not video
// (init meta, object boxes, clock stamps) is posted to the page as it comes.
"use strict";

let mediaSource = null;
let buffer = null;
let queue = [];
let expectInit = false;
let socket = null;

function post(message, transfer) { self.postMessage(message, transfer || []); }

function pump() {
  if (!buffer || buffer.updating || !queue.length) return;
  try {
    buffer.appendBuffer(queue.shift());
  } catch (err) {
    if (err.name === "QuotaExceededError") { trim(0); queue = []; return; } // resumes at the next init/keyframe
    post({ type: "error", message: `appending video failed: ${err.message}` });
  }
}

function trim(keepS) { // the page only shows the live edge: drop what lies well behind it
  if (!buffer || buffer.updating || !buffer.buffered.length) return;
  const end = buffer.buffered.end(buffer.buffered.length - 1);
  const start = buffer.buffered.start(0);
  if (end - start > keepS + 10) buffer.remove(start, end - keepS);
}

function startSource(meta) {
  if (!MediaSource.isTypeSupported(meta.mime || "")) {
    post({ type: "unsupported", mime: meta.mime });
    socket.close();
    return;
  }
  mediaSource = new MediaSource();
  queue = [];
  buffer = null;
  mediaSource.addEventListener("sourceopen", () => {
    buffer = mediaSource.addSourceBuffer(meta.mime);
    buffer.mode = "segments";
    buffer.addEventListener("updateend", () => { pump(); });
    pump();
  }, { once: true });
  post({ type: "source", handle: mediaSource.handle, meta }, [mediaSource.handle]);
}

self.onmessage = (event) => {
  const { url, protocols } = event.data;
  socket = new WebSocket(url, protocols || []);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (msg) => {
    if (typeof msg.data === "string") {
      const data = JSON.parse(msg.data);
      if (data.type === "init") { expectInit = true; startSource(data); }
      post(data);
      return;
    }
    if (expectInit) { expectInit = false; queue = [msg.data]; } else { queue.push(msg.data); }
    if (queue.length > 300) queue = queue.slice(-1); // the page is not keeping up; MSE will stall, then resync
    pump();
    if (Math.random() < 0.02) trim(30);
  };
  socket.onclose = (ev) => post({ type: "closed", code: ev.code, reason: ev.reason });
};
