// Lean WebSocket load client for Parley's realtime benchmarks.
//
// Driven by JSON lines on stdin, answers one JSON line on stdout per command:
//   {"cmd":"connect","urls":[...],"tokens":[...],"session_id":"…"|null,"concurrency":100,
//    "protocol":"parley"|"socketio"}
//     open one socket per token (Authorization: Bearer), spread over urls round-robin;
//     with a session_id each socket joins it. -> {"connected":N,"failed":F,"ms":…}
//     protocol "socketio" drives bench/node/sio_server.js (our Socket.IO + Redis peer)
//     instead of Parley: urls are http://host:port, a token is the user id, and the
//     same frames travel as Socket.IO events (acks as Socket.IO acks). Everything
//     below (steps, rates, latency) is the same code for both.
//   {"cmd":"run","kind":"typing"|"message","rate":events_per_s,"seconds":s,"senders":k}
//     the first k sockets (of those on urls[senders_on], if given) send `kind` frames
//     at `rate` events/s in total; every socket
//     records what it receives. Latency is receive time minus send time on this
//     process's monotonic clock: a message carries its send time in its content; the
//     n-th typing frame from a user matches that user's n-th send (delivery keeps a
//     sender's order). -> counts, achieved rates, latency percentiles
//   {"cmd":"count"} -> {"open":N}
//   {"cmd":"quit"}
// A Python receiver spends 30-40 us of CPU per frame; this one a few, so the server,
// not the load generator, is what gets measured.
"use strict";

const WebSocket = require("ws");
const readline = require("readline");
const { monitorEventLoopDelay } = require("perf_hooks");
let sioClient = null; // socket.io-client, loaded only when a run asks for it

const BUCKET_MS = 0.05; // latency histogram resolution
const BUCKETS = 200000; // up to 10 s
let sockets = [];
let userOf = []; // socket index -> user id (from welcome)
let sessionId = null;
let run = null; // state of the current run, or null
// This process's own event-loop stalls during a run: a latency spike that shows here
// was the load generator's (GC, the machine taking its core), not the server's.
const loopDelay = monitorEventLoopDelay({ resolution: 5 });

function now() {
  return performance.now();
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// A slot is one member's socket: {user, index, node, send(kind, t), isOpen(), close()}.
function openOne(url, token, join, protocol) {
  return protocol === "socketio" ? openSocketIo(url, token, join) : openParley(url, token, join);
}

function openParley(url, token, join) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, {
      headers: { Authorization: "Bearer " + token },
      perMessageDeflate: false,
    });
    const slot = {
      ws,
      user: null,
      index: -1,
      send(kind, t) {
        if (kind === "typing") {
          ws.send('{"type":"typing","session_id":"' + sessionId + '","active":true}');
        } else {
          ws.send(JSON.stringify({ type: "message", session_id: sessionId, content: "t:" + t, reply: "none" }));
        }
      },
      isOpen: () => ws.readyState === WebSocket.OPEN,
      close: () => ws.terminate(),
    };
    let settled = false;
    const done = (ok) => {
      if (!settled) {
        settled = true;
        resolve(ok ? slot : null);
      }
    };
    ws.on("message", (data) => {
      const text = data.toString();
      if (run !== null && slot.index >= 0) {
        onFrame(slot, text);
        return;
      }
      const frame = JSON.parse(text);
      if (frame.type === "welcome") {
        slot.user = frame.user.id;
        if (!join) done(true);
        else ws.send(JSON.stringify({ type: "join", session_id: sessionId, id: "j" }));
      } else if (frame.type === "joined") {
        done(true);
      } else if (frame.type === "error" && !settled) {
        process.stderr.write("join error: " + text + "\n");
        done(false);
      }
    });
    ws.on("error", (err) => {
      process.stderr.write("socket error: " + err.message + "\n");
      done(false);
    });
    ws.on("unexpected-response", (_req, res) => {
      process.stderr.write("handshake refused: " + res.statusCode + "\n");
      done(false);
    });
    ws.on("close", () => done(false));
  });
}

function openSocketIo(url, user, join) {
  if (sioClient === null) sioClient = require("socket.io-client");
  return new Promise((resolve) => {
    const socket = sioClient.io(url, {
      transports: ["websocket"],
      auth: { user },
      forceNew: true, // one connection per member, as with Parley
      reconnection: false,
      timeout: 20000,
    });
    const slot = {
      sio: socket,
      user,
      index: -1,
      send(kind, t) {
        // No ack asked for, as the Parley frames above carry no id (Parley acks only
        // a frame with an id): the peer does no more per event than Parley does.
        if (kind === "typing") socket.emit("typing", { session_id: sessionId, active: true });
        else socket.emit("message", { session_id: sessionId, content: "t:" + t, reply: "none" });
      },
      isOpen: () => socket.connected,
      close: () => socket.disconnect(),
    };
    const deliver = (frame) => {
      if (run !== null && slot.index >= 0) onEvent(slot, frame);
    };
    socket.on("typing", deliver);
    socket.on("message", deliver);
    let settled = false;
    const done = (ok) => {
      if (!settled) {
        settled = true;
        resolve(ok ? slot : null);
      }
    };
    socket.on("connect", () => {
      if (!join) return done(true);
      socket.emit("join", { session_id: sessionId }, (reply) => done(reply && reply.type === "joined"));
    });
    socket.on("connect_error", (err) => {
      process.stderr.write("socket.io connect error: " + err.message + "\n");
      done(false);
    });
    socket.on("disconnect", () => done(false));
  });
}

