"""SAQ's test modules, from the sdist of the installed SAQ, fetched from PyPI into a cache.

Never copied into this repository: the sdist is downloaded with pip the first time (into
`.local/cache/saq-sdist/`, which git ignores) and read from there afterwards. So are the
packages SAQ's test modules import that this project does not install (`TEST_DEPENDENCIES`):
they go into a folder of the cache, which only the subprocess that runs SAQ's tests puts on
its path (after the venv's own packages), never into .venv (psycopg stays out of the app's
install, `tests/unit/test_bench_peers.py`).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

from tests.support import ROOT

CACHE = ROOT / ".local" / "cache" / "saq-sdist"
# SAQ's `dev` extra, the part its Redis test modules import: test_queue.py imports psycopg.sql
# and saq.queue.postgres (which needs psycopg_pool) at module level, test_worker.py
# time_machine (test_cron travels in time).
TEST_DEPENDENCIES = ("psycopg[binary,pool]==3.3.9", "psycopg-pool==3.3.3", "time-machine==3.6.0")


def installed_saq_version() -> str:
    return version("saq")


def _pip() -> list[str]:
    """A pip to download with: the venv's if any (uv's venvs have none), else the system's,
    else the one uv runs."""
    for python in (sys.executable, shutil.which("python3")):
        if (
            python
            and subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode
            == 0
        ):
            return [python, "-m", "pip"]
    uv = subprocess.run(
        [str(ROOT / "scripts" / "ensure-uv.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    return [uv, "tool", "run", "--from", "pip", "pip"]


def saq_sdist(saq_version: str) -> Path:
    """The path of `saq-<version>.tar.gz` in the cache, downloaded first if missing."""
    tarball = CACHE / f"saq-{saq_version}.tar.gz"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as download:
        done = subprocess.run(
            [
                *_pip(),
                "download",
                f"saq=={saq_version}",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                download,
            ],
            capture_output=True,
            text=True,
        )
        fetched = Path(download) / tarball.name
        failed = f"could not download SAQ {saq_version}'s sdist:\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, failed
        assert fetched.exists(), failed
        fetched.replace(tarball)  # whole or not at all: a cut download is never cached
    return tarball


def extract_tests(tarball: Path, into: Path) -> list[str]:
    """SAQ's `tests/*.py` from `tarball` into `into/tests/`; the names extracted."""
    target = into / "tests"
    target.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(tarball) as sdist:
        for member in sdist.getmembers():
            parts = Path(member.name).parts
            if (
                member.isfile()
                and len(parts) == 3
                and parts[1] == "tests"
                and parts[2].endswith(".py")
            ):
                source = sdist.extractfile(member)
                assert source is not None
                (target / parts[2]).write_bytes(source.read())
                names.append(parts[2])
    return sorted(names)


def saq_test_dependencies() -> Path:
    """The folder `TEST_DEPENDENCIES` are installed in (with uv, for this interpreter)."""
    pins = hashlib.sha256(" ".join(TEST_DEPENDENCIES).encode()).hexdigest()[:12]
    folder = (
        CACHE.parent / "saq-suite-deps" / f"py{sys.version_info[0]}{sys.version_info[1]}-{pins}"
    )
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    uv = subprocess.run(
        [str(ROOT / "scripts" / "ensure-uv.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(dir=folder.parent, ignore_cleanup_errors=True) as staging:
        done = subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--python",
                sys.executable,
                "--target",
                staging,
                *TEST_DEPENDENCIES,
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"could not install {TEST_DEPENDENCIES}:\n{done.stderr}"
        Path(staging).rename(folder)  # whole or not at all
    return folder
