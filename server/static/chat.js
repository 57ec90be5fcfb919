// The chat view of one session: the timeline, the streaming answers, presence, typing,
// the composer and Stop. Each streaming answer has its own Stop; the composer's Stop
// stops the answers to your own questions, never someone else's.
//
// Exactly-once on screen: a message is drawn once per id (and placed by seq); a
// stream's deltas are applied strictly in index order (early ones wait in a buffer,
// repeated ones are dropped), and an ended stream ignores anything late. That makes
// replays after a reconnect — join with since_seq, resume from the next index —
// safe to overlap with what is already shown.

import { get } from "./api.js";
import { isOwners, refusalText, spentText } from "./budget.js";
import { clear, copyButton, debounce, formatDay, formatTime, h, sameDay } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { failureNote, versionControls, versionNav } from "./versions.js";

const STAGES = {
  searching: "Searching the web…",
  retrieving: "Reading the session's documents…",
  summarising: "Summarising earlier messages…",
  generating: "Writing…",
};
const TYPING_IDLE_MS = 2500;
const TYPING_EXPIRY_MS = 8000;
const PAGE = 50;
const RENDER_EVERY_MS = 40;
const JOIN_WAIT_MS = 10000;
// Messages by the same author this close together share one header, as in Slack.
const GROUP_WITHIN_MS = 5 * 60 * 1000;

export class ChatView {
  constructor({ socket, me, session, notify, onLeft, onMembers = () => {}, budget = null }) {
    this.socket = socket;
    this.me = me;
    this.session = session;
    this.id = session.id;
    this.notify = notify;
    this.onLeft = onLeft;
    this.onMembers = onMembers;
    this.names = new Map([[me.id, me.name]]);
    this.present = new Map();
    this.typers = new Map();
    this.shown = new Map(); // message id → element
    this.authors = new Map(); // message id → user id, to know whose question a stream answers
    this.lastSeq = 0;
    this.nextBeforeSeq = null;
    this.loaded = false;
    this.streams = new Map(); // stream id → live stream state
    this.ended = new Set();
    this.typingActive = false;
    this.unseen = 0; // messages that arrived while the reader was scrolled up
    this.unseenStreams = new Set(); // answers that started then and are still being written
    this.stopTyping = debounce(() => this.sendTyping(false), TYPING_IDLE_MS);
    this.joined = false; // typing, resume and messages need the room joined on this connection
    this.joinWaiters = []; // sends waiting for the join to finish
    this.onWelcome = () => {
      this.joined = false;
      this.join();
    };
    this.onFrame = (event) => this.handle(event.detail);
    this.budget = budget; // the top bar's BudgetMeter, or null
    this.onBudget = (event) => this.showBudget(event.detail);
    this.el = this.build();
  }

  // Lifecycle --------------------------------------------------------------------------

  async start() {
    this.socket.addEventListener("welcome", this.onWelcome);
    this.socket.addEventListener("frame", this.onFrame);
    if (this.budget) {
      this.budget.addEventListener("change", this.onBudget);
      this.showBudget(this.budget.budget);
    }
    try {
      const detail = await get(`/v1/sessions/${this.id}`);
      for (const member of detail.members || []) this.names.set(member.user_id, member.name);
      const page = await get(`/v1/sessions/${this.id}/messages?limit=${PAGE}`);
      this.nextBeforeSeq = page.next_before_seq;
      for (const message of page.messages) this.addMessage(message);
    } catch (exc) {
      this.notify(exc.message);
    }
    this.loaded = true;
    this.updateOlderButton();
    this.scrollToEnd(true);
    await this.join();
  }

  destroy() {
    this.socket.removeEventListener("welcome", this.onWelcome);
    this.socket.removeEventListener("frame", this.onFrame);
    this.budget?.removeEventListener("change", this.onBudget);
    this.stopTyping.cancel();
    if (this.typingActive) this.sendTyping(false);
    for (const timer of this.typers.values()) clearTimeout(timer);
    if (this.socket.isOpen) this.socket.send({ type: "leave", session_id: this.id });
    this.el.remove();
  }

