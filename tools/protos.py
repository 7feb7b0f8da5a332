"""Generate (or check) the Python code for every contract under protos/.

There is one pipeline for generated code: this script, run through
`make protos` with the pinned grpcio-tools. `--check` regenerates into a
scratch directory and fails on any difference from what is committed, so
hand edits and stale stubs cannot reach main.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "services" / "common" / "src"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generated_files(out: Path) -> list[Path]:
    files: list[Path] = []
    for proto in proto_files():
        stem = proto.relative_to(PROTO_ROOT).with_suffix("")
        files.extend(out / f"{stem}{suffix}" for suffix in SUFFIXES)
    return files


def generate(out: Path) -> None:
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    # protoc resolves relative file names against the include path.
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        generate(scratch)
        stale = []
        for fresh in generated_files(scratch):
            committed = OUT_ROOT / fresh.relative_to(scratch)
            if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                stale.append(str(committed.relative_to(ROOT)))
        # Generated files whose .proto is gone are stale too.
        expected = {p.relative_to(scratch) for p in generated_files(scratch)}
        for suffix in SUFFIXES:
            for committed in OUT_ROOT.rglob(f"*{suffix}"):
                if committed.relative_to(OUT_ROOT) not in expected:
                    stale.append(str(committed.relative_to(ROOT)))
    if stale:
        print("generated code differs from protos/ (run `make protos`):", file=sys.stderr)
        for path in sorted(stale):
            print(f"  {path}", file=sys.stderr)
        return 1
    print(f"generated code matches {len(proto_files())} proto files")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    ns = parser.parse_args()
    if ns.check:
        return check()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        generate(scratch)
        for suffix in SUFFIXES:
            for old in OUT_ROOT.rglob(f"*{suffix}"):
                old.unlink()
        for fresh in generated_files(scratch):
            target = OUT_ROOT / fresh.relative_to(scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh, target)
    print(f"generated {len(generated_files(OUT_ROOT))} files from {len(proto_files())} protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
