// A WebSocket echo server on the npm "ws" package, used by edge/proxy tests
// as a non-Go backend. It listens on 127.0.0.1 on a free port and prints
// "listening <port>" on stdout. For each connection it first sends a JSON
// text message {"headers": <request headers as received>}, then echoes every
// message back. When a client closes, it prints "close <code> <reason>".
'use strict';
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true });
wss.on('listening', () => {
  process.stdout.write(`listening ${wss.address().port}\n`);
});
wss.on('connection', (ws, req) => {
  ws.send(JSON.stringify({ headers: req.headers, url: req.url }));
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('close', (code, reason) => process.stdout.write(`close ${code} ${reason}\n`));
});
// Exit with the test process: stdin closes when the parent goes away.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