  async join() {
    if (!this.loaded || !this.socket.isOpen) return;
    const frame = { type: "join", session_id: this.id, since_seq: this.lastSeq };
    let joined;
    try {
      joined = await this.socket.request(frame);
    } catch (exc) {
      this.notify(`Could not join: ${exc.message}`);
      return;
    }
    this.joined = true;
    for (const resolve of this.joinWaiters.splice(0)) resolve(true);
    this.present.clear();
    for (const member of joined.members || []) {
      this.present.set(member.user_id, member.name);
      this.names.set(member.user_id, member.name);
    }
    this.renderPresence();
    for (const message of joined.history || []) this.receive(message);
    if (joined.recovered === false) await this.catchUp();
    const running = new Set();
    for (const { stream_id: streamId } of joined.streams || []) {
      running.add(streamId);
      this.ensureStream(streamId);
    }
    // Streams we were showing that are not running any more ended while we were away:
    // resuming replays their end while the server holds it, or says not_found.
    for (const streamId of [...this.streams.keys(), ...running]) {
      if (!this.ended.has(streamId)) this.resume(streamId);
    }
    this.scrollToEnd(false);
  }

  async catchUp() {
    // More was missed than the server replays: page forward over REST until current.
    for (;;) {
      const page = await get(`/v1/sessions/${this.id}/messages?after_seq=${this.lastSeq}&limit=200`);
      for (const message of page.messages) this.receive(message);
      if (page.messages.length < 200) return;
    }
  }

  async resume(streamId) {
    const stream = this.streams.get(streamId);
    if (!stream || stream.resuming) return;
    stream.resuming = true;
    try {
      await this.socket.request({
        type: "resume",
        session_id: this.id,
        stream_id: streamId,
        offset: stream.next,
      });
    } catch (exc) {
      if (exc.code === "not_found") this.dropStream(streamId);
    } finally {
      stream.resuming = false;
    }
  }

  // Frames ------------------------------------------------------------------------------

  handle(frame) {
    if (frame.session_id !== this.id && frame.type !== "error") return;
    switch (frame.type) {
      case "message":
        this.receive(frame.message);
        this.setTyping(frame.message.user_id, false);
        break;
      case "presence":
        this.names.set(frame.user_id, frame.name);
        if (frame.state === "join") this.present.set(frame.user_id, frame.name);
        else this.present.delete(frame.user_id);
        this.renderPresence();
        break;
      case "typing":
        if (frame.user_id !== this.me.id) this.setTyping(frame.user_id, frame.active);
        break;
      case "member":
        // Someone was added (or accepted an invitation) or removed: names and the
        // member list follow at once, for everyone in the room.
        if (frame.name) this.names.set(frame.user_id, frame.name);
        if (frame.user_id !== this.me.id) {
          const who = frame.name || "Someone";
          this.notify(frame.change === "added" ? `${who} joined the session.` : `${who} left the session.`, "info");
        }
        this.onMembers();
        break;
      case "stream.start": {
        const atEnd = this.nearEnd();
        if (!this.ensureStream(frame.stream_id, frame.model, frame.reply_to)) break;
        if (atEnd) this.scrollToEnd(true);
        else {
          this.unseenStreams.add(frame.stream_id);
          this.renderUnseen();
        }
        break;
      }
      case "stream.status":
        this.onStatus(frame);
        break;
      case "stream.delta":
        this.onDelta(frame);
        break;
      case "stream.end":
        this.onEnd(frame);
        break;
      case "message.version":
        // A regenerated answer, an edited question, another version shown: in place.
        this.addMessage(frame.message);
        break;
      case "left":
        if (frame.reason === "removed") {
          this.notify("You were removed from this session.");
          this.onLeft();
        }
        break;
      case "error":
        if (!frame.id) this.notify(frame.message);
        break;
      default:
        break;
    }
  }

  ensureStream(streamId, model = null, replyTo = null) {
    if (this.ended.has(streamId)) return null;
    let stream = this.streams.get(streamId);
    if (stream) {
      if (replyTo && !stream.replyTo) stream.replyTo = replyTo;
      this.updateStop();
      return stream;
    }
    const status = h("div", { class: "stream-status", testid: "stream-status", hidden: true });
    const body = h("div", { class: "body markdown", testid: "stream-body" });
    const stop = h("button", { class: "link stream-stop", testid: "stream-stop", type: "button", title: "Stop this answer", onclick: () => this.stopStream(streamId) }, "Stop");
    const el = h(
      "article",
      { class: "message assistant streaming", testid: "stream", "data-stream-id": streamId },
      h("header", {}, h("span", { class: "author", text: "Assistant" }), model ? h("span", { class: "model", text: model }) : null, stop),
      status,
      body,
    );
    stream = { el, body, status, text: "", next: 0, early: new Map(), timer: null, resuming: false, replyTo };
    this.streams.set(streamId, stream);
    this.streamsEl.append(el);
    this.updateStop();
    return stream;
  }

