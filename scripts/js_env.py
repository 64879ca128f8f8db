"""Install what the JavaScript runtime's tests need: its npm packages and a Chromium.

    python scripts/js_env.py

runtime/js's npm packages (onnxruntime-node, onnxruntime-web, playwright-core) come from
its package-lock.json through `npm ci`; runtime/js/.npmrc skips onnxruntime-node's
download of CUDA binaries from outside the npm registry. Chromium is Debian's `chromium`
package (apt-get, as root only): nothing downloads a browser. Where node or npm is
missing, an install fails or apt-get cannot run, it prints the reason and exits 0, and
the JavaScript tests skip naming what is missing. Packages already installed from this
lockfile and a Chromium already at CHROMIUM are kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

JS_DIR = Path(__file__).resolve().parents[1] / "runtime" / "js"
CHROMIUM = Path("/usr/bin/chromium")


def _installed() -> bool:
    """npm's record of the installed tree is at least as new as the lockfile."""
    record = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    return record.is_file() and record.stat().st_mtime >= lock.stat().st_mtime


def install_npm() -> None:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        print("node or npm is not on PATH: the JavaScript tests will skip", file=sys.stderr)
        return
    if _installed():
        print(f"npm packages are installed in {JS_DIR / 'node_modules'}")
        return
    try:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"npm ci failed ({e}): the JavaScript tests will skip", file=sys.stderr)


def install_chromium() -> None:
    if CHROMIUM.is_file():
        print(f"Chromium is at {CHROMIUM}")
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        why = "no apt-get" if apt is None else "not root"
        print(
            f"no Chromium at {CHROMIUM} and {why} to install Debian's chromium: "
            "the browser tests will skip",
            file=sys.stderr,
        )
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run([apt, "update", "-q"], check=True, env=env)
        install = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
        subprocess.run(install, check=True, env=env)
    except (OSError, subprocess.CalledProcessError) as e:
        print(
            f"apt-get could not install chromium ({e}): the browser tests will skip",
            file=sys.stderr,
        )


def main() -> int:
    install_npm()
    install_chromium()
    return 0


if __name__ == "__main__":
    sys.exit(main())
