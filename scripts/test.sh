#!/usr/bin/env bash
# Runs every test project (tests/*/*.Tests.csproj) in Release and ends with exactly one line "N passed, N failed".
# Extra arguments go to each `dotnet test` (e.g. --filter "Category!=Slow").
#
# - restore (retried: the package registry can be flaky), then one build of the solution;
# - each test project in its own `dotnet test` run with --blame-crash (a native abort inside libtorch names the test
#   that died; the mini dump, ~170 MB with libtorch loaded, lands under TestResults/) and --blame-hang-timeout
#   (a hung test is killed and named instead of stalling CI; ZMAGIC_TEST_HANG_TIMEOUT, default 15m);
# - a project whose test host crashed, hung or did not report counts as failed even when no single test failed;
# - per-project wall time and the slowest tests are printed, so a slow suite cannot hide.
# Exit status: 0 only when every project ran, no test failed and at least one test passed.
set -uo pipefail
cd "$(dirname "$0")/.."

# libtorch worker threads spin while waiting; xunit already runs two test classes at once on 2 cores, so one
# intra-op thread per test avoids oversubscription (measured up to 25x faster on a loaded machine).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1 \
  DOTNET_GENERATE_ASPNET_CERTIFICATE=false DOTNET_ADD_GLOBAL_TOOLS_TO_PATH=false DOTNET_CLI_WORKLOAD_UPDATE_NOTIFY_DISABLE=1

results="${ZMAGIC_TEST_RESULTS:-$PWD/TestResults}"
hang_timeout="${ZMAGIC_TEST_HANG_TIMEOUT:-15m}"
rm -rf "$results"
mkdir -p "$results"

passed=0
failed=0
finish() {
  if [ $((passed + failed)) -eq 0 ]; then
    echo "No test ran: counting the run as failed." >&2
    failed=1
  fi
  echo "$passed passed, $failed failed"
  if [ "$failed" -eq 0 ]; then exit 0; else exit 1; fi
}

restored=""
for attempt in 1 2 3 4; do
  if dotnet restore ZMagic.sln; then restored=1; break; fi
  if [ "$attempt" -lt 4 ]; then
    echo "dotnet restore failed (attempt $attempt of 4); retrying in $((attempt * 20)) s." >&2
    sleep $((attempt * 20))
  fi
done
if [ -z "$restored" ]; then
  echo "dotnet restore failed 4 times; no test ran." >&2
  failed=1
  finish
fi

# Build the whole solution once (libraries, CLI, benchmarks, tests). A failure counts as one failed item, but the
# test projects that do build still run below, so one broken project cannot hide the others' results.
build_start=$SECONDS
if ! dotnet build ZMagic.sln -c Release --no-restore; then
  echo "The solution build failed (counted as 1 failed); running the test projects that build." >&2
  failed=$((failed + 1))
  summary_build="  ZMagic.sln build FAILED (counted as 1 failed)"
  solution_built=0
else
  summary_build="  ZMagic.sln build ok"
  solution_built=1
fi
echo "Build: $((SECONDS - build_start)) s"

mapfile -t projects < <(find tests -mindepth 2 -maxdepth 2 -name '*.Tests.csproj' | sort)
if [ "${#projects[@]}" -eq 0 ]; then
  echo "No test project found under tests/." >&2
  failed=$((failed + 1))
  finish
fi

# Reads one attribute of the first <Counters .../> element of a trx file (0 when absent).
counter() { sed -n "s/.*<Counters[^>]* $2=\"\([0-9]*\)\".*/\1/p" "$1" | head -n 1 | grep . || echo 0; }

summary=()
for proj in "${projects[@]}"; do
  name="$(basename "$proj" .csproj)"
  dir="$results/$name"
  start=$SECONDS
  if [ "$solution_built" -eq 0 ] && ! dotnet build "$proj" -c Release --no-restore -v quiet > "$results/$name.build.log" 2>&1; then
    cat "$results/$name.build.log"
    failed=$((failed + 1))
    summary+=("$(printf '  %-28s build FAILED (counted as 1 failed; log %s)' "$name" "$results/$name.build.log")")
    continue
  fi
  dotnet test "$proj" -c Release --no-build \
    --blame-crash --blame-crash-dump-type mini \
    --blame-hang-timeout "$hang_timeout" --blame-hang-dump-type mini \
    --logger "trx;LogFileName=$name.trx" --results-directory "$dir" "$@"
  rc=$?
  secs=$((SECONDS - start))
  trx="$dir/$name.trx"
  p=0; f=0; note=""
  if [ -f "$trx" ] && grep -q '<Counters ' "$trx"; then
    p=$(counter "$trx" passed)
    f=$(( $(counter "$trx" failed) + $(counter "$trx" error) + $(counter "$trx" timeout) + $(counter "$trx" aborted) ))
    total=$(counter "$trx" total)
    [ "$total" -eq 0 ] && [ "$rc" -eq 0 ] && note=" (no tests)"
  else
    f=1
    note=" (no results: the test host did not report; counted as 1 failed)"
  fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # Crash, hang, abort or a run-level error: no single test is marked failed, so count the project.
    f=1
    note="${note} (dotnet test exited $rc: test host crashed, hung or aborted; see $dir)"
  fi
  passed=$((passed + p))
  failed=$((failed + f))
  summary+=("$(printf '  %-28s %5d passed %4d failed %6d s%s' "$name" "$p" "$f" "$secs" "$note")")
done

echo
echo "Per project:"
echo "$summary_build"
printf '%s\n' "${summary[@]}"
# The slowest tests over all projects (duration="hh:mm:ss.fffffff" in the trx files).
slowest=$(find "$results" -name '*.trx' -print0 | xargs -0 -r cat | grep -o '<UnitTestResult [^>]*>' \
  | sed -n 's/.* testName="\([^"]*\)".* duration="\([0-9]*\):\([0-9]*\):\([0-9.]*\)".*/\2 \3 \4 \1/p' \
  | sed 's/&quot;/"/g; s/&apos;/'"'"'/g; s/&lt;/</g; s/&gt;/>/g; s/&amp;/\&/g' \
  | awk '{ s = $1 * 3600 + $2 * 60 + $3; $1 = $2 = $3 = ""; sub(/^ +/, ""); printf "%9.2f s  %s\n", s, $0 }' \
  | sort -rn | head -n 8)
if [ -n "$slowest" ]; then
  echo "Slowest tests:"
  echo "$slowest"
fi
finish