  onStatus(frame) {
    const stream = this.ensureStream(frame.stream_id);
    if (!stream) return;
    const label = STAGES[frame.stage] || frame.stage;
    stream.status.textContent = frame.detail ? `${label} ${frame.detail}` : label;
    stream.status.dataset.stage = frame.stage;
    stream.status.hidden = false;
  }

  onDelta(frame) {
    const known = this.streams.has(frame.stream_id);
    const stream = this.ensureStream(frame.stream_id);
    if (!stream) return;
    if (!known) {
      // Deltas of a stream we never saw start: fetch it from the beginning.
      this.resume(frame.stream_id);
    }
    if (frame.index < stream.next) return; // shown already
    stream.early.set(frame.index, frame.text);
    while (stream.early.has(stream.next)) {
      stream.text += stream.early.get(stream.next);
      stream.early.delete(stream.next);
      stream.next += 1;
    }
    if (stream.status.dataset.stage !== "generating") stream.status.hidden = true;
    this.scheduleRender(stream);
  }

  scheduleRender(stream) {
    if (stream.timer) return;
    stream.timer = setTimeout(() => {
      stream.timer = null;
      this.renderStream(stream);
    }, RENDER_EVERY_MS);
  }

  renderStream(stream) {
    const stick = this.nearEnd();
    clear(stream.body).append(renderMarkdown(stream.text));
    stream.body.append(h("span", { class: "cursor", "aria-hidden": "true" }));
    if (stick) this.scrollToEnd(true);
  }

  onEnd(frame) {
    if (this.ended.has(frame.stream_id)) return;
    const mine = this.myStreams().includes(frame.stream_id);
    this.dropStream(frame.stream_id);
    if (mine && frame.error?.code === "budget_exceeded") {
      // Its prompt alone would have overrun what was left (no model was asked), or the
      // budget ran out under it: said here until the next question is sent.
      const resetsAt = frame.error.resets_at || isoIn(frame.error.message) || this.budget?.budget?.resets_at;
      this.showRefusal("budget_overrun", { message: frame.error.message, resetsAt });
    }
    // What is left changed by this answer; only the notices at 80 % and 100 % say so.
    if (mine) this.budget?.refreshSoon();
    if (mine && this.noteEl.dataset.kind === "too_many_answers") this.hideNote();
    if (frame.message) {
      this.receive({ ...frame.message, status: frame.message.status || statusOf(frame) });
    }
    if (frame.finish_reason === "error" && !frame.message) {
      // A stored failure shows in place, with a Retry; only one that was not stored
      // (the database was down) is told here.
      this.notify(`The assistant failed: ${frame.error?.message || "unknown error"}`);
    }
    this.scrollToEnd(false);
  }

  dropStream(streamId) {
    this.ended.add(streamId);
    const stream = this.streams.get(streamId);
    if (stream) {
      clearTimeout(stream.timer);
      stream.el.remove();
      this.streams.delete(streamId);
    }
    // Its message (if any) is counted as it arrives.
    if (this.unseenStreams.delete(streamId)) this.renderUnseen();
    this.updateStop();
  }

  // Messages ----------------------------------------------------------------------------

  /** Draws a message once, in seq order; true when it was not shown before. */
  addMessage(message) {
    const existing = this.shown.get(message.id);
    if (existing) {
      if ((message.deleted && existing.dataset.deleted !== "true") || changed(existing, message)) {
        const el = this.messageEl(message);
        existing.replaceWith(el);
        el.daySeparator = existing.daySeparator;
        this.shown.set(message.id, el);
        this.decorate(el);
        this.decorate(nextMessage(el));
      }
      return false;
    }
    const el = this.messageEl(message);
    this.shown.set(message.id, el);
    this.authors.set(message.id, message.user_id);
    this.lastSeq = Math.max(this.lastSeq, message.seq);
    // Keep seq order: walk back from the end (new messages almost always go last),
    // stepping over day separators, which belong to the message after them.
    let after = this.messagesEl.lastElementChild;
    while (after && !(isMessage(after) && Number(after.dataset.seq) < message.seq)) after = after.previousElementSibling;
    if (after) after.after(el);
    else this.messagesEl.prepend(el);
    // Only the new message and the one after it can change group or day.
    this.decorate(el);
    this.decorate(nextMessage(el));
    this.emptyEl.hidden = true;
    return true;
  }

