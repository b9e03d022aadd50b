// Grace's chat page: pick or start a conversation, talk over one WebSocket, watch replies stream in.
// No inline code anywhere (the page must run under script-src 'self').

import { artifactsOf, renderArtifacts } from "./artifacts.js";

const PARTICIPANTS_TYPE = "application/vnd.mad.participants+json";
const ERROR_TYPE = "application/vnd.mad.error+json";
const CHAT_MAD = "grace"; // the MAD a person talks to; everything else in a conversation is between MADs
const PERSON_PREFIX = "user.";
const NO_TEXT = "(the reply carried no text)";

const $ = (id) => document.getElementById(id);
const els = {
  list: $("conversation-list"),
  more: $("more-conversations"),
  empty: $("conversation-empty"),
  newButton: $("new-conversation"),
  title: $("chat-title"),
  status: $("connection-status"),
  participants: $("participants"),
  messages: $("messages"),
  welcome: $("welcome"),
  form: $("composer"),
  input: $("message-input"),
  send: $("send-button"),
  error: $("composer-error"),
  template: $("message-template"),
  who: $("who"),
  logout: $("logout"),
  alerts: $("alerts"),
  alertList: $("alert-list"),
  alertEmpty: $("alert-empty"),
};

const ALERT_POLL_MS = 30000;

const state = {
  conversation: null,
  socket: null,
  nextCursor: null,
  pending: new Map(), // client_id -> message element waiting for its reply
  live: null, // the element receiving deltas for the turn in progress
  taking: new Set(),
  counter: 0,
  session: null, // {principal, role, csrf_token} from GET /api/session
};

// Every call rides on the HttpOnly session cookie; state-changing ones carry the CSRF token.
async function api(path, options = {}) {
  const headers = {};
  if (options.body) headers["Content-Type"] = "application/json";
  const method = (options.method || "GET").toUpperCase();
  if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) {
    location.assign("/login");
    throw new Error("signed out");
  }
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error ? body.error : { message: `HTTP ${response.status}` };
    throw Object.assign(new Error(error.message), { info: error, status: response.status });
  }
  return body;
}

function showError(message) {
  els.error.textContent = message || "";
  els.error.hidden = !message;
}

function setStatus(text) {
  els.status.textContent = text;
}

function badge(text, kind) {
  const li = document.createElement("li");
  li.className = `badge${kind ? ` ${kind}` : ""}`;
  li.textContent = text;
  return li;
}

function setParticipants(names) {
  for (const name of names) state.taking.add(name);
  els.participants.replaceChildren(...[...state.taking].map((n) => badge(n)));
}

