#!/usr/bin/env bash
# Bounded fuzzing of every parser of outside input (fuzz/fuzz_targets/*.rs).
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 30) each
#   scripts/fuzz.sh config sync_reply
#   FUZZ_SECONDS=300 scripts/fuzz.sh stream_claude
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`); without them it says so and exits 0, so CI without them
# passes. Each target starts from the seeds in fuzz/seeds/<target> and grows its corpus in
# fuzz/corpus/<target> (git-ignored). Exits 1 if any target crashed, naming the input
# that did it (fuzz/artifacts/<target>/crash-*); replay one with
#   cargo +nightly fuzz run <target> <that file>
# and add it to crates/delegate-core/tests/fuzz_regressions.rs.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-30}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
	echo "fuzz.sh: FUZZ_SECONDS must be a positive number of seconds, not '$seconds'" >&2
	exit 2
fi

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
	echo "fuzz.sh: SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
	exit 0
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
	echo "fuzz.sh: SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz)"
	exit 0
fi

cd fuzz
mapfile -t all < <(cargo +nightly fuzz list)
if [ "$#" -gt 0 ]; then
	targets=("$@")
	for t in "${targets[@]}"; do
		if ! printf '%s\n' "${all[@]}" | grep -qxF -- "$t"; then
			echo "fuzz.sh: no fuzz target '$t' (have: ${all[*]})" >&2
			exit 2
		fi
	done
else
	targets=("${all[@]}")
fi

echo "fuzz.sh: building ${#targets[@]} targets"
cargo +nightly fuzz build

failed=()
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
for t in "${targets[@]}"; do
	mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
	log="artifacts/$t/last-run.log"
	echo "fuzz.sh: $t for ${seconds}s"
	# The corpus first: libFuzzer writes new inputs into the first directory only.
	if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
		-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
		grep -E '^(stat::number_of_executed_units|Done )' "$log" | tail -n 1 || true
	else
		failed+=("$t")
		echo "fuzz.sh: $t FAILED; its log is $root/fuzz/$log" >&2
		grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY:|artifact_prefix|Test unit written)' "$log" | head -n 20 >&2 || true
	fi
done

# Every input that crashed, timed out or ran out of memory in this run.
mapfile -t crashes < <(find artifacts -type f -newer "$stamp" \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
if [ "${#failed[@]}" -gt 0 ] || [ "${#crashes[@]}" -gt 0 ]; then
	[ "${#failed[@]}" -gt 0 ] && echo "fuzz.sh: failed targets: ${failed[*]}" >&2
	for c in "${crashes[@]}"; do
		echo "fuzz.sh: crash input: $root/fuzz/$c" >&2
	done
	exit 1
fi
echo "fuzz.sh: no crashes in ${#targets[@]} targets (${seconds}s each)"
