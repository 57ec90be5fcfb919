// Parley's web page: sign-in, the session list, and the chat view of one session.
// Plain ES modules, no framework; every node is built with createElement (see dom.js).

import { ApiError, authEvents, get, patch, post } from "./api.js";
import { ApiKeysPanel } from "./apikeys.js";
import { BudgetMeter, spentText } from "./budget.js";
import { ChatView } from "./chat.js";
import { clear, formatTime, h } from "./dom.js";
import { DetailsPanel, MemoryPanel } from "./panels.js";
import { ParleySocket } from "./socket.js";

// Not a credential: only whether to try GET /v1/me on load (the cookies are HttpOnly),
// so that a first visit does not start with a 401 in the console.
const SIGNED_IN_FLAG = "parley.signedIn";
// Expiry after idle minutes is the server's bookkeeping: an expired session reads and
// writes like an active one (writing continues it), so it shows no badge of its own.
const STATUS_LABELS = { active: "", expired: "", closed: "Closed" };
const FILTERS = { open: "Recent", closed: "Closed", all: "All" };
const CONNECTION_LABELS = { open: "Connected", connecting: "Reconnecting…", offline: "Offline" };

const root = document.getElementById("app");
const state = { me: null, socket: null, filter: "open", sessions: [], current: null };
let noticeTimer = null;

// Notices -------------------------------------------------------------------------------

const noticeEl = h("div", {
  class: "notice",
  testid: "notice",
  role: "status",
  title: "Click to dismiss",
  hidden: true,
  onclick: () => (noticeEl.hidden = true),
});

function notify(message, kind = "error") {
  noticeEl.textContent = message;
  noticeEl.dataset.kind = kind;
  noticeEl.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (noticeEl.hidden = true), 6000);
}

// Sign-in -------------------------------------------------------------------------------

