# delegate launch script. Sent on the stdin of `bash -s` over SSH; never passed as argv.
#
# Rust prepends one line per variable, `DLG_X='<base64>'`, and nothing else: every variable
# part (prompt, argv, paths, names) travels base64-encoded, so no byte of it is ever parsed
# by a shell. The body is one function called on the last line, so a script cut off in
# transit defines things but runs nothing.
#
# Output contract (read by crates/delegate-core/src/launch.rs):
#   stdout  DELEGATE-EVIDENCE <base64 of launch.json>
#           DELEGATE-LAUNCHED <nonce> <session> <pane_pid>      (last line, only on success)
#   stderr  DELEGATE-ERROR <code> <message>                      (on a refused launch)
# Exit codes (also in src/exit.rs):
#   20 tmux missing   21 agent missing   22 prompt not written intact (disk full, hash)
#   23 base tools missing (base64, sha256sum)   24 workdir missing   25 task dir not writable
#   26 sandbox cannot be honoured   27 tmux refused the session   28 runner never reported
#   29 the task directory or session already belongs to a launch

main() {
	set -euo pipefail
	umask 077

	die() {
		local code=$1
		shift
		printf 'DELEGATE-ERROR %s %s\n' "$code" "$*" >&2
		exit "$code"
	}
	dec() { printf '%s' "$1" | base64 -d; }
	# Values interpolated into launch.json lose control characters, quotes and backslashes.
	# shellcheck disable=SC1003
	json_safe() { tr -d '\000-\037"\\'; }
	# shellcheck disable=SC2088 # the quoted "~/" is the literal prefix we expand ourselves
	expand_home() {
		case $1 in
		"~") printf '%s' "$HOME" ;;
		"~/"*) printf '%s/%s' "$HOME" "${1#"~/"}" ;;
		*) printf '%s' "$1" ;;
		esac
	}

	local tool
	for tool in base64 sha256sum mkdir mv cat date sed grep timeout id; do
		command -v "$tool" >/dev/null 2>&1 ||
			die 23 "'$tool' not found on PATH ($PATH) on this host: delegate needs bash, coreutils and tmux"
	done

	local task_key session nonce root workdir kind delivery sandbox prompt_sha launch_prefix
	task_key=$(dec "$DLG_TASK_KEY")
	session=$(dec "$DLG_SESSION")
	nonce=$(dec "$DLG_NONCE")
	root=$(expand_home "$(dec "$DLG_ROOT")")
	workdir=$(expand_home "$(dec "$DLG_WORKDIR")")
	kind=$(dec "$DLG_AGENT_KIND")
	delivery=$(dec "$DLG_PROMPT_DELIVERY")
	sandbox=$(dec "$DLG_SANDBOX")
	prompt_sha=$(dec "$DLG_PROMPT_SHA256")
	launch_prefix=$(dec "$DLG_LAUNCH_JSON")
	local -a argv requires
	mapfile -d '' -t argv < <(dec "$DLG_AGENT_ARGV")
	mapfile -d '' -t requires < <(dec "$DLG_REQUIRES")

	# --- preflight: each failure has its own code and says what to do -------------------
	local tmux_bin bash_bin
	tmux_bin=$(command -v tmux) ||
		die 20 "tmux not found on PATH ($PATH): install tmux on this host (apt-get install tmux)"
	bash_bin=$(command -v bash) || die 23 "bash not found on PATH ($PATH)"

	[ -d "$workdir" ] ||
		die 24 "working directory $workdir does not exist on this host: create it or pass --workdir"

	# The agent may live on the login shell's PATH only (npm or pipx bins added by ~/.profile).
	# Look there only when the plain PATH misses it: a login shell costs time and may print.
	local run_path=$PATH agent_path login_path
	if ! agent_path=$(command -v -- "${argv[0]}"); then
		login_path=$("${SHELL:-/bin/bash}" -lc 'command env' </dev/null 2>/dev/null | sed -n 's/^PATH=//p' | head -n1) || true
		run_path="$PATH${login_path:+:$login_path}"
		agent_path=$(PATH=$run_path command -v -- "${argv[0]}") ||
			die 21 "agent command '${argv[0]}' not found on PATH ($PATH) nor on the login shell's PATH (${login_path:-empty}): install it on this host or choose another agent"
	fi
	[ -x "$agent_path" ] || die 21 "agent command $agent_path is not executable"

	for tool in "${requires[@]}"; do
		PATH=$run_path command -v -- "$tool" >/dev/null 2>&1 ||
			die 26 "sandbox '$sandbox' for agent '$kind' needs '$tool' on this host and it is missing: install it, or choose another --sandbox (delegate refuses rather than run with less isolation)"
	done
	if [ "$(dec "$DLG_REFUSE_ROOT")" = 1 ] && [ "$(id -u)" = 0 ]; then
		die 26 "agent '$kind' refuses sandbox '$sandbox' as root: log in as an unprivileged user on this host, or choose --sandbox write"
	fi

	# --- task directory --------------------------------------------------------------------
	if ! { mkdir -p -- "$root/tasks" && chmod 700 -- "$root" "$root/tasks"; } 2>/dev/null; then
		die 25 "cannot create $root/tasks on this host: check the host's remote_root and its permissions"
	fi
	local dir=$root/tasks/$task_key
	if ! mkdir -- "$dir" 2>/dev/null; then
		[ -d "$dir" ] || die 25 "cannot create task directory $dir on this host"
		# A retry of the same launch (same nonce) finds its own directory; anything else is
		# another launch's, and is never reused.
		if [ -f "$dir/launch.json" ]; then
			if grep -q "\"nonce\":\"$nonce\"" "$dir/launch.json" &&
				"$tmux_bin" -L delegate has-session -t "=$session" 2>/dev/null; then
				printf 'DELEGATE-EVIDENCE %s\n' "$(base64 -w0 <"$dir/launch.json")"
				printf 'DELEGATE-LAUNCHED %s %s %s\n' "$nonce" "$session" "$(sed -n 's/^started pid=\([0-9]*\).*/\1/p' "$dir/state" | head -n1)"
				exit 0
			fi
			die 29 "task directory $dir already holds a launch: not starting a second agent"
		fi
	fi
	chmod 700 -- "$dir"
	if ! : >"$dir/.writable" 2>/dev/null; then
		die 25 "task directory $dir is not writable"
	fi
	rm -f -- "$dir/.writable"

	# --- prompt: written whole, checked, then renamed into place -------------------------
	if ! dec "$DLG_PROMPT" >"$dir/prompt.tmp" 2>/dev/null; then
		rm -f -- "$dir/prompt.tmp"
		die 22 "could not write the prompt to $dir (disk full?)"
	fi
	local sum
	sum=$(sha256sum <"$dir/prompt.tmp") && sum=${sum%% *}
	if [ "$sum" != "$prompt_sha" ]; then
		rm -f -- "$dir/prompt.tmp"
		die 22 "prompt arrived damaged (sha256 $sum, expected $prompt_sha): disk full or transfer error"
	fi
	mv -- "$dir/prompt.tmp" "$dir/prompt"

	# Extra files (the run script, agent settings, the self-test agent) come as NUL-separated
	# name/content pairs.
	local -a files
	mapfile -d '' -t files < <(dec "$DLG_FILES")
	local i
	for ((i = 0; i + 1 < ${#files[@]}; i += 2)); do
		printf '%s' "${files[i + 1]}" >"$dir/${files[i]}" || die 22 "could not write $dir/${files[i]} (disk full?)"
	done

	# Placeholders the lead cannot fill because they are remote paths.
	for i in "${!argv[@]}"; do
		argv[i]=${argv[i]//"{task_dir}"/"$dir"}
		argv[i]=${argv[i]//"{prompt_file}"/"$dir/prompt"}
	done
	argv[0]=$agent_path

	local agent_version=unknown tmux_version
	local -a version_argv
	mapfile -d '' -t version_argv < <(dec "$DLG_VERSION_ARGV")
	if [ "${#version_argv[@]}" -gt 0 ]; then
		for i in "${!version_argv[@]}"; do
			version_argv[i]=${version_argv[i]//"{task_dir}"/"$dir"}
		done
		version_argv[0]=$(PATH=$run_path command -v -- "${version_argv[0]}") || version_argv[0]=$agent_path
		agent_version=$({ timeout 10 "${version_argv[@]}" </dev/null 2>&1 || true; } | head -n1 | json_safe)
	fi
	tmux_version=$("$tmux_bin" -V | json_safe)

	# --- the script tmux runs: our variables as bash declarations, then the body ---------
	{
		printf '#!%s\n' "$bash_bin"
		printf 'TASK_DIR=%q\nWORKDIR=%q\nDELIVERY=%q\nRUN_PATH=%q\nTASK_KEY=%q\n' \
			"$dir" "$workdir" "$delivery" "$run_path" "$task_key"
		declare -p argv | sed 's/^declare -a argv=/AGENT_ARGV=/'
		cat "$dir/run-body.sh"
	} >"$dir/run.sh"
	rm -f -- "$dir/run-body.sh"

	local started
	started=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
	{
		printf '%s' "$launch_prefix"
		printf ',"agent_path":"%s","agent_version":"%s","tmux_version":"%s","remote_user":"%s","remote_uid":%s,"task_dir":"%s","started_at":"%s"}\n' \
			"$(printf '%s' "$agent_path" | json_safe)" "$agent_version" "$tmux_version" \
			"$(id -un | json_safe)" "$(id -u)" "$(printf '%s' "$dir" | json_safe)" "$started"
	} >"$dir/launch.json"

	# --- tmux: own socket, no user config, generated name, argv form (no default-shell) ---
	local pane_pid
	if ! pane_pid=$("$tmux_bin" -L delegate -f /dev/null new-session -d -s "$session" -c "$workdir" \
		-x 200 -y 50 -P -F '#{pane_pid}' "$bash_bin" "$dir/run.sh" </dev/null 2>"$dir/tmux.err"); then
		if grep -q 'duplicate session' "$dir/tmux.err"; then
			die 29 "tmux session $session already exists: not starting a second agent"
		fi
		die 27 "tmux could not start session $session: $(head -c 500 "$dir/tmux.err")"
	fi

	# "Launched" means the runner really started inside tmux: wait for its first state line.
	local tries=0
	until grep -q '^started ' "$dir/state" 2>/dev/null; do
		tries=$((tries + 1))
		[ "$tries" -le 300 ] || die 28 "tmux session $session started (pane pid $pane_pid) but its runner did not report within 3 s"
		sleep 0.01
	done

	printf 'DELEGATE-EVIDENCE %s\n' "$(base64 -w0 <"$dir/launch.json")"
	printf 'DELEGATE-LAUNCHED %s %s %s\n' "$nonce" "$session" "$pane_pid"
}
main "$@"
