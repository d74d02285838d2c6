// push.js URL PAYLOAD [observe-seconds]
// Sends a confirmable POST with node-coap and prints the response code, or
// with a third argument observes URL and prints each notification.
'use strict';
const coap = require('coap');

const [url, payload, observeSeconds] = process.argv.slice(2);
if (!url) {
  console.error('usage: push.js URL PAYLOAD [observe-seconds]');
  process.exit(2);
}
const u = new URL(url);
const opts = { hostname: u.hostname, port: Number(u.port) || 5683, pathname: u.pathname, confirmable: true };

// echoOf returns the Echo option (252, RFC 9175) of a 4.01 response. The
// bridge asks a plain-UDP client it does not know yet to repeat an Observe
// registration with it; node-coap does not know the option, so this script
// does it.
function echoOf(res) {
  if (res.code !== '4.01') return undefined;
  const o = (res.options || []).find((o) => String(o.name) === '252' || o.name === 'Echo');
  return o && o.value;
}

if (observeSeconds) {
  const observe = (echo) => {
    const req = coap.request({ ...opts, method: 'GET', observe: true });
    if (echo) req.setOption('252', echo);
    req.on('response', (res) => {
      const e = echoOf(res);
      if (e && !echo) return observe(e); // same socket, so the same address
      res.on('data', (d) => console.log('notification ' + d.toString()));
      setTimeout(() => { res.close(); process.exit(0); }, Number(observeSeconds) * 1000);
    });
    req.on('error', (e) => { console.error(e.message); process.exit(3); });
    req.end();
  };
  observe(undefined);
} else {
  const req = coap.request({ ...opts, method: 'POST' });
  req.setOption('Content-Format', 'text/plain');
  req.on('response', (res) => {
    console.log('code ' + res.code);
    process.exit(res.code.startsWith('2.') ? 0 : 1);
  });
  req.on('error', (e) => { console.error(e.message); process.exit(3); });
  req.end(payload || '');
}