function showAuth(message = "") {
  state.socket?.stop();
  state.socket = null;
  state.me = null;
  state.current = null;
  localStorage.removeItem(SIGNED_IN_FLAG);
  let mode = "login";
  const error = h("p", { class: "form-error", testid: "auth-error", role: "alert", text: message, hidden: !message });
  const name = h("input", { type: "text", testid: "auth-name", autocomplete: "name", placeholder: "Your name", "aria-label": "Name", maxlength: "100" });
  const nameRow = h("label", { hidden: true }, "Name", name);
  const email = h("input", { type: "email", testid: "auth-email", autocomplete: "email", placeholder: "you@example.com", "aria-label": "Email", required: true });
  const password = h("input", { type: "password", testid: "auth-password", autocomplete: "current-password", placeholder: "At least 8 characters", "aria-label": "Password", required: true, minlength: "8" });
  const submit = h("button", { type: "submit", class: "primary", testid: "auth-submit" }, "Log in");
  const toggle = h("button", { type: "button", class: "link", testid: "auth-mode-toggle" }, "New here? Create an account");
  toggle.addEventListener("click", () => {
    mode = mode === "login" ? "register" : "login";
    nameRow.hidden = mode === "login";
    submit.textContent = mode === "login" ? "Log in" : "Create account";
    toggle.textContent = mode === "login" ? "New here? Create an account" : "Have an account? Log in";
    password.autocomplete = mode === "login" ? "current-password" : "new-password";
  });
  const form = h(
    "form",
    { class: "auth-card", testid: "auth-form" },
    h("h1", { class: "brand", text: "Parley" }),
    h("p", { class: "muted", text: "Chat rooms with an assistant that answers as it thinks." }),
    nameRow,
    h("label", {}, "Email", email),
    h("label", {}, "Password", password),
    error,
    submit,
    toggle,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.hidden = true;
    try {
      if (mode === "register") {
        const displayName = name.value.trim() || email.value.split("@")[0];
        await post("/v1/auth/register", { email: email.value.trim(), password: password.value, name: displayName });
      }
      const login = await post("/v1/auth/login", { email: email.value.trim(), password: password.value });
      localStorage.setItem(SIGNED_IN_FLAG, "1");
      showMain(login.user);
    } catch (exc) {
      error.textContent = exc instanceof ApiError && exc.code === "unauthorized" ? "Wrong email or password." : exc.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  clear(root).append(h("main", { class: "auth", testid: "auth-view" }, form), noticeEl);
  email.focus();
}

async function logout() {
  try {
    await post("/v1/auth/logout");
  } catch {
    // Signed out locally whatever the server said.
  }
  showAuth();
}

// The main view ------------------------------------------------------------------------

const ui = {};

function showMain(me) {
  state.me = me;
  ui.connection = h("span", { class: "connection", testid: "connection", "data-state": "offline", role: "status" }, h("span", { class: "dot", "aria-hidden": "true" }), h("span", { class: "label", text: CONNECTION_LABELS.offline }));
  ui.sessionList = h("ul", { class: "session-list", testid: "session-list" });
  ui.invitations = h("ul", { class: "session-list invitations", testid: "invitations", hidden: true });
  ui.filter = h(
    "select",
    { testid: "session-filter", "aria-label": "Show sessions", onchange: () => ((state.filter = ui.filter.value), loadSessions()) },
    Object.entries(FILTERS).map(([value, text]) => h("option", { value, text })),
  );
  ui.filter.value = state.filter;
  ui.newTitle = h("input", { type: "text", testid: "session-new-title", placeholder: "New session title", "aria-label": "New session title", maxlength: "200" });
  ui.chatPane = h("section", { class: "chat-pane", testid: "chat-view" }, emptyChat());
  ui.memory = new MemoryPanel({ notify, onClose: () => (ui.memory.el.hidden = true) });
  ui.apiKeys = new ApiKeysPanel({ notify, onClose: () => (ui.apiKeys.el.hidden = true) });
  ui.budget = new BudgetMeter();
  ui.layout = h(
    "div",
    { class: "layout" },
    h(
      "aside",
      { class: "sidebar", testid: "sidebar" },
      h("form", { class: "inline-form new-session", onsubmit: createSession }, ui.newTitle, h("button", { type: "submit", class: "primary", testid: "session-create" }, "New")),
      ui.invitations,
      h("div", { class: "filter-row" }, h("span", { class: "muted", text: "Sessions" }), ui.filter),
      ui.sessionList,
    ),
    ui.chatPane,
  );
  const topbar = h(
    "header",
    { class: "topbar" },
    h("span", { class: "brand", text: "Parley" }),
    ui.connection,
    h("span", { class: "spacer" }),
    ui.budget.el,
    h("span", { class: "me", testid: "me-name", text: me.name }),
    h("button", { type: "button", class: "link", testid: "memory-open", onclick: openMemory }, "Memory"),
    h("button", { type: "button", class: "link", testid: "api-keys-open", onclick: openApiKeys }, "API keys"),
    h("button", { type: "button", class: "link", testid: "logout", onclick: logout }, "Log out"),
  );
  clear(root).append(topbar, ui.layout, ui.memory.el, ui.apiKeys.el, noticeEl);

  const socket = new ParleySocket();
  state.socket = socket;
  socket.addEventListener("state", (event) => showConnection(event.detail));
  socket.addEventListener("welcome", (event) => ui.budget.update(event.detail.budget));
  socket.addEventListener("frame", (event) => event.detail.type === "budget" && onBudgetNotice(event.detail));
  socket.addEventListener("unauthorized", () => showAuth("Your sign-in expired. Please log in again."));
  socket.start();
  loadSessions().then(() => {
    const wanted = location.hash.match(/^#\/s\/([\w-]+)$/);
    const found = wanted && state.sessions.find((s) => s.id === wanted[1]);
    if (found) openSession(found);
  });
}

// The server's budget notice: at 80 % spent once a period, and once it is spent (which
// the open chat shows in place, above the composer).
function onBudgetNotice(frame) {
  ui.budget.update(frame.budget);
  if (ui.budget.level === "warning") notify(ui.budget.warningText(), "warning");
  else if (ui.budget.level === "exhausted" && !state.current) notify(spentText(frame.budget.resets_at), "warning");
}

function showConnection(connection) {
  ui.connection.dataset.state = connection;
  ui.connection.querySelector(".label").textContent = CONNECTION_LABELS[connection];
}

function openMemory() {
  ui.memory.el.hidden = false;
  ui.memory.load();
}

function openApiKeys() {
  ui.apiKeys.el.hidden = false;
  ui.apiKeys.load();
}

// Sessions ---------------------------------------------------------------------------

let sessionsGeneration = 0;

// Invitations: an owner added you by email; you join by accepting. Loaded with the
// session list and whenever the window regains focus.
async function loadInvitations() {
  let data;
  try {
    data = await get("/v1/me/invitations");
  } catch {
    return;
  }
  clear(ui.invitations);
  for (const invitation of data.invitations) {
    const answer = async (verb) => {
      try {
        await post(`/v1/me/invitations/${invitation.id}/${verb}`, {});
      } catch (exc) {
        notify(exc.message);
      }
      await loadSessions();
    };
    ui.invitations.append(
      h(
        "li",
        { class: "invitation", testid: "invitation", "data-session-id": invitation.session_id },
        h("span", { class: "title", text: `${invitation.invited_by || "Someone"} invites you to “${invitation.session_title || "Untitled session"}”` }),
        h("button", { type: "button", class: "primary", testid: "invitation-accept", onclick: () => answer("accept") }, "Join"),
        h("button", { type: "button", class: "link", testid: "invitation-decline", onclick: () => answer("decline") }, "Decline"),
      ),
    );
  }
  ui.invitations.hidden = data.invitations.length === 0;
}

window.addEventListener("focus", () => state.me && ui.invitations && loadInvitations());

async function loadSessions() {
  loadInvitations();
  // Only the newest of overlapping loads draws the list (filter changes race renames).
  const generation = ++sessionsGeneration;
  try {
    const data = await get(`/v1/sessions?status=${state.filter}`);
    if (generation !== sessionsGeneration) return;
    state.sessions = data.sessions;
  } catch (exc) {
    notify(exc.message);
    return;
  }
  clear(ui.sessionList);
  for (const session of state.sessions) {
    const selected = state.current?.session.id === session.id;
    ui.sessionList.append(
      h(
        "li",
        {},
        h(
          "button",
          { type: "button", class: `session-item${selected ? " selected" : ""}`, testid: "session-item", "data-session-id": session.id, "aria-current": selected ? "true" : null, onclick: () => openSession(session) },
          h("span", { class: "title", text: session.title || "Untitled session" }),
          h("span", { class: `badge ${session.status}`, text: STATUS_LABELS[session.status] ?? session.status, hidden: !STATUS_LABELS[session.status] }),
          h("span", { class: "muted small", text: formatTime(session.last_activity_at) }),
        ),
      ),
    );
  }
  if (state.sessions.length === 0) {
    ui.sessionList.append(h("li", { class: "muted empty-list", text: state.filter === "open" ? "No sessions yet: start one above." : "Nothing here." }));
  }
}

async function createSession(event) {
  event.preventDefault();
  try {
    const session = await post("/v1/sessions", { title: ui.newTitle.value.trim() });
    ui.newTitle.value = "";
    if (state.filter === "closed") ui.filter.value = state.filter = "open";
    await loadSessions();
    openSession(session);
  } catch (exc) {
    notify(exc.message);
  }
}

function emptyChat() {
  return h("div", { class: "chat-empty", testid: "chat-empty" }, h("p", { text: "Pick a session, or start a new one." }));
}

function closeCurrent() {
  if (!state.current) return;
  state.current.chat.destroy();
  state.current = null;
}

function openSession(session) {
  closeCurrent();
  history.replaceState(null, "", `#/s/${session.id}`);
  const chat = new ChatView({ socket: state.socket, me: state.me, session, notify, budget: ui.budget, onLeft: backToList, onMembers: () => state.current?.details.loadMembers() });
  const details = new DetailsPanel({ session, isOwner: session.owner_id === state.me.id, notify });
  state.current = { session, chat, details };
  details.el.hidden = !window.matchMedia("(min-width: 1100px)").matches;
  clear(ui.chatPane).append(chatHeader(session, details), h("div", { class: "chat-columns" }, chat.el, details.el));
  applyStatus(session);
  ui.layout.classList.add("show-chat");
  for (const item of ui.sessionList.querySelectorAll(".session-item")) {
    item.classList.toggle("selected", item.dataset.sessionId === session.id);
  }
  chat.start();
  details.load();
}

function backToList() {
  closeCurrent();
  history.replaceState(null, "", "#");
  clear(ui.chatPane).append(emptyChat());
  ui.layout.classList.remove("show-chat");
  loadSessions();
}

function chatHeader(session, details) {
  const title = h("h2", { class: "chat-title", testid: "chat-title", text: session.title || "Untitled session" });
  const status = h("span", { class: `badge ${session.status}`, testid: "chat-status", text: STATUS_LABELS[session.status] ?? session.status, hidden: !STATUS_LABELS[session.status] });
  const isOwner = session.owner_id === state.me.id;
  const rename = h("button", { type: "button", class: "link", testid: "rename", hidden: !isOwner, onclick: () => startRename(title) }, "Rename");
  const close = h("button", { type: "button", class: "link", testid: "close-session", onclick: () => changeStatus("close") }, "Close");
  const restore = h("button", { type: "button", class: "link", testid: "restore-session", onclick: () => changeStatus("restore") }, "Restore");
  const toggle = h("button", { type: "button", class: "link", testid: "details-toggle", onclick: () => (details.el.hidden = !details.el.hidden) }, "People & docs");
  ui.header = { title, status, close, restore };
  return h(
    "header",
    { class: "chat-header" },
    h("button", { type: "button", class: "link back", testid: "back", "aria-label": "Back to sessions", onclick: backToList }, "‹"),
    h("div", { class: "title-wrap" }, title, status),
    h("div", { class: "actions" }, rename, toggle, close, restore),
  );
}

function applyStatus(session) {
  const active = session.status !== "closed";
  ui.header.status.textContent = STATUS_LABELS[session.status] ?? session.status;
  ui.header.status.hidden = !STATUS_LABELS[session.status];
  ui.header.status.className = `badge ${session.status}`;
  ui.header.close.hidden = !active || session.owner_id !== state.me.id;
  ui.header.restore.hidden = active;
  const chat = state.current.chat;
  chat.input.disabled = !active;
  chat.input.placeholder = active ? "Write a message…" : `This session is ${session.status}. Restore it to continue.`;
}

function startRename(title) {
  const session = state.current.session;
  const input = h("input", { type: "text", testid: "rename-input", value: session.title, maxlength: "200", "aria-label": "Session title" });
  const form = h("form", { class: "inline-form rename" }, input, h("button", { type: "submit", class: "primary", testid: "rename-save" }, "Save"));
  const finish = () => form.replaceWith(title);
  input.addEventListener("keydown", (event) => event.key === "Escape" && finish());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const updated = await patch(`/v1/sessions/${session.id}`, { title: input.value.trim() });
      Object.assign(session, updated);
      title.textContent = updated.title || "Untitled session";
      loadSessions();
    } catch (exc) {
      notify(exc.message);
    }
    finish();
  });
  title.replaceWith(form);
  input.focus();
  input.select();
}

async function changeStatus(action) {
  const session = state.current.session;
  try {
    const updated = await post(`/v1/sessions/${session.id}/${action}`);
    Object.assign(session, updated);
    applyStatus(session);
    if (action === "restore") state.current.chat.join();
    loadSessions();
  } catch (exc) {
    notify(exc.message);
  }
}

// Start -------------------------------------------------------------------------------

authEvents.addEventListener("unauthorized", () => {
  if (state.me) showAuth("Your sign-in expired. Please log in again.");
});
window.addEventListener("online", () => state.socket?.reconnectNow());

async function boot() {
  if (!localStorage.getItem(SIGNED_IN_FLAG)) {
    showAuth();
    return;
  }
  try {
    showMain(await get("/v1/me"));
  } catch {
    showAuth();
  }
}

boot();