async function connect(cmd) {
  const started = now();
  sessionId = cmd.session_id || null;
  const join = sessionId !== null;
  const concurrency = cmd.concurrency || 100;
  let next = 0;
  let failed = 0;
  const opened = new Array(cmd.tokens.length).fill(null);
  async function worker() {
    while (next < cmd.tokens.length) {
      const i = next++;
      const slot = await openOne(cmd.urls[i % cmd.urls.length], cmd.tokens[i], join, cmd.protocol);
      if (slot === null) failed++;
      else slot.node = i % cmd.urls.length; // which of the urls it is connected to
      opened[i] = slot;
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  for (const slot of opened) {
    if (slot !== null) {
      slot.index = sockets.length;
      sockets.push(slot);
    }
  }
  userOf = sockets.map((s) => s.user);
  return { connected: sockets.length, failed, ms: now() - started };
}

function onFrame(slot, text) {
  const r = run;
  // Cheap routing on the frame's start: acks (the sender's replies) need no parse.
  if (text.startsWith('{"type":"ack"')) {
    r.acks++;
    return;
  }
  onEvent(slot, JSON.parse(text));
}

function onEvent(slot, frame) {
  const r = run;
  const t = now();
  let sentAt;
  if (frame.type === "typing" && r.kind === "typing") {
    const seen = r.seen[slot.index];
    const n = seen.get(frame.user_id) || 0;
    seen.set(frame.user_id, n + 1);
    sentAt = r.sendTimes.get(frame.user_id)[n];
  } else if (frame.type === "message" && r.kind === "message") {
    sentAt = parseFloat(frame.message.content.slice(2));
  } else {
    if (frame.type === "error") r.errors++;
    return;
  }
  r.delivered++;
  const bucket = Math.min(BUCKETS - 1, Math.floor((t - sentAt) / BUCKET_MS));
  r.hist[bucket]++;
  r.lastDelivery = t;
}

function percentile(hist, total, p) {
  const want = Math.ceil(total * p);
  let acc = 0;
  for (let i = 0; i < hist.length; i++) {
    acc += hist[i];
    if (acc >= want) return (i + 1) * BUCKET_MS;
  }
  return NaN;
}

function startRun(cmd) {
  return new Promise((resolve) => {
    // senders_on: only sockets connected to that url (its index) send, e.g. every
    // publisher on node 1 while the members are spread over the nodes.
    const eligible = cmd.senders_on == null ? sockets : sockets.filter((s) => s.node === cmd.senders_on);
    const senders = eligible.slice(0, Math.min(cmd.senders, eligible.length));
    run = {
      kind: cmd.kind,
      hist: new Uint32Array(BUCKETS),
      delivered: 0,
      acks: 0,
      errors: 0,
      sent: 0,
      seen: sockets.map(() => new Map()),
      sendTimes: new Map(senders.map((s) => [s.user, []])),
      lastDelivery: 0,
    };
    const r = run;
    loopDelay.reset();
    loopDelay.enable();
    const perEvent = cmd.kind === "typing" ? sockets.length - 1 : sockets.length;
    const started = now();
    const durationMs = cmd.seconds * 1000;
    let turn = 0;
    const tick = () => {
      const elapsed = now() - started;
      const due = Math.min(Math.floor((elapsed * cmd.rate) / 1000), Math.floor(cmd.seconds * cmd.rate));
      while (r.sent < due) {
        const slot = senders[turn++ % senders.length];
        const t = now();
        if (cmd.kind === "typing") r.sendTimes.get(slot.user).push(t);
        slot.send(cmd.kind, t);
        r.sent++;
      }
      if (elapsed < durationMs) {
        setTimeout(tick, 1);
        return;
      }
      const sendSeconds = (now() - started) / 1000;
      const expected = r.sent * perEvent;
      const graceEnd = now() + (cmd.grace_s || 5) * 1000;
      const finish = () => {
        if (r.delivered < expected && now() < graceEnd) {
          setTimeout(finish, 5);
          return;
        }
        const total = r.delivered;
        const span = Math.max(r.lastDelivery - started, 1) / 1000;
        loopDelay.disable();
        run = null;
        resolve({
          kind: r.kind,
          target_rate: cmd.rate,
          sent: r.sent,
          send_rate: r.sent / sendSeconds,
          expected,
          delivered: total,
          acks: r.acks,
          errors: r.errors,
          delivery_rate: total / span,
          p50_ms: percentile(r.hist, total, 0.5),
          p99_ms: percentile(r.hist, total, 0.99),
          max_ms: percentile(r.hist, total, 1.0),
          // the loop's delay beyond its 5 ms sampling timer, in ms
          client_stall_p99_ms: Math.max(0, loopDelay.percentile(99) / 1e6 - 5),
          client_stall_max_ms: Math.max(0, loopDelay.max / 1e6 - 5),
        });
      };
      finish();
    };
    tick();
  });
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case "connect":
      return connect(cmd);
    case "run":
      return startRun(cmd);
    case "count":
      return { open: sockets.filter((s) => s.isOpen()).length };
    case "quit":
      for (const s of sockets) s.close();
      reply({ bye: true });
      process.exit(0);
      return null;
    default:
      throw new Error("unknown command " + cmd.cmd);
  }
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    try {
      reply(await handle(JSON.parse(line)));
    } catch (err) {
      reply({ error: String(err && err.stack ? err.stack : err) });
    }
  });
});
lines.on("close", () => process.exit(0));
