"""Generates the gRPC stubs of sluice.v1 from proto/ into src/sluice/_gen (shipped in the package).

    python clients/python/make_stubs.py           # regenerate after changing proto/
    python clients/python/make_stubs.py --check   # exit 1 if the shipped stubs are stale

Needs the pinned grpcio-tools of requirements-dev.txt: the stubs record the versions they were
generated with, and pyproject.toml's grpcio / protobuf floors must match them (the check says so).
"""

import pathlib
import re
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "src" / "sluice" / "_gen"
PYPROJECT = HERE / "pyproject.toml"


def generate(out: pathlib.Path) -> None:
    """Writes the stubs under `out` (a package: `out/sluice/v1/sluice_pb2*.py`)."""
    out.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / "sluice" / "v1" / "sluice.proto"),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")
    # Generated modules import each other as top-level `sluice.v1...`: make them package-relative.
    grpc_module = out / "sluice" / "v1" / "sluice_pb2_grpc.py"
    grpc_module.write_text(grpc_module.read_text().replace("from sluice.v1 import", "from . import"))
    for pkg in (out, out / "sluice", out / "sluice" / "v1"):
        (pkg / "__init__.py").write_text("")


def files(root: pathlib.Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*.py*"))
            if "__pycache__" not in p.parts}


def floors_match(stubs: dict) -> list:
    """Problems with pyproject's floors against the versions the stubs require."""
    problems = []
    deps = PYPROJECT.read_text()
    grpc_module = stubs.get("sluice/v1/sluice_pb2_grpc.py", "")
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_module)
    if grpc_version and f'"grpcio>={grpc_version[1]}"' not in deps:
        problems.append(f"pyproject.toml must require grpcio>={grpc_version[1]}")
    pb2 = stubs.get("sluice/v1/sluice_pb2.py", "")
    gencode = re.search(r"Protobuf Python Version: ([\d.]+)", pb2)
    if gencode and f'"protobuf>={gencode[1]}' not in deps:
        problems.append(f"pyproject.toml must require protobuf>={gencode[1]}")
    return problems


def main() -> int:
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            fresh_root = pathlib.Path(tmp)
            generate(fresh_root)
            fresh, shipped = files(fresh_root), files(OUT)
        stale = sorted(n for n in fresh.keys() | shipped.keys() if fresh.get(n) != shipped.get(n))
        problems = [f"stale stub: {n}" for n in stale] + floors_match(fresh)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run: python clients/python/make_stubs.py", file=sys.stderr)
            return 1
        print("stubs are fresh")
        return 0
    generate(OUT)
    print(f"stubs written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