  /** A day separator before the first message of each day; a shared header per group. */
  decorate(el) {
    if (!el) return;
    const prev = previousMessage(el);
    const at = timeOf(el);
    const prevAt = prev ? timeOf(prev) : null;
    const newDay = !prev || !sameDay(prevAt, at);
    if (newDay) {
      if (!el.daySeparator) {
        el.daySeparator = h("div", { class: "day-separator", testid: "day-separator", role: "separator" }, h("span", {}));
      }
      el.daySeparator.firstChild.textContent = formatDay(at);
      el.daySeparator.dataset.day = at.toDateString();
      if (el.previousElementSibling !== el.daySeparator) el.before(el.daySeparator);
    } else if (el.daySeparator) {
      el.daySeparator.remove();
      el.daySeparator = null;
    }
    const grouped =
      !newDay &&
      prev.dataset.author === el.dataset.author &&
      prev.dataset.deleted !== "true" &&
      el.dataset.deleted !== "true" &&
      at - prevAt >= 0 &&
      at - prevAt < GROUP_WITHIN_MS;
    if (grouped) el.dataset.grouped = "true";
    else delete el.dataset.grouped;
  }

  /**
   * A message that arrived live: follow it if the reader was at the end, otherwise count
   * it for the "n new messages" pill. Nearness is measured before it is drawn, since a
   * tall message would otherwise push the reader "away" from the end.
   */
  receive(message) {
    const atEnd = this.nearEnd();
    if (!this.addMessage(message) || !this.loaded) return;
    if (atEnd) {
      this.scrollToEnd(true);
      return;
    }
    this.unseen += 1;
    this.renderUnseen();
  }

  renderUnseen() {
    const parts = [];
    if (this.unseen > 0) parts.push(`${this.unseen} new message${this.unseen === 1 ? "" : "s"}`);
    if (this.unseenStreams.size > 0) parts.push(this.unseen > 0 ? "an answer coming" : "New answer being written");
    this.newMessagesEl.textContent = `${parts.join(" · ")} ↓`;
    this.newMessagesEl.hidden = parts.length === 0;
  }

  clearUnseen() {
    this.unseen = 0;
    this.unseenStreams.clear();
    this.newMessagesEl.hidden = true;
  }

  messageEl(message) {
    const mine = message.user_id === this.me.id && message.role === "user";
    const author =
      message.role === "assistant" ? "Assistant" : this.names.get(message.user_id) || "Someone";
    const body = h("div", { class: "body markdown", testid: "message-body" });
    if (message.deleted) body.append(h("em", { text: "This message was deleted." }));
    else body.append(renderMarkdown(message.content));
    const tags = [];
    if (message.status === "cancelled") tags.push(h("span", { class: "tag", text: "stopped" }));
    if (message.status === "error") tags.push(h("span", { class: "tag warn", text: message.content ? "incomplete" : "failed" }));
    const failure = message.deleted ? null : failureNote(message);
    const el = h(
      "article",
      {
        class: `message ${message.role}${mine ? " mine" : ""}`,
        testid: "message",
        "data-id": message.id,
        "data-seq": message.seq,
        "data-role": message.role,
        "data-deleted": message.deleted ? "true" : "false",
        "data-author": message.role === "assistant" ? "assistant" : `user:${message.user_id}`,
        "data-created-at": message.created_at,
        "data-version": message.version || 1,
        "data-version-count": message.version_count || 1,
        "data-status": message.status,
      },
      h(
        "header",
        {},
        h("span", { class: "author", testid: "message-author", text: author }),
        h("time", { datetime: message.created_at, title: new Date(message.created_at).toLocaleString(), text: formatTime(message.created_at) }),
        tags,
        versionNav(this, message),
      ),
      body,
      failure,
      message.deleted ? null : h("div", { class: "message-actions" }, message.content ? copyButton(() => message.content, { testid: "copy-message", title: "Copy this message" }) : null, versionControls(this, message)),
    );
    el.shownMessage = message; // what `changed` compares a newer copy of it with
    return el;
  }

