#!/usr/bin/env bash
# Rewrites src/<lib>/PublicAPI.Unshipped.txt of the five library projects from the current code: every public symbol
# that is not in PublicAPI.Shipped.txt. Run it after adding public API (e.g. after merging a branch), review the diff,
# commit. It rebuilds the libraries once with the RS0016 diagnostics as plain warnings and collects their symbols.
#   scripts/update-public-api.sh            # all five libraries
#   scripts/update-public-api.sh --check    # exit 1 when a file would change (for CI)
set -euo pipefail
cd "$(dirname "$0")/.."
libs=(ZMagic.Core ZMagic.Models ZMagic.Encoders ZMagic.Guidance ZMagic.Demo.Digits)
check=0
[ "${1:-}" = "--check" ] && check=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for lib in "${libs[@]}"; do
  cp "src/$lib/PublicAPI.Unshipped.txt" "$work/$lib.orig"
  printf '#nullable enable\n' > "src/$lib/PublicAPI.Unshipped.txt"
done
restore() { for lib in "${libs[@]}"; do cp "$work/$lib.orig" "src/$lib/PublicAPI.Unshipped.txt"; done; }

# One rebuild of the libraries (Guidance references Core, Models and Encoders; Demo.Digits Core and Models); RS0016
# stays a warning, nothing else changes.
build() {
  dotnet build "$1" -c Release --no-incremental -nologo -v:q -p:TreatWarningsAsErrors=false -p:WarningsAsErrors= -clp:NoSummary
}
if ! { build src/ZMagic.Guidance/ZMagic.Guidance.csproj && build src/ZMagic.Demo.Digits/ZMagic.Demo.Digits.csproj; } > "$work/build.log" 2>&1; then
  restore
  grep -E "error" "$work/build.log" | sort -u >&2 || true
  echo "update-public-api: the build failed; the files are unchanged." >&2
  exit 1
fi

changed=0
for lib in "${libs[@]}"; do
  out="$work/$lib.new"
  printf '#nullable enable\n' > "$out"
  grep -F "warning RS0016" "$work/build.log" | grep -F "/$lib.csproj]" \
    | sed -E "s/.*warning RS0016: Symbol '(.*)' is not part of the declared public API.*/\1/" \
    | LC_ALL=C sort -u >> "$out" || true
  if ! cmp -s "$out" "$work/$lib.orig"; then changed=1; fi
  if [ "$check" -eq 1 ]; then
    cp "$work/$lib.orig" "src/$lib/PublicAPI.Unshipped.txt"
  else
    cp "$out" "src/$lib/PublicAPI.Unshipped.txt"
  fi
  echo "$lib: $(($(wc -l < "$out") - 1)) unshipped symbols"
done
if grep -qE "warning RS00(17|36|37)" "$work/build.log"; then
  grep -E "warning RS00(17|36|37)" "$work/build.log" | sort -u >&2
  echo "update-public-api: other public API diagnostics remain (see above)." >&2
  exit 1
fi
if [ "$check" -eq 1 ] && [ "$changed" -eq 1 ]; then
  echo "update-public-api --check: the public API differs from PublicAPI.*.txt; run scripts/update-public-api.sh." >&2
  exit 1
fi
