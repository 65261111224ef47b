"""The committed protobuf code in services/mailyard/v1 matches proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
COMMITTED = ROOT / "services" / "mailyard" / "v1"


def test_proto_sources_exist():
    assert sorted(p.name for p in (PROTO_DIR / "mailyard" / "v1").glob("*.proto")) == [
        "members.proto",
        "message.proto",
        "suppression.proto",
    ]


@pytest.mark.parametrize(
    "name",
    [
        f"{proto}_pb2.{ext}"
        for proto in ("members", "message", "suppression")
        for ext in ("py", "pyi")
    ],
)
def test_generated_code_is_fresh(tmp_path, name):
    protos = sorted(
        str(p.relative_to(ROOT)) for p in (PROTO_DIR / "mailyard" / "v1").glob("*.proto")
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"protoc failed:\n{completed.stderr}"
    fresh = (tmp_path / "mailyard" / "v1" / name).read_bytes()
    committed = (COMMITTED / name).read_bytes()
    assert committed == fresh, (
        f"services/mailyard/v1/{name} is stale (it does not match proto/): run make proto"
    )
