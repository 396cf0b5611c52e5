#!/usr/bin/env bash
# Regenerates src/tidings/wire/tidings_pb2.py(+.pyi) from the .proto schema.
# The generated files are committed so that a plain install needs no protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PATH="$(dirname "$PY"):$PATH" "$PY" -m grpc_tools.protoc -I src/tidings/wire/proto \
  --python_out=src/tidings/wire --mypy_out=src/tidings/wire \
  src/tidings/wire/proto/tidings.proto
