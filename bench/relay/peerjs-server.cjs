// The PeerJS server (npm `peer`, pinned in package.json) for bench/relay/run:
//   node peerjs-server.cjs PORT [CONCURRENT_LIMIT]
// Listens on 127.0.0.1:PORT, key "peerjs", WebSockets on /peerjs. The
// default concurrent_limit (5000 clients) is raised so that --idle runs
// are limited by the file descriptors, not by the server's setting.
'use strict';
const { PeerServer } = require('peer');

const port = Number(process.argv[2]);
const limit = Number(process.argv[3] || 1000000);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node peerjs-server.cjs PORT [CONCURRENT_LIMIT]');
  process.exit(2);
}
const server = PeerServer(
  { host: '127.0.0.1', port, key: 'peerjs', path: '/', concurrent_limit: limit },
  () => console.log(`peerjs: listening on 127.0.0.1:${port} (concurrent_limit ${limit})`),
);
server.on('error', (e) => console.error('peerjs: error:', e && e.message ? e.message : e));
process.on('SIGTERM', () => process.exit(0));
