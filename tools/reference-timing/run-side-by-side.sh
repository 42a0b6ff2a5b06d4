#!/usr/bin/env bash
# Alternates the reference PyTorch steps (time_reference.py) and ZMagic's `compare` benchmark, one process each per
# round, on the same machine, so that both see the same background load. Prints both logs; docs/performance.md has
# the resulting table.
#   tools/reference-timing/run-side-by-side.sh FACE_GD_DIR [rounds=3] [python=python3]
set -euo pipefail
face_gd="$(realpath "$1")"; rounds="${2:-3}"; python="${3:-python3}"
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(cd "$here/../.." && pwd)"
cd "$repo"
dotnet build -c Release benchmarks/ZMagic.Benchmarks -nologo -v:q >/dev/null
for r in $(seq 1 "$rounds"); do
  echo "=== round $r reference $(date -u +%T)"
  "$python" "$here/time_reference.py" "$face_gd" 2 1 freedom2,magic2,freedom3,magic3,freedom2_frozen | grep -v '^{'
  echo "=== round $r zmagic $(date -u +%T)"
  dotnet run -c Release --no-build --project benchmarks/ZMagic.Benchmarks -- compare --backbone celebahq --steps 1 --warmup 1 \
    --cases vanilla/sum/2,zmagic/cagrad/2,zmagic/cagrad/3,zmagic-reuse/cagrad/2,zmagic-firstorder-reuse/cagrad/2,vanilla/sum/3 2>&1 | grep -v '^|'
done
echo "=== end $(date -u +%T)"
