// Voice input for Grace's chat page: a microphone button that records in the browser, sends the
// recording to POST /api/transcriptions (Fiedler transcribes it) and puts the text in the message box
// for the person to edit and send. Shown only when a speech-to-text model is configured (GET /api/voice)
// and the browser can record. A separate module so the chat page's own script stays untouched.

const input = document.getElementById("message-input");
const sendButton = document.getElementById("send-button");
const errorLine = document.getElementById("composer-error");

function showError(message) {
  if (!errorLine) return;
  errorLine.textContent = message;
  errorLine.hidden = false;
}

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

// The base type MediaRecorder produced, without parameters the server does not need (codecs=…).
function baseType(type) {
  return (type || "audio/webm").split(";")[0].trim() || "audio/webm";
}

function insertText(text) {
  const current = input.value;
  input.value = current && !/\s$/.test(current) ? `${current} ${text}` : current + text;
  input.dispatchEvent(new Event("input", { bubbles: true }));
  input.focus();
}

async function transcribe(blob, csrf, maxBytes) {
  if (blob.size === 0) throw new Error("nothing was recorded");
  if (maxBytes && blob.size > maxBytes) throw new Error("the recording is too long; try a shorter one");
  const language = (navigator.language || "").slice(0, 2).toLowerCase();
  const query = /^[a-z]{2}$/.test(language) ? `?language=${language}` : "";
  const response = await fetch(`/api/transcriptions${query}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": baseType(blob.type), "X-CSRF-Token": csrf || "" },
    body: blob,
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body.text || "";
}

// A microphone drawn as SVG (no emoji: headless and minimal systems may lack an emoji font).
function microphoneIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const shapes = [
    ["rect", { x: "9", y: "3", width: "6", height: "11", rx: "3" }],
    ["path", { d: "M5 11a7 7 0 0 0 14 0M12 18v3M8 21h8" }],
  ];
  for (const [tag, attributes] of shapes) {
    const shape = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) shape.setAttribute(name, value);
    shape.setAttribute("fill", "none");
    shape.setAttribute("stroke", "currentColor");
    shape.setAttribute("stroke-width", "2");
    shape.setAttribute("stroke-linecap", "round");
    svg.append(shape);
  }
  return svg;
}

function makeButton() {
  const button = document.createElement("button");
  button.type = "button";
  button.id = "voice-button";
  button.className = "button ghost";
  button.append(microphoneIcon());
  button.setAttribute("aria-label", "Record a voice message");
  button.setAttribute("aria-pressed", "false");
  button.title = "Record a voice message (the text goes into the message box)";
  sendButton.parentElement.insertBefore(button, sendButton);
  return button;
}

async function start() {
  if (!input || !sendButton || !navigator.mediaDevices || typeof MediaRecorder === "undefined") return;
  let voice;
  let session;
  try {
    [voice, session] = await Promise.all([getJson("/api/voice"), getJson("/api/session")]);
  } catch {
    return; // signed out or unavailable: no button
  }
  if (!voice.transcription) return;
  const button = makeButton();
  let recorder = null;
  let chunks = [];

  const setRecording = (on) => {
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.setAttribute("aria-label", on ? "Stop recording" : "Record a voice message");
    button.classList.toggle("primary", on);
  };

  button.addEventListener("click", async () => {
    if (recorder && recorder.state === "recording") {
      recorder.stop();
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch {
      showError("The microphone is not available (permission denied or no device).");
      return;
    }
    chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener("stop", async () => {
      for (const track of stream.getTracks()) track.stop();
      setRecording(false);
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      try {
        const blob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
        insertText(await transcribe(blob, session.csrf_token, voice.max_bytes));
      } catch (error) {
        showError(`Transcription failed: ${error.message}`);
      } finally {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    });
    recorder.start();
    setRecording(true);
  });
}

start();
