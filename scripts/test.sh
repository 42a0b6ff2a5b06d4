#!/usr/bin/env bash
# Runs every test project of the solution and prints one closing line "N passed, N failed".
# Extra arguments go to `dotnet test` (e.g. --filter "Category!=Slow").
set -uo pipefail
cd "$(dirname "$0")/.."
results="${ZMAGIC_TEST_RESULTS:-$PWD/TestResults}"
rm -rf "$results"
mkdir -p "$results"
# --blame-crash: a native abort inside libtorch names the test that died instead of hiding it.
dotnet test ZMagic.sln -c Release --blame-crash --logger "trx" --results-directory "$results" "$@"
status=$?
passed=0; failed=0; total=0
for f in "$results"/*.trx; do
  [ -e "$f" ] || continue
  line=$(grep -o '<Counters [^>]*>' "$f" | head -n 1)
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$line"); p=${p:-0}
  fl=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$line"); fl=${fl:-0}
  t=$(sed -n 's/.* total="\([0-9]*\)".*/\1/p' <<<"$line"); t=${t:-0}
  passed=$((passed + p)); failed=$((failed + fl)); total=$((total + t))
done
# A crashed or unbuilt project writes no counters: count the run as failed rather than hiding it.
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$total" -eq 0 ]; then failed=$((failed > 0 ? failed : 1)); fi
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
