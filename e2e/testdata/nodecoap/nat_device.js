// nat_device.js PUSH_URL PORT
// A node-coap device that serves PUT /led and pushes (confirmable POST) to
// PUSH_URL from the same UDP socket, bound to 127.0.0.1:PORT: once at start
// and again at each SIGUSR2. Behind a NAT the bridge's answers and commands
// come back through the binding its push opened. It prints "ready", one
// "pushed N CODE MS" per push (MS: its round trip) and one "command METHOD
// PATH PAYLOAD MS" per request it carries out, MS being the time since its
// latest push was sent.
'use strict';
const coap = require('coap');
const dgram = require('dgram');

const [url, port] = process.argv.slice(2);
if (!url || !port) {
  console.error('usage: nat_device.js PUSH_URL PORT');
  process.exit(2);
}
const u = new URL(url);
const sock = dgram.createSocket('udp4');
let pushes = 0;
let pushedAt;

// The server answers requests on the socket and ignores responses; the
// agent sends requests from it and ignores requests.
const server = coap.createServer();
server.on('request', (req, res) => {
  const ms = pushedAt ? Number(process.hrtime.bigint() - pushedAt) / 1e6 : -1;
  if (req.method !== 'PUT' || req.url !== '/led') {
    res.code = '4.04';
    res.end();
    return;
  }
  console.log(`command ${req.method} ${req.url} ${req.payload.toString()} ${ms.toFixed(3)}`);
  res.code = '2.04';
  res.end();
});
const agent = new coap.Agent({ socket: sock });

function push() {
  const n = ++pushes;
  const req = coap.request({
    hostname: u.hostname, port: Number(u.port) || 5683, pathname: u.pathname,
    method: 'POST', confirmable: true, agent,
  });
  req.setOption('Content-Format', 'text/plain');
  const sent = process.hrtime.bigint();
  req.on('response', (res) => {
    const ms = Number(process.hrtime.bigint() - sent) / 1e6;
    console.log(`pushed ${n} ${res.code} ${ms.toFixed(3)}`);
  });
  req.on('error', (e) => console.log(`push ${n} failed ${e.message}`));
  pushedAt = process.hrtime.bigint();
  req.end(String(n));
}

sock.bind(Number(port), '127.0.0.1', () => {
  server.listen(sock, () => {
    process.on('SIGUSR2', push);
    process.on('SIGTERM', () => process.exit(0));
    console.log('ready');
    push();
  });
});
