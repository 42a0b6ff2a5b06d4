#!/usr/bin/env bash
# Packs ZMagic.Core, ZMagic.Models, ZMagic.Encoders, ZMagic.Guidance and ZMagic.Demo.Digits (.nupkg + .snupkg) into artifacts/packages
# (or the folder given). With --tool it also packs the dotnet tool `zmagic`: ZMagic.Cli (pointer package) and
# ZMagic.Cli.linux-x64 (the tool with libtorch, about 130 MB; see docs/cli.md).
# Usage: scripts/pack.sh [--tool] [OUT_DIR] [MSBuild arguments, e.g. -p:VersionSuffix=preview.1 or -p:NoBuild=true]
set -euo pipefail
cd "$(dirname "$0")/.."
tool=()
if [ "${1:-}" = "--tool" ]; then
  tool=(-p:ZMagicPackTool=true)
  shift
fi
out="$(realpath -m "${1:-artifacts/packages}")"
shift || true
mkdir -p "$out"
dotnet msbuild scripts/pack.proj -restore -t:Pack -p:Configuration=Release -p:PackageOutputPath="$out" -nologo -v:m "${tool[@]}" "$@"
ls -l "$out"
