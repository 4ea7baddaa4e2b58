// Preload (node --require) that pins every TCP listen to 127.0.0.1.
// ArLocal calls app.listen(port) with no host, which binds all interfaces;
// the test suite must not expose it beyond loopback.
"use strict";
const net = require("node:net");

const LOOPBACK = "127.0.0.1";
const originalListen = net.Server.prototype.listen;

net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] === "string") args[1] = LOOPBACK;
    else args.splice(1, 0, LOOPBACK);
  } else if (first && typeof first === "object" && !Array.isArray(first) && first.path === undefined) {
    args[0] = Object.assign({}, first, { host: LOOPBACK });
  } else if (first === undefined || typeof first === "function") {
    // listen() or listen(callback): an ephemeral port, still on loopback.
    args.unshift(0, LOOPBACK);
  }
  return originalListen.apply(this, args);
};
