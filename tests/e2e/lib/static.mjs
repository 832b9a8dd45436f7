// A tiny static file server for clients/web (the demo's web root): GET/HEAD
// only, correct MIME types, index.html for directories, and no way out of
// the root (no "..", no encoded tricks, no symlinks leading outside).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.ico': 'image/x-icon',
  '.webmanifest': 'application/manifest+json',
  '.woff2': 'font/woff2',
};

/** A blank page the harness can open to get the web root's origin without
 *  depending on any file of the demo. Not part of the file tree. */
export const BLANK_PATH = '/__e2e__/blank.html';
const BLANK = '<!doctype html><meta charset="utf-8"><title>e2e blank</title><p>e2e</p>';

export async function startStaticServer(root, { host = '127.0.0.1', port = 0, log = () => {} } = {}) {
  const realRoot = fs.realpathSync(root);
  const server = http.createServer((req, res) => {
    const send = (status, body, type = 'text/plain; charset=utf-8', extra = {}) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store',
        'x-content-type-options': 'nosniff', 'content-length': Buffer.byteLength(body), ...extra });
      res.end(req.method === 'HEAD' ? undefined : body);
      log(`${req.method} ${req.url} ${status}`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n', undefined, { allow: 'GET, HEAD' });
    const rawPath = (req.url || '/').split('?')[0].split('#')[0];
    let rel;
    try {
      rel = decodeURIComponent(rawPath);
    } catch {
      return send(400, 'bad path\n');
    }
    if (rel === BLANK_PATH) return send(200, BLANK, TYPES['.html']);
    if (!rel.startsWith('/') || rel.includes('\0') || rel.includes('\\') ||
        rel.split('/').some((seg) => seg === '..')) {
      return send(403, 'forbidden\n');
    }
    let file = path.resolve(realRoot, '.' + rel);
    if (file !== realRoot && !file.startsWith(realRoot + path.sep)) return send(403, 'forbidden\n');
    let st;
    try {
      file = fs.realpathSync(file);
      if (file !== realRoot && !file.startsWith(realRoot + path.sep)) return send(403, 'forbidden\n');
      st = fs.statSync(file);
    } catch {
      return send(404, 'not found\n');
    }
    if (st.isDirectory()) {
      if (!rawPath.endsWith('/')) {
        const q = (req.url || '').includes('?') ? req.url.slice(req.url.indexOf('?')) : '';
        return send(301, 'moved\n', undefined, { location: rawPath + '/' + q });
      }
      file = path.join(file, 'index.html');
      try { st = fs.statSync(file); } catch { return send(404, 'not found\n'); }
    }
    if (!st.isFile()) return send(404, 'not found\n');
    const type = TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream';
    let body;
    try { body = fs.readFileSync(file); } catch { return send(404, 'not found\n'); }
    return send(200, body, type);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const addr = server.address();
  return {
    server,
    port: addr.port,
    origin: `http://${host}:${addr.port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}
