// Our own Node.js Socket.IO + Redis peer for the fan-out benchmark (issue 19).
//
//   node sio_server.js --redis redis://127.0.0.1:6379/0 --key bench-sio-<run> [--port 0]
//
// What Parley's room does for an ephemeral event, written the way a Socket.IO app
// would: a socket joins a room (`join`, acked), `typing` goes to every other member of
// the room (`socket.to(room)`, acked to the sender as Parley acks it), and a
// `message` goes to every member, the sender too (`io.to(room)`, acked; nothing is
// stored, so it is Parley's stored message without the store). Several processes
// share rooms through the Redis adapter, its channels under `--key` so that runs on
// a shared Redis never see each other (nothing here writes a Redis key, let alone
// flushes one). Frames carry the same fields as Parley's.
//
// The socket's `auth.user` is its user id: Parley checks a signed token once per
// connection, which the fan-out steps never measure, so the peer checks nothing.
// Prints one JSON line {"ready":true,"port":N} once listening; exits when its stdin
// closes, so a benchmark that dies does not leave it behind.
"use strict";

const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function option(name, fallback) {
  const at = process.argv.indexOf("--" + name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

async function main() {
  const redisUrl = option("redis", "redis://127.0.0.1:6379/0");
  const key = option("key", "bench-sio-" + process.pid);
  const port = parseInt(option("port", "0"), 10);

  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) {
    client.on("error", (err) => process.stderr.write("redis: " + err.message + "\n"));
  }
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ["websocket"], // no long-polling: every client upgrades at once
    serveClient: false,
    perMessageDeflate: false,
    adapter: createAdapter(pub, sub, { key }),
  });

  let seq = 0; // this node's count of messages, standing in for a room's stored seq
  io.use((socket, next) => {
    const user = socket.handshake.auth && socket.handshake.auth.user;
    if (typeof user !== "string" || user === "") return next(new Error("no user"));
    socket.data.user = user;
    next();
  });
  io.on("connection", (socket) => {
    const user = socket.data.user;
    socket.on("join", (frame, ack) => {
      socket.join(frame.session_id);
      if (typeof ack === "function") ack({ type: "joined", session_id: frame.session_id, user_id: user });
    });
    socket.on("typing", (frame, ack) => {
      const room = frame.session_id;
      if (!socket.rooms.has(room)) return ack && ack({ type: "error", code: "not_joined" });
      socket.to(room).emit("typing", { type: "typing", session_id: room, user_id: user, active: !!frame.active });
      if (typeof ack === "function") ack({ type: "ack" });
    });
    socket.on("message", (frame, ack) => {
      const room = frame.session_id;
      if (!socket.rooms.has(room)) return ack && ack({ type: "error", code: "not_joined" });
      const message = {
        id: process.pid + "-" + ++seq,
        session_id: room,
        seq,
        user_id: user,
        role: "user",
        content: String(frame.content),
        created_at: new Date().toISOString(),
      };
      io.to(room).emit("message", { type: "message", session_id: room, message });
      if (typeof ack === "function") ack({ type: "ack", message_id: message.id, seq });
    });
  });

  await new Promise((resolve) => httpServer.listen(port, "127.0.0.1", resolve));
  process.stdout.write(JSON.stringify({ ready: true, port: httpServer.address().port }) + "\n");

  const quit = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.stdin.on("end", quit);
  process.stdin.on("close", quit);
  process.stdin.resume();
  process.on("SIGTERM", quit);
  process.on("SIGINT", quit);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
