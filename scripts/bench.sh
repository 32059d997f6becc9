#!/usr/bin/env bash
# Benchmarks (issue 7): delegate against `ssh host bash -s`, OpenSSH ControlMaster and pssh
# on real sshd hosts on loopback. Non-interactive; run from anywhere in the repo.
#
#   scripts/bench.sh                 full run (RTT 0 and 20 ms), writes BENCHMARKS.md
#   scripts/bench.sh --quick         a short run for development
#   scripts/bench.sh --rtt 0,2,20,80 other RTT levels (any arguments go to delegate-bench)
#
# Installs what is missing (tmux, openssh-server/client, pssh, GNU time) with apt-get when run as root.
# As root it creates the benchmark login user `dlgbench` (useradd -m, then usermod -p '*'
# so key logins work without PAM) unless it exists, and removes it again afterwards if it
# created it (keep it with DELEGATE_BENCH_KEEP_USER=1). Hosts never log in as root: root's
# shell rc costs 100-300 ms per exec on the reference machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

user=dlgbench
is_root=0
[ "$(id -u)" -eq 0 ] && is_root=1

missing=()
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v parallel-ssh >/dev/null 2>&1 || missing+=(pssh)
[ -x /usr/bin/time ] || missing+=(time)
if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$is_root" = 1 ]; then
		echo "bench: installing ${missing[*]}" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	else
		echo "bench: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
		exit 1
	fi
fi

created_user=0
extra=()
if [ "$is_root" = 1 ]; then
	if ! id "$user" >/dev/null 2>&1; then
		echo "bench: creating the benchmark user $user" >&2
		useradd -m -s /bin/bash "$user"
		created_user=1
	fi
	# useradd leaves the account locked, and sshd without PAM refuses key logins to it.
	usermod -p '*' "$user"
	extra+=(--user "$user")
fi

cleanup() {
	if [ "$created_user" = 1 ] && [ "${DELEGATE_BENCH_KEEP_USER:-0}" != 1 ]; then
		userdel -r "$user" >/dev/null 2>&1 || echo "bench: could not remove user $user" >&2
	fi
}
trap cleanup EXIT

cargo build --release --locked -p delegate@0.1.0 -p delegate-bench

reproduce="scripts/bench.sh${*:+ $*}"
# The harness pins itself (the client) to CPU 0 and every sshd and the delay proxy to CPU 1.
target/release/delegate-bench --delegate target/release/delegate "${extra[@]}" --reproduce "$reproduce" "$@"
