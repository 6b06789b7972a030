// Runs Python snippets under the real MicroPython WebAssembly port.
// stdin: {"files": {"path/in/fs.py": "source", ...}, "snippets": ["code", ...]}
// stdout: {"outputs": ["what snippet 1 printed", ...]} or {"error": "..."}
// Each snippet is its own runPython call, so a heap measurement after
// gc.collect() in a later snippet sees only what earlier ones kept alive.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const job = JSON.parse(Buffer.concat(chunks).toString("utf8"));

let buf = "";
const mp = await loadMicroPython({
  stdout: (line) => { buf += line + "\n"; },
  stderr: (line) => { buf += line + "\n"; },
  heapsize: job.heapsize || 64 * 1024 * 1024,
});

function mkdirs(path) {
  const parts = path.split("/").slice(0, -1);
  let cur = "";
  for (const p of parts) {
    if (!p) continue;
    cur += "/" + p;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}
for (const [path, text] of Object.entries(job.files || {})) {
  const full = "/app/" + path;
  mkdirs(full);
  mp.FS.writeFile(full, text);
}

const outputs = [];
try {
  mp.runPython("import sys\nsys.path.insert(0, '/app')\n");
  for (const code of job.snippets) {
    buf = "";
    mp.runPython(code);
    outputs.push(buf);
  }
  process.stdout.write(JSON.stringify({ outputs }));
} catch (e) {
  process.stdout.write(JSON.stringify({ outputs, error: String(e && e.message || e), partial: buf }));
}
