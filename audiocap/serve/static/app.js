// The audiocap page: pick, drop or record a recording, caption it with POST /v1/caption, show the caption,
// its confidence, the waveform and, for long recordings, a timeline of window captions that seeks the player.
"use strict";

const $ = (id) => document.getElementById(id);
const AUTO_SEGMENT_AFTER = 30; // seconds: longer recordings get a caption per window when Windows is "auto"
const AUTO_SEGMENT = 10;
let current = null; // {url, samples, duration, segments}
let recorder = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setStatus(message, busy = false) {
  $("status").textContent = message;
  $("status").classList.toggle("busy", busy);
}

function formatTime(seconds) {
  const m = Math.floor(seconds / 60), s = seconds - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

function apiHeaders() {
  const key = $("api_key").value.trim() || sessionStorage.getItem("audiocap-key") || "";
  return key ? {"X-API-Key": key} : {};
}

async function apiError(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON: a proxy's page */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

async function loadModelInfo() {
  try {
    const response = await fetch("/v1/model", {headers: apiHeaders()});
    if (response.status === 401) { $("key-field").hidden = false; $("model").textContent = "This server needs an API key (Options)."; return; }
    if (!response.ok) return;
    const model = await response.json();
    $("model").textContent = `Model ${model.name} · ${model.version} · ${model.sample_rate / 1000} kHz`;
  } catch (_) { /* the page still works; errors show when captioning */ }
}

// Decoded in the browser only to draw it and know its length; the server decodes the file itself.
async function decodeForDrawing(blob) {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return null;
  const context = new Context();
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    return {samples: audio.getChannelData(0), duration: audio.duration};
  } catch (_) {
    return null; // a format this browser cannot decode: the server may still
  } finally {
    context.close();
  }
}

function segmentFor(duration) {
  const choice = $("segment").value;
  if (choice !== "auto") return choice;
  return duration && duration > AUTO_SEGMENT_AFTER ? String(AUTO_SEGMENT) : "";
}

async function caption(blob, name) {
  showError("");
  $("result").hidden = true;
  setStatus(`Captioning ${name}…`, true);
  if (current && current.url) URL.revokeObjectURL(current.url);
  const drawing = await decodeForDrawing(blob);
  current = {url: URL.createObjectURL(blob), samples: drawing && drawing.samples,
             duration: drawing && drawing.duration, segments: []};
  const query = new URLSearchParams({beam_size: $("beam_size").value, n_best: $("n_best").value});
  const segment = segmentFor(current.duration);
  if (segment) query.set("segment", segment);
  if (Number($("n_best").value) > Number($("beam_size").value)) query.set("n_best", $("beam_size").value);
  const form = new FormData();
  form.append("file", blob, name);
  let response;
  try {
    response = await fetch(`/v1/caption?${query}`, {method: "POST", body: form, headers: apiHeaders()});
  } catch (err) {
    setStatus("");
    showError(`Cannot reach the server (${err.message}). Is audiocap serve still running?`);
    return;
  }
  if (!response.ok) {
    setStatus("");
    if (response.status === 401) $("key-field").hidden = false;
    showError(await apiError(response));
    return;
  }
  const result = await response.json();
  setStatus("");
  showResult(result, name);
}

function showResult(result, name) {
  const windows = result.segments.length > 1;
  const main = result.caption !== null ? result : result.segments[0];
  $("file-name").textContent = `${name} · ${formatTime(result.duration_seconds)}`;
  $("caption").textContent = result.caption !== null ? result.caption : "(too long for one caption: see the windows below)";
  const confidence = main.confidence;
  $("confidence").textContent = result.caption !== null ? `confidence ${(100 * confidence).toFixed(0)} %` : "";
  $("confidence-bar").style.width = result.caption !== null ? `${(100 * confidence).toFixed(1)}%` : "0";
  const alternatives = (result.alternatives || []).slice(1);
  $("alternatives").replaceChildren(...alternatives.map((text) => Object.assign(document.createElement("li"), {textContent: text})));
  $("alternatives").hidden = alternatives.length === 0;
  $("player").src = current.url;
  current.duration = current.duration || result.duration_seconds;
  current.segments = windows ? result.segments : [];
  $("timeline").replaceChildren(...current.segments.map(timelineEntry));
  $("timeline-block").hidden = !windows;
  $("result").hidden = false;
  $("result").dataset.state = "done";
  drawWave();
}

function timelineEntry(segment, index) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.index = index;
  const time = Object.assign(document.createElement("span"), {className: "time",
    textContent: `${formatTime(segment.start)}–${formatTime(segment.end)}`});
  const text = Object.assign(document.createElement("span"), {className: "text", textContent: segment.caption});
  button.append(time, text);
  button.addEventListener("click", () => seek(segment.start));
  item.append(button);
  return item;
}

