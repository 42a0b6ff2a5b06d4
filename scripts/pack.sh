#!/usr/bin/env bash
# Packs ZMagic.Core, ZMagic.Models, ZMagic.Encoders and ZMagic.Guidance (.nupkg + .snupkg) into artifacts/packages
# (or $1). Extra arguments go to MSBuild, e.g. -p:VersionSuffix=preview.1 or -p:NoBuild=true.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-artifacts/packages}")"
shift || true
mkdir -p "$out"
dotnet msbuild scripts/pack.proj -restore -t:Pack -p:Configuration=Release -p:PackageOutputPath="$out" -nologo -v:m "$@"
ls -l "$out"
