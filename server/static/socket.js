// The WebSocket client. Same-origin, so the browser sends the HttpOnly jwt cookie with
// the handshake and no token lives in JavaScript.
//
// - Reconnects on its own with jittered exponential backoff (0.5 s doubling to 15 s,
//   each wait drawn between half and all of it, so a restarted server is not hit by
//   every page at the same instant). The backoff resets once a welcome arrives.
// - Close TOKEN_EXPIRED (4401: token expired or revoked) refreshes the cookies, then reconnects. A
//   handshake refused with HTTP 401 looks like close 1006 to a page, so a connection
//   that closes before its welcome also tries a refresh before the next attempt.
// - request() sends a frame with an id and resolves with the reply carrying that id
//   (ack, joined, pong) or rejects with the error frame.
// Events: "state" (detail: "connecting" | "open" | "offline"), "welcome", "frame"
// (detail: every server frame), "unauthorized" (the refresh failed: log in again).

import { refreshSession } from "./api.js";
import { CloseCode, DO_NOT_RECONNECT } from "./close_codes.js";

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const REQUEST_TIMEOUT_MS = 15000;

export class SocketError extends Error {
  constructor(code, message, retryAfter = null, resetsAt = null) {
    super(message);
    this.name = "SocketError";
    this.code = code;
    this.retryAfter = retryAfter;
    this.resetsAt = resetsAt; // budget_exceeded: when the budget renews (ISO time)
  }
}

export class ParleySocket extends EventTarget {
  constructor(url = defaultUrl()) {
    super();
    this.url = url;
    this.ws = null;
    this.state = "offline";
    this.welcome = null;
    this.attempt = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.stopped = true;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(CloseCode.NORMAL, "bye");
    this.ws = null;
    this.setState("offline");
  }

  get isOpen() {
    return this.state === "open";
  }

  open() {
    clearTimeout(this.timer);
    this.setState("connecting");
    this.welcome = null;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("message", (event) => this.onMessage(ws, event));
    ws.addEventListener("close", (event) => this.onClose(ws, event));
    // "error" is always followed by "close", where everything is handled.
  }

  onMessage(ws, event) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame.type === "welcome") {
      this.welcome = frame;
      this.attempt = 0;
      this.setState("open");
      this.dispatchEvent(new CustomEvent("welcome", { detail: frame }));
      return;
    }
    if (frame.id && this.pending.has(frame.id)) {
      const { resolve, reject, timer } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(timer);
      if (frame.type === "error") reject(new SocketError(frame.code, frame.message, frame.retry_after, frame.resets_at));
      else resolve(frame);
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  async onClose(ws, event) {
    if (ws !== this.ws) return;
    const welcomed = this.welcome !== null;
    this.ws = null;
    this.welcome = null;
    this.failPending(new SocketError("unavailable", "the connection closed"));
    this.setState("offline");
    if (this.stopped || DO_NOT_RECONNECT.has(event.code)) return;
    if (event.code === CloseCode.TOKEN_EXPIRED || !welcomed) {
      const refreshed = await refreshSession();
      if (!refreshed && event.code === CloseCode.TOKEN_EXPIRED) {
        this.stopped = true;
        this.dispatchEvent(new Event("unauthorized"));
        return;
      }
      if (event.code === CloseCode.TOKEN_EXPIRED) {
        this.open();
        return;
      }
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.setState("connecting");
    this.timer = setTimeout(() => {
      if (!this.stopped) this.open();
    }, delay);
  }

  /** Reconnect now (the user pressed "retry", or the tab came back online). */
  reconnectNow() {
    if (this.stopped || this.state === "open") return;
    this.attempt = 0;
    if (this.ws) return;
    this.open();
  }

  failPending(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  /** Sends a frame without waiting for anything; false when not connected. */
  send(frame) {
    if (!this.ws || this.state !== "open") return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Sends a frame with a fresh id and resolves with its reply. */
  request(frame) {
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      if (!this.send({ ...frame, id })) {
        reject(new SocketError("unavailable", "not connected"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SocketError("unavailable", "no reply from the server"));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
    });
  }
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/ws`;
}