  async loadOlder() {
    if (this.nextBeforeSeq === null) return;
    this.olderButton.disabled = true;
    try {
      const page = await get(`/v1/sessions/${this.id}/messages?before_seq=${this.nextBeforeSeq}&limit=${PAGE}`);
      const anchor = this.timelineEl.scrollHeight - this.timelineEl.scrollTop;
      for (const message of page.messages) this.addMessage(message);
      this.nextBeforeSeq = page.next_before_seq;
      this.timelineEl.scrollTop = this.timelineEl.scrollHeight - anchor;
    } catch (exc) {
      this.notify(exc.message);
    } finally {
      this.olderButton.disabled = false;
      this.updateOlderButton();
    }
  }

  updateOlderButton() {
    this.olderButton.hidden = this.nextBeforeSeq === null || this.nextBeforeSeq === undefined;
  }

  // Composer, typing and Stop -------------------------------------------------------------

  async sendMessage() {
    const content = this.input.value.trim();
    if (!content) return;
    if (!this.socket.isOpen || !(await this.untilJoined(JOIN_WAIT_MS))) {
      this.notify("Not connected yet — your message is still in the box.");
      return;
    }
    this.input.value = "";
    this.stopTyping.cancel();
    this.sendTyping(false);
    try {
      const ack = await this.socket.request({
        type: "message",
        session_id: this.id,
        content,
        client_msg_id: newId(),
      });
      if (this.noteEl.dataset.kind !== "budget") this.hideNote();
      if (ack.message) this.addMessage(ack.message);
      if (ack.stream_id) this.ensureStream(ack.stream_id, null, ack.message?.id);
      this.scrollToEnd(true);
    } catch (exc) {
      if (!this.input.value) this.input.value = content;
      if (exc.code === "budget_exceeded" || exc.code === "too_many_answers") {
        this.showRefusal(exc.code, { message: exc.message, resetsAt: exc.resetsAt });
        if (exc.code === "budget_exceeded") this.budget?.refused();
      } else this.notify(exc.message);
    }
  }

  // Budget and refusals: a note above the composer, which stays usable -----------------

  /** The budget changed: a spent one is told in place, with when it renews. */
  showBudget(budget) {
    if (budget?.exhausted) {
      // Unless a refused question already said so (and that its text is kept).
      if (this.noteEl.dataset.kind !== "budget") this.showNote("budget", spentText(budget.resets_at));
    } else if (this.noteEl.dataset.kind === "budget") this.hideNote();
  }

  showRefusal(code, details) {
    // "budget" (your own, spent) lasts while it is spent; the others (the room owner's
    // budget among them) until the next send.
    const own = code === "budget_exceeded" && !isOwners(details.message);
    this.showNote(own ? "budget" : code, refusalText(code, details));
  }

  showNote(kind, text) {
    this.noteEl.textContent = text;
    this.noteEl.dataset.kind = kind;
    this.noteEl.hidden = false;
  }

  hideNote() {
    this.noteEl.hidden = true;
    delete this.noteEl.dataset.kind;
  }

  // True once the room is joined on this connection (at once if it is), false if that
  // takes longer than `ms`: a message sent right after opening a session waits for it.
  untilJoined(ms) {
    if (this.joined) return Promise.resolve(true);
    return new Promise((resolve) => {
      this.joinWaiters.push(resolve);
      setTimeout(() => resolve(false), ms);
    });
  }

  onInput() {
    if (!this.typingActive && this.input.value.trim()) this.sendTyping(true);
    this.stopTyping();
  }

  sendTyping(active) {
    if (this.typingActive === active || !this.joined) return;
    this.typingActive = active;
    this.socket.send({ type: "typing", session_id: this.id, active });
  }

  setTyping(userId, active) {
    clearTimeout(this.typers.get(userId));
    this.typers.delete(userId);
    if (active) {
      // A lost "active: false" must not leave someone typing forever.
      this.typers.set(userId, setTimeout(() => this.setTyping(userId, false), TYPING_EXPIRY_MS));
    }
    const names = [...this.typers.keys()].map((id) => this.names.get(id) || "Someone");
    this.typingEl.textContent =
      names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  }

  stopStream(streamId) {
    this.socket
      .request({ type: "cancel", session_id: this.id, stream_id: streamId })
      .catch((exc) => this.notify(`Could not stop: ${exc.message}`));
  }

  // The answers to my own questions: what the composer's Stop stops.
  myStreams() {
    return [...this.streams.entries()]
      .filter(([, stream]) => stream.replyTo && this.authors.get(stream.replyTo) === this.me.id)
      .map(([streamId]) => streamId);
  }

