"""Developer entry point: needs only Python (3.10+) and pip.

    python3 dev.py demo     # install into .venv if needed, then run `corepool demo`
    python3 dev.py test     # install into .venv if needed, then run the whole test suite
    python3 dev.py lint     # ruff, ruff format --check, mypy --strict, import-linter
    python3 dev.py docs     # build the documentation site into site/ (mkdocs --strict)
    python3 dev.py lock     # re-resolve requirements/dev.lock (needs uv)

The virtual environment lives in ``.venv/py<major>.<minor>`` of the Python
that runs this script, so ``python3.10 dev.py test`` and ``python3.13 dev.py
test`` keep separate environments. It is installed from the lock file and
reinstalled only when the lock file or pyproject.toml change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "requirements" / "dev.lock"
VENV = ROOT / ".venv" / f"py{sys.version_info.major}.{sys.version_info.minor}"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in (LOCK, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(*args: str | Path) -> None:
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, check=False)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def ensure_venv() -> None:
    """Create the environment and install the locked dependencies, once per change."""
    stamp = VENV / ".corepool-installed"
    if stamp.exists() and stamp.read_text() == _fingerprint():
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV.relative_to(ROOT)} ...", flush=True)
        venv.create(VENV, with_pip=True)
    python = BIN / "python"
    print("installing the locked dependencies ...", flush=True)
    _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(python, "-m", "pip", "install", "--quiet", "-r", LOCK)
    _run(python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ROOT)
    stamp.write_text(_fingerprint())


def main(argv: list[str]) -> None:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "lock":
        _run(
            "uv", "pip", "compile", "pyproject.toml", "--extra", "dev", "--universal",
            "--python-version", "3.10", "-o", LOCK,
        )  # fmt: skip
        return
    if command not in ("demo", "test", "lint", "docs"):
        sys.exit(__doc__)
    ensure_venv()
    if command == "demo":
        _run(BIN / "corepool", "demo", *rest)
    elif command == "test":
        _run(BIN / "python", "-m", "pytest", *rest)
    elif command == "docs":
        # Strict: a broken link, a missing snippet or a reference to a name
        # that no longer exists fails the build. The variable quiets
        # Material's notice about MkDocs 2.
        os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
        _run(BIN / "mkdocs", "build", "--strict", "--site-dir", ROOT / "site", *rest)
    else:
        _run(BIN / "ruff", "check", "src", "tests", "benchmarks", "dev.py")
        _run(BIN / "ruff", "format", "--check", "src", "tests", "benchmarks", "dev.py")
        _run(BIN / "mypy")
        _run(BIN / "lint-imports")


if __name__ == "__main__":
    main(sys.argv[1:])
