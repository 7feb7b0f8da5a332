"""perf_analyzer for the benchmarks, also where its PyPI wheel cannot run as it is.

The perf-analyzer wheels on PyPI are built for glibc 2.38 and GCC 13's libstdc++
(manylinux_2_38); Debian 12, this project's machine, has glibc 2.36, so pip picks an
empty 0.1.0 there and the real binary fails to load. `command()` gives the argv that
runs it: `perf_analyzer` from the PATH when that runs; else the binary of the 2.60.0
wheel under bench/out/perf_analyzer/, started by the dynamic loader of Debian 13's
glibc with Debian 13's libc6, libstdc++6 and libgcc-s1 unpacked beside it (the
system's own libraries untouched; its libssl and libz still used). `prepare()` fetches
those with pip and apt-get (a sources list and package lists of its own, in that
folder), once.

    python bench/perf_analyzer_runtime.py        # prepare, then print the command
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / "bench" / "out" / "perf_analyzer"
WHEEL = "perf-analyzer==2.60.0"
DEBIAN = "trixie"
PACKAGES = ("libc6", "libstdc++6", "libgcc-s1")
LIBS = HOME / "root" / "usr" / "lib" / "x86_64-linux-gnu"
BINARY = HOME / "wheel" / "perf_analyzer" / "bin" / "perf_analyzer"


def _runs(argv: list[str]) -> bool:
    try:
        done = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return "Perf Analyzer Version" in done.stdout + done.stderr


def _local() -> list[str]:
    return [str(LIBS / "ld-linux-x86-64.so.2"), "--library-path", f"{LIBS}:/lib/x86_64-linux-gnu", str(BINARY)]


def command() -> list[str] | None:
    """The argv prefix that runs perf_analyzer here, or None (then `prepare()` may make one)."""
    if shutil.which("perf_analyzer") and _runs(["perf_analyzer"]):
        return ["perf_analyzer"]
    if BINARY.is_file() and (LIBS / "ld-linux-x86-64.so.2").is_file() and _runs(_local()):
        return _local()
    return None


def prepare() -> list[str]:
    """`command()`, fetching the wheel and Debian 13's C and C++ runtime first when nothing runs."""
    found = command()
    if found is not None:
        return found
    HOME.mkdir(parents=True, exist_ok=True)
    wheels = HOME / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--platform", "manylinux_2_38_x86_64", "--python-version", "3.11", "-d", str(wheels), WHEEL],
        check=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("perf_analyzer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(HOME / "wheel")
    BINARY.chmod(0o755)
    apt = HOME / "apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = apt / "sources.list"
    sources.write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {DEBIAN} main\n"
    )
    options = [
        "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1",
    ]  # fmt: skip
    subprocess.run(["apt-get", *options, "-qq", "update"], check=True)
    debs = HOME / "debs"
    debs.mkdir(exist_ok=True)
    subprocess.run(["apt-get", *options, "-qq", "download", *PACKAGES], check=True, cwd=debs)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(HOME / "root")], check=True)
    found = command()
    if found is None:
        raise RuntimeError(f"perf_analyzer does not run from {BINARY} with the libraries under {LIBS}")
    return found


if __name__ == "__main__":
    print(" ".join(prepare()))
