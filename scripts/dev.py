#!/usr/bin/env python3
"""One-command set-up and entry points for a fresh machine (only Python >= 3.10 and pip needed).

    python3 scripts/dev.py demo [halm demo flags]   # create .venv if missing, install, run the offline demo
    python3 scripts/dev.py test [pytest flags]      # create .venv if missing, install, run the whole test suite
    python3 scripts/dev.py lint                     # ruff over the repository, then the import contracts
    python3 scripts/dev.py halm ARGS...             # any halm command inside the environment

Installation is redone only when pyproject.toml or this file changed (a stamp in .venv records it).
torch is pinned to 2.13.0 *before* halm is installed: an unpinned torch would pull several GB of
CUDA wheels. torchaudio and the `encodec` package are never installed (their CUDA-only builds fail
to import here and break `import transformers`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("HALM_VENV", ROOT / ".venv"))
TORCH = "torch==2.13.0"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def _stamp() -> str:
    h = hashlib.sha256()
    for f in ("pyproject.toml", "scripts/dev.py"):
        h.update((ROOT / f).read_bytes())
    return h.hexdigest()


def ensure_env() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - this script runs before the venv exists
        sys.exit(f"halm needs Python >= 3.10 (this is {sys.version.split()[0]})")
    if not PY.exists():
        _run([sys.executable, "-m", "venv", VENV])
    stamp_file = VENV / ".halm-installed"
    if stamp_file.exists() and stamp_file.read_text() == _stamp():
        return
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run(pip + [TORCH])
    _run(pip + ["-e", f"{ROOT}[test]"])
    # optional: the compiled SoundFont renderer of music corpora of generator version 1 (`halm synth music
    # --renderer tinysoundfont`, and the test that compares halm's renderer with it); its `pyaudio`
    # requirement is for live playback only, hence --no-deps
    _run(pip + ["--no-deps", "tinysoundfont>=0.3"])
    stamp_file.write_text(_stamp())


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    ensure_env()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if cmd == "demo":
        args = [PY, "-m", "halm", "demo", *rest]
    elif cmd == "test":
        args = [PY, "-m", "pytest", "-q", *rest]
    elif cmd == "lint":  # ruff, then the import contracts of pyproject.toml (import-linter)
        rc = subprocess.run([str(PY), "-m", "ruff", "check", str(ROOT), *rest], cwd=ROOT, env=env).returncode
        return rc or subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, env=env).returncode
    elif cmd == "halm":
        args = [PY, "-m", "halm", *rest]
    elif cmd == "setup":
        return 0
    else:
        print(f"unknown command {cmd!r}; see --help", file=sys.stderr)
        return 2
    return subprocess.run([str(a) for a in args], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