function formatTime(value) {
  const date = value ? new Date(value) : new Date();
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

const COLLAPSE_LINES = 12;

// Command results can be long JSON: show the first line, the rest folds away in a <details>.
function setBody(node, text) {
  const body = node.querySelector(".message-body");
  const lines = text.split("\n");
  body.classList.toggle("code", text.startsWith("/"));
  if (!text.startsWith("/") || lines.length <= COLLAPSE_LINES) {
    body.textContent = text;
    return;
  }
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = `${lines[0]} (${lines.length - 1} lines)`;
  const pre = document.createElement("pre");
  pre.textContent = lines.slice(1).join("\n");
  details.append(summary, pre);
  body.replaceChildren(details);
}

function addMessage({ author, text, role, error = false, time, badges = [] }) {
  els.welcome.hidden = true;
  const node = els.template.content.firstElementChild.cloneNode(true);
  node.classList.add(role);
  if (error) node.classList.add("error");
  node.querySelector(".author").textContent = author;
  const stamp = node.querySelector("time");
  stamp.textContent = formatTime(time);
  if (time) stamp.dateTime = time;
  const list = node.querySelector(".badges");
  for (const [label, kind] of badges) if (label !== author) list.append(badge(label, kind));
  setBody(node, text || "");
  els.messages.append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function addBadge(node, label, kind) {
  if (label === node.querySelector(".author").textContent) return;
  const list = node.querySelector(".badges");
  const exists = [...list.children].some((li) => li.textContent === label);
  if (!exists) list.append(badge(label, kind));
}

// Long work shows what is happening (who thinks, which tool runs) until the reply's text arrives.
function setProgress(node, text) {
  let line = node.querySelector(".progress");
  if (!line) {
    line = document.createElement("p");
    line.className = "progress muted small";
    line.setAttribute("role", "status");
    node.append(line);
  }
  line.textContent = text;
  line.hidden = false;
}

function clearProgress(node) {
  const line = node.querySelector(".progress");
  if (line) line.remove();
}

function finishMessage(node, { text, participants = [], error = null, artifacts = [] }) {
  node.removeAttribute("aria-busy");
  clearProgress(node);
  let shown = text || "";
  if (!shown && error) shown = `${error.code}: ${error.message}`;
  setBody(node, shown || (artifacts.length ? "" : NO_TEXT));
  renderArtifacts(node.querySelector(".message-body"), artifacts);
  if (error) node.classList.add("error");
  for (const name of participants) addBadge(node, name);
  setParticipants(participants);
  node.scrollIntoView({ block: "end" });
}

// ---- conversations -----------------------------------------------------------------------------

function renderConversation(conversation) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.id = conversation.id;
  button.textContent = conversation.title || "Untitled conversation";
  const meta = document.createElement("span");
  meta.className = "meta";
  const count = chatMessageCount(conversation);
  meta.textContent = `${count} message${count === 1 ? "" : "s"} · ${formatTime(conversation.updated_at)}`;
  button.append(meta);
  if (state.conversation && state.conversation.id === conversation.id) button.setAttribute("aria-current", "true");
  button.addEventListener("click", () => openConversation(conversation));
  li.append(button);
  return li;
}

// What the chat shows: the person's messages and the replies to them. Each involves exactly one person
// address, so the people's participant counts add up to it; messages between MADs are not counted.
function chatMessageCount(conversation) {
  if (!Array.isArray(conversation.participants)) return conversation.message_count;
  return conversation.participants
    .filter((p) => p.address.startsWith(PERSON_PREFIX))
    .reduce((sum, p) => sum + p.message_count, 0);
}

async function loadConversations(append = false) {
  const query = append && state.nextCursor ? `?cursor=${encodeURIComponent(state.nextCursor)}` : "";
  try {
    const page = await api(`/api/conversations${query}`);
    const items = page.conversations.map(renderConversation);
    if (append) els.list.append(...items);
    else els.list.replaceChildren(...items);
    state.nextCursor = page.next_cursor;
    els.more.hidden = !page.next_cursor;
    els.empty.hidden = els.list.children.length > 0;
  } catch (error) {
    showError(`Could not load conversations: ${error.message}`);
  }
}

function markCurrent() {
  for (const button of els.list.querySelectorAll("button")) {
    if (state.conversation && button.dataset.id === state.conversation.id) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function clearMessages() {
  els.messages.replaceChildren(els.welcome);
  els.welcome.hidden = false;
  state.taking.clear();
  els.participants.replaceChildren();
  state.pending.clear();
  state.live = null;
}

function participantsOf(envelope) {
  const parts = (envelope && envelope.content) || [];
  const found = [];
  for (const part of parts) {
    if (part.type === "data" && part.media_type === PARTICIPANTS_TYPE && part.value) found.push(...part.value.participants);
  }
  return found;
}

function errorOf(envelope) {
  for (const part of (envelope && envelope.content) || []) {
    if (part.type === "data" && part.media_type === ERROR_TYPE) return part.value;
  }
  return null;
}

function isChatMad(address) {
  return address === CHAT_MAD || address.startsWith(`${CHAT_MAD}.`);
}

// A stored message as the chat shows it, or null for what passed between MADs (or carries nothing to show).
function chatMessage(message) {
  const fromPerson = message.sender.startsWith(PERSON_PREFIX);
  if (message.kind === "request" && fromPerson && isChatMad(message.recipient)) {
    return message.text ? { author: "You", text: message.text, role: "user" } : null;
  }
  const toPerson = message.recipient.startsWith(PERSON_PREFIX);
  if (toPerson && isChatMad(message.sender) && (message.kind === "reply" || message.kind === "error")) {
    const error = errorOf(message.envelope);
    // An error reply reads as it did live: the gateway's error body names the MAD before its message.
    const failed = message.kind === "error" && error ? `${error.code}: ${message.sender}: ${error.message}` : "";
    const text = failed || message.text || (error ? `${error.code}: ${error.message}` : "");
    return text ? { author: CHAT_MAD, text, role: "grace", error: Boolean(error) || message.kind === "error" } : null;
  }
  return null;
}

async function loadHistory(conversation) {
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "200" });
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/api/conversations/${encodeURIComponent(conversation.id)}/messages?${query}`);
    for (const message of page.messages) {
      const shown = chatMessage(message);
      if (!shown) continue;
      if (shown.role === "user") {
        addMessage({ ...shown, time: message.created_at });
      } else {
        const names = participantsOf(message.envelope);
        const node = addMessage({ ...shown, time: message.created_at, badges: names.map((n) => [n]) });
        node.setAttribute("aria-label", `Reply from ${message.sender}`);
        renderArtifacts(node.querySelector(".message-body"), artifactsOf(message.envelope));
        setParticipants(names);
      }
    }
    cursor = page.next_cursor;
  } while (cursor);
}

async function openConversation(conversation) {
  showError("");
  state.conversation = conversation;
  history.replaceState(null, "", `#/c/${encodeURIComponent(conversation.id)}`);
  els.title.textContent = conversation.title || "Untitled conversation";
  markCurrent();
  clearMessages();
  connect(conversation.id);
  try {
    await loadHistory(conversation);
  } catch (error) {
    showError(`Could not load the history: ${error.message}`);
  }
  els.input.focus();
}

async function newConversation(title) {
  const body = title ? JSON.stringify({ title }) : "{}";
  const conversation = await api("/api/conversations", { method: "POST", body });
  await loadConversations();
  await openConversation(conversation);
  return conversation;
}

// ---- the socket --------------------------------------------------------------------------------

function connect(conversationId) {
  if (state.socket) state.socket.close(1000, "switching conversation");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/conversations/${encodeURIComponent(conversationId)}/stream`);
  state.socket = socket;
  setStatus("Connecting…");
  socket.addEventListener("message", (event) => {
    if (socket === state.socket) onFrame(JSON.parse(event.data));
  });
  socket.addEventListener("close", (event) => {
    if (socket !== state.socket) return;
    state.socket = null;
    setStatus(event.code === 1001 ? "The ecosystem is shutting down" : "Disconnected");
    for (const node of state.pending.values()) finishMessage(node, { error: { code: "disconnected", message: "connection closed before the reply" } });
    state.pending.clear();
  });
}

function liveMessage() {
  if (!state.live) {
    state.live = addMessage({ author: CHAT_MAD, text: "", role: "grace" });
    state.live.setAttribute("aria-busy", "true");
    setProgress(state.live, `${CHAT_MAD} is working on it…`);
  }
  return state.live;
}

function hasText(node) {
  return node.querySelector(".message-body").textContent.length > 0;
}

function onFrame(frame) {
  switch (frame.type) {
    case "ready":
      setStatus("Connected");
      break;
    case "delta": {
      const node = liveMessage();
      if (frame.event === "delta" && frame.text && frame.mad === CHAT_MAD) {
        clearProgress(node);
        node.querySelector(".message-body").textContent += frame.text;
        node.scrollIntoView({ block: "end" });
      } else if (frame.event === "delta") {
        addBadge(node, frame.mad);
        if (!hasText(node)) setProgress(node, `${frame.mad} is writing…`);
      } else if (frame.event === "done" && frame.mad === CHAT_MAD && state.pending.size === 0) {
        node.removeAttribute("aria-busy");
        clearProgress(node);
        if (!hasText(node)) node.remove(); // another page's turn that ended with nothing to show
        state.live = null;
      } else if (frame.event === "handoff") {
        addBadge(node, `→ ${frame.mad}`, "handoff");
        setParticipants([frame.mad]);
        if (!hasText(node)) setProgress(node, `${frame.mad} is working on it…`);
      } else if (frame.event === "tool") {
        const tool = frame.detail && frame.detail.tool ? `${frame.mad}.${frame.detail.tool}` : frame.mad;
        addBadge(node, tool, "tool");
        if (!hasText(node)) setProgress(node, `${tool} is running…`);
      } else if (frame.event === "error") {
        node.classList.add("error");
      }
      break;
    }
    case "notice":
      setStatus(frame.message);
      break;
    case "reply": {
      const node = state.pending.get(frame.client_id) || state.live || liveMessage();
      state.pending.delete(frame.client_id);
      finishMessage(node, {
        text: frame.reply.text,
        participants: frame.participants,
        error: frame.reply.error,
        artifacts: frame.reply.artifacts || [],
      });
      state.live = null;
      loadConversations();
      break;
    }
    case "error": {
      const node = state.pending.get(frame.client_id);
      state.pending.delete(frame.client_id);
      if (node) finishMessage(node, { error: frame.error });
      else showError(frame.error.message);
      state.live = null;
      break;
    }
    default:
      break;
  }
}

async function send(text) {
  showError("");
  if (!state.conversation) await newConversation(text.slice(0, 60).trim());
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    await new Promise((resolve, reject) => {
      const socket = state.socket;
      if (!socket) return reject(new Error("not connected"));
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("close", () => reject(new Error("could not connect")), { once: true });
    });
  }
  addMessage({ author: "You", text, role: "user" });
  const clientId = `c${Date.now()}-${state.counter++}`;
  state.live = null;
  const node = liveMessage();
  state.pending.set(clientId, node);
  state.socket.send(JSON.stringify({ type: "message", text, client_id: clientId }));
}

// ---- wiring ------------------------------------------------------------------------------------

els.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = els.input.value;
  if (!text.trim()) {
    showError("Type a message first.");
    els.input.focus();
    return;
  }
  els.send.disabled = true;
  try {
    await send(text);
    els.input.value = "";
  } catch (error) {
    showError(`Not sent: ${error.message}`);
  } finally {
    els.send.disabled = false;
    els.input.focus();
  }
});

els.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    els.form.requestSubmit();
  }
});

els.newButton.addEventListener("click", async () => {
  try {
    await newConversation(null);
  } catch (error) {
    showError(`Could not start a conversation: ${error.message}`);
  }
});

els.more.addEventListener("click", () => loadConversations(true));

// ---- session and security alerts ---------------------------------------------------------------

function renderAlert(alert) {
  const li = document.createElement("li");
  li.className = `alert-item severity-${alert.severity}`;
  const text = document.createElement("span");
  text.textContent = `${alert.severity}: ${alert.message}${alert.count > 1 ? ` (×${alert.count})` : ""}`;
  li.append(text);
  if (state.session && state.session.role === "operator") {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button ghost small";
    button.textContent = "Acknowledge";
    button.setAttribute("aria-label", `Acknowledge alert: ${alert.message}`);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/api/alerts/${encodeURIComponent(alert.id)}/acknowledge`, { method: "POST", body: "{}" });
        await loadAlerts();
      } catch (error) {
        showError(`Could not acknowledge: ${error.message}`);
        button.disabled = false;
      }
    });
    li.append(button);
  }
  return li;
}

async function loadAlerts() {
  try {
    const { alerts } = await api("/api/alerts");
    els.alertList.replaceChildren(...alerts.map(renderAlert));
    els.alertEmpty.hidden = alerts.length > 0;
    els.alerts.hidden = false;
  } catch (error) {
    els.alerts.hidden = true;
  }
}

els.logout.addEventListener("click", async () => {
  try {
    await api("/api/session/logout", { method: "POST", body: "{}" });
  } finally {
    location.assign("/login");
  }
});

async function start() {
  state.session = await api("/api/session");
  els.who.textContent = `Signed in as ${state.session.principal} (${state.session.role})`;
  $("regeneration-link").hidden = state.session.role !== "operator";
  loadAlerts();
  setInterval(loadAlerts, ALERT_POLL_MS);
  await loadConversations();
  const linked = /^#\/c\/([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (linked) {
    try {
      await openConversation(await api(`/api/conversations/${linked[1]}`));
    } catch (error) {
      showError(`Could not open the linked conversation: ${error.message}`);
    }
  }
}

start();