function seek(seconds) {
  const player = $("player");
  player.currentTime = seconds;
  player.play().catch(() => {}); // autoplay rules may refuse: the position is set all the same
  highlight();
}

function highlight() {
  const t = $("player").currentTime;
  document.querySelectorAll("#timeline button").forEach((button) => {
    const segment = current.segments[Number(button.dataset.index)];
    button.classList.toggle("active", t >= segment.start && t < segment.end);
  });
  drawWave();
}

function drawWave() {
  const canvas = $("wave");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (!width || !current) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const accent = style.getPropertyValue("--accent").trim(), muted = style.getPropertyValue("--muted").trim();
  const duration = current.duration || 1;
  g.fillStyle = muted;
  current.segments.forEach((segment) => g.fillRect(Math.round(width * segment.start / duration), 0, 1, height));
  if (current.samples) {
    const samples = current.samples, perColumn = samples.length / width, middle = height / 2;
    let peak = 1e-6;
    for (let i = 0; i < samples.length; i += 7) peak = Math.max(peak, Math.abs(samples[i]));
    g.fillStyle = accent;
    for (let x = 0; x < width; x++) {
      let low = 0, high = 0;
      const end = Math.min(samples.length, Math.floor((x + 1) * perColumn));
      for (let i = Math.floor(x * perColumn); i < end; i++) { const v = samples[i]; if (v < low) low = v; if (v > high) high = v; }
      const top = middle - (high / peak) * (middle - 4), bottom = middle - (low / peak) * (middle - 4);
      g.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  } else {
    g.fillStyle = muted;
    g.font = "13px system-ui, sans-serif";
    g.fillText("(this browser cannot draw this format; the server captioned it)", 10, height / 2 + 4);
  }
  const at = $("player").currentTime / duration;
  g.fillStyle = "#d62839";
  g.fillRect(Math.round(width * at), 0, 2, height);
}

async function toggleRecording() {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  showError("");
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("Recording needs a browser with MediaRecorder, on https or on this machine (localhost).");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
  } catch (err) {
    showError(`No microphone: ${err.message}. Allow the page to use it, or pick a file instead.`);
    return;
  }
  const type = MediaRecorder.isTypeSupported("audio/webm;codecs=opus") ? "audio/webm;codecs=opus" : "";
  recorder = new MediaRecorder(stream, type ? {mimeType: type} : {});
  const chunks = [], started = Date.now();
  const timer = setInterval(() => { $("record-time").textContent = formatTime((Date.now() - started) / 1000); }, 200);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    clearInterval(timer);
    stream.getTracks().forEach((track) => track.stop());
    $("record").classList.remove("recording");
    $("record-label").textContent = "Record";
    $("record-time").textContent = "";
    const blob = new Blob(chunks, {type: recorder.mimeType || "audio/webm"});
    caption(blob, "recording.webm");
  });
  recorder.start();
  $("record").classList.add("recording");
  $("record-label").textContent = "Stop";
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) caption(f, f.name); $("file").value = ""; });
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) caption(file, file.name);
  });
  $("record").addEventListener("click", toggleRecording);
  $("api_key").addEventListener("change", () => { sessionStorage.setItem("audiocap-key", $("api_key").value.trim()); loadModelInfo(); });
  $("player").addEventListener("timeupdate", highlight);
  $("player").addEventListener("seeked", highlight);
  $("wave").addEventListener("click", (event) => {
    if (!current || !current.duration) return;
    const box = $("wave").getBoundingClientRect();
    seek(current.duration * (event.clientX - box.left) / box.width);
  });
  window.addEventListener("resize", drawWave);
  loadModelInfo();
}

setUp();
