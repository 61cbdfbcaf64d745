#!/bin/bash
# The whole test suite: unit tests (cmocka, TAP output) then integration tests
# (real QEMU guests under TCG, real agents and stores), all built with
# ASan+UBSan. Usage: tests/run.sh BUILD_DIR  (default build/san)
set -u
cd "$(dirname "$0")/.."
B=${1:-build/san}
pass=0; fail=0; failed=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

count() { # count NAME LOGFILE EXITCODE
    local p f
    p=$(grep -c '^ok ' "$2"); f=$(grep '^not ok ' "$2" | grep -vc '# SKIP')
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" -gt 0 ] || [ "$3" -ne 0 ]; then
        failed+=("$1")
        [ "$f" -eq 0 ] && fail=$((fail + 1)) # a crash or a leak report with no failed case
    fi
}

log=$(mktemp); trap 'rm -f "$log"' EXIT
for t in "$B"/tests/test_*; do
    echo "# unit: $(basename "$t")"
    CMOCKA_MESSAGE_OUTPUT=TAP "$t" >"$log" 2>&1; rc=$?
    cat "$log"; count "$(basename "$t")" "$log" "$rc"
done
# ThreadSanitizer (make SAN=thread): unit tests and two racy integration tests.
if [ -x build/tsan/vmckptd ]; then
    echo "# tsan: tests/tsan.sh"
    bash guest/build.sh >/dev/null 2>&1
    bash tests/tsan.sh build/tsan >"$log" 2>&1; rc=$?
    cat "$log"; count tsan "$log" "$rc"
fi
# The library's dependency order (README "Code layout"), and that the check catches a back-edge.
echo "# layering: tests/layering.sh"
{ bash tests/layering.sh; bash tests/layering.sh --self-test; } >"$log" 2>&1; rc=$?
cat "$log"; count layering "$log" "$rc"
# Backends chosen at build time: a build without RADOS works and says so.
echo "# build options: tests/build_options.sh"
bash tests/build_options.sh "$B" >"$log" 2>&1; rc=$?
cat "$log"; count build_options "$log" "$rc"
echo "# settings: tests/settings_doc.sh"
bash tests/settings_doc.sh "$B" >"$log" 2>&1; rc=$?
cat "$log"; count settings "$log" "$rc"
# Every parser of outside input, fuzzed for a bounded time (libFuzzer, ASan+UBSan).
echo "# fuzz: ${VMCKPT_FUZZ_SECONDS:-30} s per harness"
if make -s fuzz-build >"$log" 2>&1; then
    bash tests/fuzz/run.sh "${VMCKPT_FUZZ_SECONDS:-30}" >"$log" 2>&1; rc=$?
else
    rc=1; echo "not ok - the fuzz harnesses build" >>"$log"
fi
cat "$log"; count fuzz "$log" "$rc"
bash guest/build.sh || { echo "cannot build the test guest"; exit 1; }
for t in tests/integration/t_*.sh; do
    echo "# integration: $(basename "$t")"
    start=$(date +%s)
    BIN=$B bash "$t" >"$log" 2>&1; rc=$?
    cat "$log"; count "$(basename "$t")" "$log" "$rc"
    echo "# $(basename "$t"): $(( $(date +%s) - start )) s"
done
[ ${#failed[@]} -gt 0 ] && echo "# failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
