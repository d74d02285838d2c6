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

if (observeSeconds) {
  const req = coap.request({ ...opts, method: 'GET', observe: true });
  req.on('response', (res) => {
    res.on('data', (d) => console.log('notification ' + d.toString()));
    setTimeout(() => { res.close(); process.exit(0); }, Number(observeSeconds) * 1000);
  });
  req.on('error', (e) => { console.error(e.message); process.exit(3); });
  req.end();
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
