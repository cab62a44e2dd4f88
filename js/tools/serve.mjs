// A static file server on 127.0.0.1, for `npm start` (the demo) and the browser tests. A root is a
// directory served at `/`, or `{ mount: "/dist", dir }` served under a prefix; files are looked up
// in each root in turn, and nothing outside the roots is served. `handle(req, res)`, if given, is
// asked first and returns true for a request it answered (the demo's `POST /sync`).
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize, sep } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".css": "text/css; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".svg": "image/svg+xml",
};

function resolve(roots, url) {
  let path;
  try {
    path = decodeURIComponent(new URL(url, "http://localhost").pathname);
  } catch {
    return undefined;
  }
  const relative = normalize(path === "/" ? "/index.html" : path).replace(/^[/\\]+/, "");
  if (relative.split(sep).includes("..")) return undefined;
  for (const root of roots) {
    const { mount, dir } = typeof root === "string" ? { mount: "", dir: root } : { mount: root.mount.replace(/^\/+|\/+$/g, ""), dir: root.dir };
    if (mount && !relative.startsWith(`${mount}/`)) continue;
    const file = join(dir, mount ? relative.slice(mount.length + 1) : relative);
    if (existsSync(file) && statSync(file).isFile()) return file;
  }
  return undefined;
}

/**
 * Serve `roots` (first match wins) on 127.0.0.1, on `port` (0: any free one; a busy port falls
 * back to a free one). Resolves to `{ url, close }`.
 */
export function serve(roots, port = 0, { handle } = {}) {
  const server = createServer((req, res) => {
    if (handle?.(req, res)) return;
    const file = resolve(roots, req.url);
    if (!file) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolvePromise, reject) => {
    server.once("error", (error) => {
      if (error.code === "EADDRINUSE" && port !== 0) {
        resolvePromise(serve(roots, 0, { handle }));
      } else {
        reject(error);
      }
    });
    server.listen(port, "127.0.0.1", () => {
      const { port: bound } = server.address();
      const close = () =>
        new Promise((r) => {
          server.close(r);
          server.closeAllConnections(); // a page's keep-alive connection must not keep a "down" server up
        });
      resolvePromise({ url: `http://127.0.0.1:${bound}`, close });
    });
  });
}
