#!/usr/bin/env bash
# The main job, end to end, on one machine: start a throwaway SSH host on loopback (a real
# OpenSSH sshd, logging in as an unprivileged user), then delegate tasks to a brother on it
# with the built-in self-test agent, and show what the mailbox recorded.
#
#   scripts/demo.sh
#
# Installs what is missing (tmux, openssh-server) with apt-get, builds delegate, and cleans
# up after itself (sshd, the host's tmux server, the temp dir). Your own delegate config,
# mailbox and ~/.ssh are not touched: everything lives in a temp dir.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

# --- what the demo needs --------------------------------------------------------------
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
missing=()
command -v tmux >/dev/null || missing+=(tmux)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
if [ "${#missing[@]}" -gt 0 ]; then
	say "installing ${missing[*]}"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

say "building delegate"
cargo build --quiet --bin delegate
DELEGATE=$PWD/target/debug/delegate

# --- a throwaway SSH host ---------------------------------------------------------------
# As root, the host logs in as a dedicated user: root's shell startup files are often slow,
# and some agents refuse to run as root. useradd leaves the account locked, which sshd
# (UsePAM no) refuses even for keys, hence usermod -p '*'.
if [ "$(id -u)" -eq 0 ]; then
	remote_user=dlgdemo
	id -u "$remote_user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$remote_user"
	usermod -p '*' "$remote_user"
	mkdir -p /run/sshd
else
	remote_user=$(id -un)
fi

demo=$(mktemp -d /tmp/delegate-demo.XXXXXX)
chmod 711 "$demo"
mkdir -p "$demo"/{etc,client,host/remote,host/work,host/tmux}
host_home=$(getent passwd "$remote_user" | cut -d: -f6)
sshd_pid=
cleanup() {
	# The host's tmux server outlives SSH sessions: stop it by its own socket, then sshd.
	if [ -n "$sshd_pid" ]; then
		run_as_host env TMUX_TMPDIR="$demo/host/tmux" tmux -L delegate kill-server 2>/dev/null || true
		kill "$sshd_pid" 2>/dev/null || true
		wait "$sshd_pid" 2>/dev/null || true
	fi
	rm -rf "$demo"
}
trap cleanup EXIT
run_as_host() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u "$remote_user" -- "$@"; else "$@"; fi
}

ssh-keygen -q -t ed25519 -N '' -C demo-host -f "$demo/etc/host_key"
ssh-keygen -q -t ed25519 -N '' -C demo-client -f "$demo/client/id_ed25519"
cp "$demo/client/id_ed25519.pub" "$demo/etc/authorized_keys"
chmod 644 "$demo/etc/authorized_keys"
[ "$(id -u)" -ne 0 ] || chown -R "$remote_user" "$demo/host"

for port in $(shuf -i 20000-60000 -n 20); do
	cat >"$demo/etc/sshd_config" <<CONF
ListenAddress 127.0.0.1:$port
HostKey $demo/etc/host_key
AuthorizedKeysFile $demo/etc/authorized_keys
PidFile $demo/etc/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
AllowUsers $remote_user
SetEnv TMUX_TMPDIR=$demo/host/tmux
CONF
	/usr/sbin/sshd -D -e -f "$demo/etc/sshd_config" 2>"$demo/etc/sshd.log" &
	sshd_pid=$!
	for _ in $(seq 50); do
		grep -q 'Server listening' "$demo/etc/sshd.log" 2>/dev/null && break 2
		kill -0 "$sshd_pid" 2>/dev/null || break
		sleep 0.1
	done
	wait "$sshd_pid" 2>/dev/null || true
	sshd_pid=
done
[ -n "$sshd_pid" ] || { cat "$demo/etc/sshd.log" >&2; echo "demo: could not start sshd" >&2; exit 1; }
say "throwaway host: sshd on 127.0.0.1:$port, user $remote_user (home $host_home)"

# delegate runs as a newcomer would, with its own config, mailbox and ~/.ssh.
export HOME=$demo/client DELEGATE_CONFIG=$demo/client/config.toml DELEGATE_HOME=$demo/client/mailbox
mkdir -p "$HOME/.ssh"
unset SSH_AUTH_SOCK

say "inventory: one host, one brother running the self-test agent"
show "$DELEGATE" hosts add masuda --address 127.0.0.1 --port "$port" --user "$remote_user" \
	--identity "$demo/client/id_ed25519" --known-hosts "$demo/client/known_hosts" \
	--remote-root "$demo/host/remote"
show "$DELEGATE" brothers add oppy --host masuda --workdir "$demo/host/work" --agent self-test --sandbox read
cat "$DELEGATE_CONFIG"

say "an unknown host key is refused, with its fingerprint and the command to trust it"
set +e
"$DELEGATE" oppy "review the training config"
echo "(exit code $?)"
set -e
# Compare with the fingerprint the host itself reports, out of band, before trusting it.
fingerprint=$(ssh-keygen -lf "$demo/etc/host_key.pub" | cut -d' ' -f2)
show "$DELEGATE" hosts trust masuda --fingerprint "$fingerprint"

say "check the brother before the first task: everything a launch needs, with the fix for anything missing"
show "$DELEGATE" doctor oppy

say "delegate a task: it travels over SSH into a detached tmux session on the host"
show "$DELEGATE" oppy "review the training config"
show "$DELEGATE" oppy $'count slowly to five\n@self-test sleep 5' --subject "a longer task"

say "on the host: the tmux session, on delegate's own socket"
run_as_host env TMUX_TMPDIR="$demo/host/tmux" tmux -L delegate list-sessions -F '#{session_name} pane_pid=#{pane_pid}'

say "status of what is in flight (every state command syncs first: one SSH exec per host)"
show "$DELEGATE" status

say "wait for both tasks: exit 0 only if all completed"
show "$DELEGATE" wait 2 3 --timeout 60s

say "the mailbox: what the brother reported with its report helper"
show "$DELEGATE" mailbox

say "task 2 in full: launch evidence, messages, outcome, history (task 1 is the refused attempt)"
show "$DELEGATE" list
show "$DELEGATE" show 2

say "what task 3's agent wrote, as read from the brother"
show "$DELEGATE" logs 3

say "done: sshd and the host's tmux server are stopped and $demo is removed on exit"
