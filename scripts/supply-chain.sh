#!/usr/bin/env bash
# Supply-chain checks (S12 in the test plan), offline.
#
#   scripts/supply-chain.sh
#
# 1. Always: the Cargo.lock checks in tests/e2e/supply_chain.rs (russh >= 0.63.1, exactly
#    one russh, every package from crates.io); no network, no extra tools.
# 2. When cargo-deny is installed: `cargo deny check licenses bans sources` with deny.toml.
# 3. When DELEGATE_ADVISORY_DB names a vendored RustSec advisory-db checkout (a directory
#    clone, holding crates/<name>/RUSTSEC-*.md): `cargo deny check advisories` against it (`--offline`: cargo-deny >= 0.18 fetches nothing; older ones spelled it
#    `check --disable-fetch`). Nothing is fetched.
#
# It prints what was checked and what was not. Exit 0 when everything that ran passed;
# 1 when a check failed. A skipped check is not a failure: read the summary.
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

declare -a checked=() skipped=() failed=()

run() { # label command...
	local label=$1
	shift
	printf '==> %s\n' "$label"
	if "$@"; then
		checked+=("$label")
	else
		failed+=("$label")
	fi
}

run "Cargo.lock floor (russh >= 0.63.1, one russh, crates.io only)" \
	cargo test --locked --offline --test e2e -- --quiet supply_chain

if cargo deny --version >/dev/null 2>&1; then
	run "cargo deny check licenses bans sources ($(cargo deny --version))" \
		cargo deny --offline check licenses bans sources
else
	skipped+=("licenses, bans, sources: cargo-deny is not installed (cargo install --locked cargo-deny)")
fi

db=${DELEGATE_ADVISORY_DB:-}
if [ -z "$db" ]; then
	skipped+=("advisories: DELEGATE_ADVISORY_DB is not set (point it at a vendored RustSec advisory-db checkout)")
elif ! [ -d "$db/crates" ]; then
	failed+=("advisories: DELEGATE_ADVISORY_DB=$db is not an advisory-db checkout (no crates/ directory)")
elif ! cargo deny --version >/dev/null 2>&1; then
	skipped+=("advisories: cargo-deny is not installed")
else
	# cargo-deny takes the DB location from the config: a copy of deny.toml with db-path
	# set. Under db-path it looks for <url name>-<hash of the URL>, which for the default
	# https://github.com/rustsec/advisory-db is advisory-db-3157b0e258782691 (cargo-deny
	# 0.20.2), and reads the commit date with git, so the snapshot must be a git clone.
	tmp=$(mktemp -d)
	trap 'rm -rf -- "$tmp"' EXIT
	mkdir -p -- "$tmp/db"
	ln -s -- "$(cd -- "$db" && pwd)" "$tmp/db/advisory-db-3157b0e258782691"
	sed -e "s|^\[advisories\]$|[advisories]\ndb-path = \"$tmp/db\"|" deny.toml >"$tmp/deny.toml"
	run "cargo deny --offline check advisories (snapshot $db, nothing fetched)" \
		cargo deny --offline --config "$tmp/deny.toml" check advisories
	skipped+=("advisories not in RustSec (GHSA-only, as many russh ones are): need a networked OSV/GHSA check")
fi

printf '\n--- supply chain summary\n'
for c in "${checked[@]}"; do printf 'checked: %s\n' "$c"; done
for s in "${skipped[@]}"; do printf 'NOT checked: %s\n' "$s"; done
for f in "${failed[@]}"; do printf 'FAILED: %s\n' "$f"; done
[ "${#failed[@]}" -eq 0 ]
