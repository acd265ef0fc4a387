"""Generates the gRPC stubs of sluice.v1 from proto/ into sluice/_gen (not committed).

Run once after installing the requirements:

    pip install -r examples/python/requirements.txt
    python examples/python/make_stubs.py
"""

import pathlib
import sys

from grpc_tools import protoc

import grpc_tools

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "sluice" / "_gen"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "__init__.py").write_text("")
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            str(PROTO_ROOT / "sluice" / "v1" / "sluice.proto"),
        ]
    )
    if code != 0:
        print("protoc failed", file=sys.stderr)
        return code
    # Generated modules import each other as top-level `sluice.v1...`: make them package-relative.
    for name in ("sluice_pb2_grpc.py",):
        path = OUT / "sluice" / "v1" / name
        text = path.read_text()
        path.write_text(text.replace("from sluice.v1 import", "from . import"))
    for pkg in (OUT / "sluice", OUT / "sluice" / "v1"):
        (pkg / "__init__.py").touch()
    print(f"stubs written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
