"""Run the portable core under real MicroPython (the WebAssembly port, on Node).

Used by the test suite (the portable-core check) and the benchmarks.  The
portable modules are copied into MicroPython's in-memory filesystem as they
are in this checkout; nothing is translated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

from controller.errors import CabguardError

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "mpy_runner.mjs"
CORE = ROOT / "controller" / "core"
MANIFEST = CORE / "manifest.toml"
# The package markers the core's imports need, besides its modules.
PACKAGE_MARKERS = ("controller/__init__.py", "controller/core/__init__.py")


class MicroPythonUnavailable(CabguardError):
    """Node or the MicroPython package is missing (run `make setup`)."""


def portable_modules() -> list[str]:
    """The core's modules as its manifest lists them (controller/core/manifest.toml)."""
    with MANIFEST.open("rb") as f:
        return list(tomllib.load(f)["modules"])


def portable_files(root: Path = ROOT) -> dict[str, str]:
    """Path -> source of every portable file: the package markers, then the manifest's modules."""
    rels = list(PACKAGE_MARKERS) + ["controller/core/{}.py".format(m) for m in portable_modules()]
    return {rel: (root / rel).read_text() for rel in rels}


def available(root: Path = ROOT) -> bool:
    pkg = root / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
    return shutil.which("node") is not None and pkg.is_dir()


def run(snippets: list[str], extra_files: dict[str, str] | None = None,
        timeout: float = 600.0) -> list[str]:
    """Run each snippet in one MicroPython instance; returns what each printed."""
    if not available():
        raise MicroPythonUnavailable(
            "MicroPython is not set up: need node on PATH and node_modules/ "
            "(run `make setup` in {})".format(ROOT))
    files = portable_files()
    files.update(extra_files or {})
    job = json.dumps({"files": files, "snippets": snippets})
    proc = subprocess.run(["node", str(RUNNER)], input=job, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise CabguardError("MicroPython runner failed: {}".format(proc.stderr.strip()[-2000:]))
    result = json.loads(proc.stdout)
    if "error" in result:
        raise CabguardError("MicroPython raised: {}\n{}".format(result["error"], result.get("partial", "")))
    return result["outputs"]
