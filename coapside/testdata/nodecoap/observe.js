// node-coap peer for the coapside Observe interop tests.
//   node observe.js client URL SECONDS   observe URL, print "n <payload>" per notification
//   node observe.js server PORT          serve observable /obs on 127.0.0.1:PORT
'use strict'
const coap = require('coap')
const [mode, arg, secs] = process.argv.slice(2)

// echoOf returns the Echo option (252, RFC 9175) of a 4.01 response, which
// node-coap does not know: the server wants the request repeated with it.
function echoOf (res) {
  if (res.code !== '4.01') return undefined
  const o = (res.options || []).find((o) => String(o.name) === '252' || o.name === 'Echo')
  return o && o.value
}

if (mode === 'client') {
  const u = new URL(arg)
  const observeOnce = (echo) => {
    const req = coap.request({ hostname: u.hostname, port: Number(u.port), pathname: u.pathname, observe: true })
    if (echo) req.setOption('252', echo)
    req.on('response', (res) => {
      const e = echoOf(res)
      if (e && !echo) {
        console.log('echo challenge')
        return observeOnce(e) // from the same socket, so the same address
      }
      onObserve(res)
    })
    req.on('error', (e) => { console.error(e); process.exit(1) })
    req.end()
  }
  observeOnce(undefined)
}

function onObserve (res) {
  {
    console.log('code ' + res.code + ' observe ' + (res.headers.Observe !== undefined))
    res.on('data', (d) => console.log('n ' + d.toString()))
    setTimeout(() => {
      // Deregister before closing (RFC 7641 §3.6); close(true) would send on a closed socket.
      res.emit('deregister')
      setTimeout(() => { res.close(); process.exit(0) }, 300)
    }, Number(secs) * 1000)
  }
}

if (mode === 'client') {
  // started above
} else if (mode === 'server') {
  const server = coap.createServer()
  server.on('request', (req, res) => {
    if (req.url.split('?')[0] !== '/obs') { res.code = '4.04'; return res.end() }
    if (req.headers.Observe !== 0) return res.end('v0')
    let i = 0
    res.write('v0')
    const t = setInterval(() => { i++; res.write('v' + i) }, 200)
    res.on('finish', () => clearInterval(t))
  })
  server.listen(Number(arg), '127.0.0.1', () => console.log('ready'))
} else {
  console.error('usage: observe.js client URL SECONDS | server PORT')
  process.exit(2)
}