  stopMine() {
    for (const streamId of this.myStreams()) this.stopStream(streamId);
  }

  updateStop() {
    this.stopButton.hidden = this.myStreams().length === 0;
  }

  renderPresence() {
    clear(this.presenceEl);
    for (const [userId, name] of this.present) {
      this.presenceEl.append(
        h(
          "li",
          { class: "presence-chip", testid: "member", "data-user-id": userId, title: name },
          h("span", { class: "dot", "aria-hidden": "true" }),
          userId === this.me.id ? `${name} (you)` : name,
        ),
      );
    }
  }

  // Layout ------------------------------------------------------------------------------

  nearEnd() {
    const t = this.timelineEl;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 80;
  }

  scrollToEnd(force) {
    if (force || this.nearEnd()) this.timelineEl.scrollTop = this.timelineEl.scrollHeight;
    if (this.nearEnd()) this.clearUnseen();
  }

  build() {
    this.olderButton = h("button", { class: "link older", testid: "load-older", type: "button", hidden: true, onclick: () => this.loadOlder() }, "Load older messages");
    this.emptyEl = h("p", { class: "empty", testid: "empty", text: "No messages yet. Say hello — the assistant answers every message." });
    this.messagesEl = h("div", { class: "messages", testid: "messages" });
    this.streamsEl = h("div", { class: "streams", testid: "streams" });
    this.timelineEl = h("div", { class: "timeline", testid: "timeline", "aria-live": "polite", onscroll: () => this.nearEnd() && this.clearUnseen() }, this.olderButton, this.emptyEl, this.messagesEl, this.streamsEl);
    this.newMessagesEl = h("button", { class: "new-messages", testid: "new-messages", type: "button", hidden: true, onclick: () => this.scrollToEnd(true) });
    this.presenceEl = h("ul", { class: "presence", testid: "members", "aria-label": "Here now" });
    this.typingEl = h("div", { class: "typing", testid: "typing", "aria-live": "polite" });
    this.input = h("textarea", {
      class: "composer-input",
      testid: "composer-input",
      rows: "1",
      placeholder: "Write a message…",
      title: "Enter sends, Shift+Enter starts a new line",
      "aria-label": "Message",
      maxlength: "32768",
      oninput: () => this.onInput(),
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.sendMessage();
        }
      },
    });
    this.noteEl = h("div", { class: "budget-note", testid: "budget-note", role: "alert", hidden: true });
    this.stopButton = h("button", { class: "stop", testid: "stop", type: "button", hidden: true, title: "Stop the answers to your questions", onclick: () => this.stopMine() }, "Stop");
    const form = h(
      "form",
      { class: "composer", testid: "composer", onsubmit: (event) => (event.preventDefault(), this.sendMessage()) },
      this.input,
      this.stopButton,
      h("button", { class: "primary", testid: "send", type: "submit" }, "Send"),
    );
    return h("div", { class: "chat-main" }, h("div", { class: "presence-bar" }, this.presenceEl, this.typingEl), h("div", { class: "timeline-wrap" }, this.timelineEl, this.newMessagesEl), this.noteEl, form);
  }
}

// Whether `message` differs from what `el` shows: another version, or the same one
// stored again differently (a failed answer retried into its own place).
function changed(el, message) {
  return (
    Number(el.dataset.version) !== (message.version || 1) ||
    Number(el.dataset.versionCount) !== (message.version_count || 1) ||
    el.dataset.status !== message.status ||
    el.shownMessage?.content !== message.content
  );
}

// A message without a (valid) time is placed as if it were written now.
function timeOf(el) {
  const at = new Date(el.dataset.createdAt);
  return Number.isNaN(at.getTime()) ? new Date() : at;
}

function isMessage(el) {
  return el.dataset.testid === "message";
}

function previousMessage(el) {
  let prev = el.previousElementSibling;
  while (prev && !isMessage(prev)) prev = prev.previousElementSibling;
  return prev;
}

function nextMessage(el) {
  let next = el.nextElementSibling;
  while (next && !isMessage(next)) next = next.nextElementSibling;
  return next;
}

// The first ISO time in a text (a refusal's "it renews at 2026-12-04T00:00:00Z").
function isoIn(text) {
  return (text || "").match(/\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)/)?.[0] || null;
}

function statusOf(frame) {
  if (frame.finish_reason === "cancelled") return "cancelled";
  if (frame.finish_reason === "error") return "error";
  return "complete";
}

function newId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
