# delegate launch script. Sent on the stdin of bash (REMOTE_COMMAND in runner.rs) over SSH; never passed as argv.
#
# Rust prepends three lines, `DLG_VARS='<escaped>'`, `DLG_FILES='<base64>'` (helper files
# sent for the store below, usually empty) and `DLG_PROMPT='<escaped>'`, then agent-env.sh
# (function definitions shared with doctor.sh: where the agent is found and what it runs
# with), and nothing else: every variable part (prompt, argv, paths, names) travels as inert
# text (remote/escape.rs: printable ASCII but the quote, backslash and `|`, every other
# byte as `\xHH`, decoded by bash's own `printf %b`), so no byte of it is ever parsed by a
# shell. DLG_VARS holds its fields (in the
# order render() in runner.rs writes them) each followed by a raw `|`; list fields (and
# DLG_FILES) hold their items each followed by \x1f. The body is one function called on the
# last line with a sentinel argument: a script cut off in transit either never defines
# main, or calls it with a strict prefix of the sentinel (`main`, `main deleg`), which it
# refuses.
#
# Process starts cost milliseconds each on small VMs, so this script starts as few as it
# can (mkdir, chmod, tmux; base64 and sha256sum only when helper files are sent or first
# read) and otherwise sticks to bash builtins. Run by a resident shell
# (transport/ssh/resident.sh), it also keeps what it verified for the launches that follow
# in that shell (see keep below): the helpers' contents, the checked remote_root and the
# captured login environment.
#
# Output contract (read by crates/delegate-core/src/remote/mod.rs):
#   stdout  DELEGATE-EVIDENCE <launch.json, one line>
#           DELEGATE-LAUNCHED <nonce> <session> <pane_pid>      (last line, only on success)
#   stderr  DELEGATE-ERROR <code> <message>                      (on a refused launch)
# Exit codes (also in src/exit.rs):
#   20 tmux missing   21 agent missing   22 prompt or a task file not written (disk full)
#   23 base tools missing (base64, sha256sum)   24 workdir missing   25 task dir not writable,
#   or the remote_root (tasks/, cache/) is not this user's alone (another owner, a symlink,
#   writable by group or others)
#   26 sandbox cannot be honoured   27 tmux refused the session (27 with no DELEGATE-ERROR
#   line: the tmux control client took new-session and never answered; launch_unknown)
#   28 runner never reported
#   29 the task directory or session already belongs to a launch
#   34 helper files are missing from this host's store (or no longer match their hash):
#      stdout has `DELEGATE-NEED <sha256> ...`; nothing was created, and the lead sends the
#      same launch once more with those files in DLG_FILES
#   33 the task was cancelled while it was launching: its cancel mark (cancel.sh) was found
#      before anything was created, or the runner found it and started no agent

main() {
	if [ "${1-}" != delegate-launch-complete ]; then
		printf 'DELEGATE-ERROR 23 the launch script arrived incomplete: nothing was started\n' >&2
		exit 23
	fi
	set -euo pipefail
	umask 077

	# Until tmux is asked for the session nothing can be running, so an unexpected stop
	# (a bash error on an unusual brother) is a certain failure, said at once: code 30, with
	# bash's own message on stderr. After that point the lead must not guess (launch_unknown).
	DLG_STAGE=preflight DLG_DIED=''
	trap 'launch_exit $?' EXIT
	launch_exit() {
		if [ "$1" != 0 ] && [ -z "$DLG_DIED" ] && [ "$DLG_STAGE" = preflight ]; then
			printf 'DELEGATE-ERROR 30 the launch script stopped unexpectedly (status %s) before starting the agent; nothing runs\n' "$1" >&2
		fi
	}
	die() {
		local code=$1
		shift
		DLG_DIED=1
		printf 'DELEGATE-ERROR %s %s\n' "$code" "$*" >&2
		exit "$code"
	}
	# Values interpolated into launch.json lose control characters, quotes and backslashes.
	# Sets the variable named $1 (a `$(...)` would cost a fork per value).
	json_safe() {
		local -n into_=$1
		# shellcheck disable=SC2034 # a nameref: setting it sets the caller's variable
		into_=${2//[[:cntrl:]\"\\]/}
	}
	# Shapes checked with globs, not =~: bash compiles a regular expression at each use
	# (0.05 to 0.25 ms each, a dozen per launch).
	is_sha256() { [[ ${#1} == 64 && $1 != *[!0-9a-f]* ]]; }
	is_count() { [[ -n $1 && ${#1} -le 18 && $1 != *[!0-9]* ]]; }
	# Empty, or four counts and maybe a thread id ([0-9A-Za-z-], at most 64), one space apart.
	spend_limit_shaped() {
		[ -n "$1" ] || return 0
		local IFS=' ' w
		local -a words
		read -r -a words <<<"$1"
		[ "${words[*]}" = "$1" ] && { [ "${#words[@]}" = 4 ] || [ "${#words[@]}" = 5 ]; } || return 1
		for w in "${words[@]:0:4}"; do is_count "$w" || return 1; done
		w=${words[4]-x}
		[[ ${#w} -le 64 && $w != *[!0-9A-Za-z-]* ]]
	}
	# A remote_root (or its tasks/ or cache/) that is not this user's alone (dir_problem, set
	# by own_dir or private_dirs in agent-env.sh).
	refuse_root_dir() {
		local fix="choose a remote_root in this user's home (e.g. ~/.delegate) for this host"
		case $dir_code in
		symlink) fix="replace the link with a directory of this user's own, or $fix" ;;
		owner) fix="$fix, or chown it to this user" ;;
		mode) fix="chmod go-w it (delegate creates it 0700), or $fix" ;;
		esac
		die 25 "remote_root refused: $dir_problem; another local user could read prompts and change task files there. Fix: $fix"
	}
	# DLG_VARS into v: split at each raw `|` (word splitting, no globbing; every field ends
	# with one, so none is lost), each field's `\xHH` decoded by printf.
	decode_vars() {
		local IFS='|' i
		local -a raw
		set -f
		# shellcheck disable=SC2206 # split on purpose: the fields hold no raw `|`
		raw=($DLG_VARS)
		set +f
		v=()
		# (printf only where there is something to decode: most fields are plain.)
		for i in "${!raw[@]}"; do
			if [[ ${raw[i]} == *\\* ]]; then printf -v 'v[i]' '%b' "${raw[i]}"; else v[i]=${raw[i]}; fi
		done
	}
	# new-session through the resident shell's tmux control client (tmux-control.sh), when
	# it has one: 0 with `answer` set (the session was made), 1 with `why` set (tmux
	# refused), 2 when the client cannot be used or the session was not made (the launch
	# starts a plain client), or 3 when the command went and no answer came.
	tmux_control() {
		local arg status=0
		# tmux parses the line: every argument goes inside single quotes, so one holding a
		# quote or a control character takes the plain way.
		for arg in "$session" "$workdir" "$BASH" "$dir/run.sh"; do
			[[ $arg != *[\'[:cntrl:]]* ]] || return 2
		done
		control_command "new-session -d -s '$session' -c '$workdir' -x 200 -y 50 -P -F '#{pane_pid} #{version}' '$BASH' '$dir/run.sh'" ||
			status=$?
		case $status in
		0)
			answer=${control_lines[0]-}
			[[ ${#control_lines[@]} == 1 && $answer =~ ^[0-9]+\ [0-9A-Za-z.-]+$ ]] && return 0
			control_gone # (an answer of another shape: the session was made all the same)
			return 3
			;;
		1) why=${control_lines[*]} ;;
		4)
			# The client ended before it answered (the session it was attached to ended, or
			# the server): the server, asked with a plain client, says whether it made the
			# session before it let the client go. It has handled all the client sent by
			# then, so no second session can follow; none there, none will be.
			if answer=$(plain_tmux list-panes -t "=$session:" -F '#{pane_pid} #{version}' 2>/dev/null) &&
				[[ $answer =~ ^[0-9]+\ [0-9A-Za-z.-]+$ ]]; then
				return 0
			fi
			return 2
			;;
		esac
		return "$status"
	}
	# Runs (execs) a plain tmux client on delegate's socket, without the control client's
	# descriptors (a server it starts would keep them), fd 3 or stdin. In a subshell.
	plain_tmux() {
		# shellcheck disable=SC2154 # the resident shell's
		[ -z "${__dlg_ctl_in-}" ] || exec {__dlg_ctl_in}>&- {__dlg_ctl_out}<&-
		exec tmux -L delegate "$@" </dev/null 3>&-
	}
	# The remote_root, its tasks/ and helpers/ (and cache/ when there is one) as a launch of
	# this resident shell found them: checked whole then, the modes with stat. Only their
	# owner (this user) or root can change a mode since; links and owners, which another
	# user could change by replacing a directory, are looked at again (builtins).
	root_kept() {
		[ "${__dlg_resident-}" = 1 ] && [ -n "${__dlg_kept_root[$base]+x}" ] || return 1
		own_dir "$base" && own_dir "$base/tasks" && own_dir "$store" || return 1
		if [ -e "$base/cache" ] || [ -L "$base/cache" ]; then own_dir "$base/cache" || return 1; fi
	}
	# The remote_root, its tasks/, helpers/ and cache/ checked (and made when missing): see
	# the task directory section below.
	check_root() {
		if ! [ -e "$base" ] && ! [ -L "$base" ] && ! mkdir -p -- "$base" 2>/dev/null; then
			die 25 "cannot create remote_root $base on this host: check the host's remote_root and the permissions of its parent"
		fi
		own_dir "$base" || refuse_root_dir
		# Nothing is created in a root that is refused (one more stat, on a root's first launch);
		# a root of this user's made beforehand (0755) is closed to 0700, as a new one is.
		if ! [ -e "$base/tasks" ] && ! [ -L "$base/tasks" ]; then
			private_dirs "$base" || refuse_root_dir
			# A concurrent first launch may make it first: checked below like any other.
			mkdir -- "$base/tasks" 2>/dev/null || [ -d "$base/tasks" ] ||
				die 25 "cannot create $base/tasks on this host: check the host's remote_root and its permissions"
			chmod 700 -- "$base" 2>/dev/null || true
		fi
		if ! [ -e "$store" ] && ! [ -L "$store" ]; then
			mkdir -- "$store" 2>/dev/null || [ -d "$store" ] ||
				die 25 "cannot create $store on this host: check the host's remote_root and its permissions"
		fi
		private_dirs "$base" "$base/tasks" "$base/cache" "$store" || refuse_root_dir
	}
	# A \x1f-terminated list into the array named $1 (the herestring's newline becomes a
	# last, dropped item).
	split_list() {
		local -n into=$1
		# shellcheck disable=SC2034 # a nameref: filling it fills the caller's array
		mapfile -d $'\x1f' -t into <<<"$2"
		unset 'into[-1]'
	}
	# The workdir's git state into git_json (launch.json's "git"): HEAD, branch, clean or
	# not, and the base the task's diff is taken from (git-tree.sh). Never a reason to
	# refuse a launch: a workdir without git says so instead.
	git_state() {
		local top head='' branch='' tree head_tree base j_branch j_top clean=false
		if ! command -v git >/dev/null 2>&1; then
			git_json='{"state":"git missing"}'
			return 0
		fi
		if ! git_may_find_a_repo "$workdir"; then
			git_json='{"state":"not a git work tree"}'
			return 0
		fi
		if ! top=$(git -C "$workdir" rev-parse --show-toplevel 2>/dev/null) ||
			[ "$(git -C "$workdir" rev-parse --is-inside-work-tree 2>/dev/null)" != true ]; then
			git_json='{"state":"not a git work tree"}'
			return 0
		fi
		head=$(git -C "$workdir" rev-parse -q --verify 'HEAD^{commit}' 2>/dev/null) || head=''
		branch=$(git -C "$workdir" symbolic-ref -q --short HEAD 2>/dev/null) || branch=''
		if ! tree=$(git_tree "$workdir" "$dir/git.index") || [ -z "$tree" ]; then
			rm -f -- "$dir/git.index"
			git_json='{"state":"error","why":"git could not record the workdir (git add -A failed or took over 60 s)"}'
			return 0
		fi
		rm -f -- "$dir/git.index"
		if [ -n "$head" ]; then
			head_tree=$(git -C "$workdir" rev-parse -q --verify 'HEAD^{tree}' 2>/dev/null) || head_tree=''
		else
			head_tree=$(git -C "$workdir" hash-object -t tree /dev/null 2>/dev/null) || head_tree=''
		fi
		[ "$tree" != "$head_tree" ] || clean=true
		if ! base=$(cd -- "$workdir" && git_base_commit "$tree" "$head" "$task_key") || [ -z "$base" ] ||
			! git -C "$workdir" update-ref "refs/delegate/$task_key/base" "$base" 2>/dev/null; then
			git_json='{"state":"error","why":"git could not store the base snapshot (read-only repository?)"}'
			return 0
		fi
		json_safe j_branch "$branch"
		json_safe j_top "$top"
		git_json="{\"state\":\"repo\",\"head\":\"$head\",\"branch\":\"$j_branch\",\"clean\":$clean,\"base\":\"$base\",\"tree\":\"$tree\",\"top\":\"$j_top\"}"
	}
	# False only when git could find no repository for $1: no GIT_DIR or GIT_WORK_TREE, and no
	# `.git` (directory or file) in it or in any directory above it. Known with builtins,
	# where asking git costs a process on every launch from a plain directory.
	git_may_find_a_repo() {
		local d=$1
		[[ -z ${GIT_DIR-} && -z ${GIT_WORK_TREE-} && $d == /* ]] || return 0
		while [ -n "$d" ]; do
			[ -e "$d/.git" ] && return 0
			d=${d%/*}
		done
		[ -e /.git ]
	}
	# DLG_FILES (hash, content, hash, content, ... each followed by \x1f) into the store: each
	# content to a temporary name, all of them checked with one sha256sum, then renamed to
	# their hash, so a concurrent launch reads a helper whole or not at all. Decoded into a
	# file and split from there: mapfile reads a file in blocks but a pipe byte by byte.
	store_helpers() {
		local -a sent=() tmp=()
		local k sums incoming=$store/.incoming.$$
		base64 -d <<<"$DLG_FILES" >"$incoming" 2>/dev/null || {
			rm -f -- "$incoming"
			die 22 "could not write helper files to $store (disk full?)"
		}
		mapfile -d $'\x1f' -t sent <"$incoming"
		rm -f -- "$incoming"
		[ $((${#sent[@]} % 2)) = 0 ] || die 23 "the helper files did not decode (got ${#sent[@]} items): is base64 GNU coreutils?"
		for ((k = 0; k + 1 < ${#sent[@]}; k += 2)); do
			is_sha256 "${sent[k]}" || die 23 "the helper files are damaged (a name is not a SHA-256)"
			tmp+=(".new.$$.$k")
			printf '%s' "${sent[k + 1]}" >"$store/.new.$$.$k" || {
				rm -f -- "${tmp[@]/#/$store/}"
				die 22 "could not write helper files to $store (disk full?)"
			}
		done
		[ "${#tmp[@]}" -gt 0 ] || return 0
		sums=$(cd -- "$store" && sha256sum -- "${tmp[@]}" 2>/dev/null) || sums=''
		for ((k = 0; k + 1 < ${#sent[@]}; k += 2)); do
			if [[ $'\n'$sums$'\n' != *$'\n'"${sent[k]}  .new.$$.$k"$'\n'* ]]; then
				rm -f -- "${tmp[@]/#/$store/}"
				die 22 "helper file ${sent[k]} arrived damaged (its content does not have that SHA-256): transfer error or disk full"
			fi
		done
		for ((k = 0; k + 1 < ${#sent[@]}; k += 2)); do
			mv -f -- "$store/.new.$$.$k" "$store/${sent[k]}" || die 22 "could not write helper files to $store (disk full?)"
		done
	}
	# The wanted helpers (name, hash pairs) into `files` as name, content pairs. A helper is
	# used only if it is a plain file of this user's in the store and its content, read
	# first, still has its hash when checked after (one sha256sum for all): the agent runs
	# as this user and may have changed it. Others cannot reach it at all (the store is
	# checked like tasks/: this user's, no group or other write, not a link). Any helper
	# failing that is asked for again, before anything is created.
	# A resident shell keeps each helper it checked in memory (keep): later launches there
	# read neither the file nor sha256sum, and the agent cannot reach that copy.
	load_helpers() {
		local k hash f content sums record
		local -a names=() need=() read_now=()
		for ((k = 0; k + 1 < ${#wanted[@]}; k += 2)); do
			hash=${wanted[k + 1]} f=$store/${wanted[k + 1]}
			is_sha256 "$hash" || die 23 "the launch variables are damaged (a helper hash)"
			if [ "${__dlg_resident-}" = 1 ] && [ -n "${__dlg_kept_helper[$hash]+x}" ]; then
				files+=("${wanted[k]}" "${__dlg_kept_helper[$hash]}")
				continue
			fi
			content=''
			if [ -f "$f" ] && ! [ -L "$f" ] && [ -O "$f" ] && [ -r "$f" ]; then
				IFS= read -r -d '' content <"$f" || true # (status 1 at the end of the file)
				files+=("${wanted[k]}" "$content")
				names+=("$hash")
				read_now+=("${#files[@]}")
			else
				need+=("$hash")
			fi
		done
		if [ "${#names[@]}" -gt 0 ]; then
			sums=$(cd -- "$store" && sha256sum -- "${names[@]}" 2>/dev/null) || sums=''
			for hash in "${names[@]}"; do
				[[ $'\n'$sums$'\n' == *$'\n'"$hash  $hash"$'\n'* ]] || need+=("$hash")
			done
		fi
		if [ "${#need[@]}" -gt 0 ]; then
			printf 'DELEGATE-NEED %s\n' "${need[*]}"
			die 34 "helper files missing from $store or changed since they were stored (${#need[@]} of $((${#wanted[@]} / 2))): nothing was started; delegate sends them once more"
		fi
		for k in "${!names[@]}"; do
			printf -v record '__dlg_kept_helper[%s]=%q' "${names[k]}" "${files[read_now[k] - 1]}"
			keep "$record"
		done
	}
	local tool
	# tee and grep: the runner tees the stream and counts turns with them.
	# flock: cancel.sh, the inbox helper and the Claude hook take locks with it.
	# (All looked up on PATH by one `type -P`, false if any is missing (`command -v` with
	# several names is true if one is found); then one at a time, to say which.)
	local -a tools=(base64 sha256sum mkdir mv chmod stat timeout tee grep flock)
	if ! type -P "${tools[@]}" >/dev/null 2>&1; then
		for tool in "${tools[@]}"; do
			type -P "$tool" >/dev/null 2>&1 ||
				die 23 "'$tool' not found on PATH ($PATH) on this host: delegate needs bash, coreutils and tmux"
		done
	fi

	local -a v
	decode_vars
	[ "${#v[@]}" -eq 29 ] || die 23 "the launch variables did not decode (got ${#v[@]} fields)"
	local task_key=${v[0]} session=${v[1]} nonce=${v[2]} root=${v[3]} workdir=${v[4]} kind=${v[5]}
	# (v[8], the prompt's SHA-256, is recorded by the lead: launch.json's prefix holds it.)
	local delivery=${v[6]} sandbox=${v[7]} launch_prefix=${v[9]} refuse_root=${v[10]}
	local -a argv requires version_argv files env_files sandbox_probe
	split_list argv "${v[11]}"
	split_list requires "${v[12]}"
	split_list version_argv "${v[13]}"
	local files_name_task_dir=${v[14]}
	local i task_id=${v[15]} timeout_secs=${v[16]} turn_limit=${v[17]} turn_marker=${v[18]} grace_secs=${v[19]}
	local preamble=${v[20]} env_mode=${v[21]} requires_hint=${v[24]} credential_env=${v[25]}
	local spend_limit=${v[26]} worktree_of=${v[27]}
	local -a wanted
	split_list wanted "${v[28]}"
	split_list env_files "${v[22]}"
	split_list sandbox_probe "${v[23]}"
	for i in "$task_id" "$timeout_secs" "$turn_limit" "$grace_secs"; do
		is_count "$i" || die 23 "the launch variables are damaged (a number field holds '$i')"
	done
	# Four numbers (and a resumed thread's id) or nothing: it becomes an array declaration
	# in run.sh.
	spend_limit_shaped "$spend_limit" ||
		die 23 "the launch variables are damaged (the spend limit holds '${spend_limit:0:100}')"
	home_path root
	home_path workdir
	[ -z "$worktree_of" ] || home_path worktree_of
	for i in "${!argv[@]}"; do home_path "argv[$i]"; done
	for i in "${!version_argv[@]}"; do home_path "version_argv[$i]"; done

	# --- preflight: each failure has its own code and says what to do -------------------
	command -v tmux >/dev/null 2>&1 ||
		die 20 "tmux not found on PATH ($PATH): install tmux on this host (apt-get install tmux)"
	# --worktree: the task's own worktree of worktree_of's repository, on a new branch
	# delegate/<task key> from its HEAD, made at the first launch; a reopen finds it there
	# and continues in it. The user's checkout (its files, index and branch) is untouched.
	if [ -n "$worktree_of" ] && [ ! -e "$workdir" ]; then
		[ -d "$worktree_of" ] ||
			die 24 "working directory $worktree_of does not exist on this host: create it or pass --workdir"
		git -C "$worktree_of" rev-parse -q --verify 'HEAD^{commit}' >/dev/null 2>&1 ||
			die 24 "--worktree needs $worktree_of to be a git repository with a commit: run git init and commit there, or launch without --worktree"
		mkdir -p -- "${workdir%/*}"
		local wt_err
		wt_err=$(git -C "$worktree_of" worktree add -q -b "delegate/$task_key" -- "$workdir" HEAD 2>&1) ||
			die 24 "git could not make the task's worktree $workdir from $worktree_of: ${wt_err//[[:cntrl:]]/ }"
	fi
	[ -d "$workdir" ] ||
		die 24 "working directory $workdir does not exist on this host: create it or pass --workdir"

	# The remote_root without trailing slashes, and the helper store in it.
	local base=$root dir_problem='' dir_code=''
	[ "$base" = / ] || base=${base%"${base##*[!/]}"}
	local store=$base/helpers

	# --- the agent's environment --------------------------------------------------------
	# A resident shell keeps a captured environment for a while (agent-env.sh: shell_env),
	# with its stamp in a remote_root an earlier launch there checked.
	local env_keep='' record
	if root_kept; then env_keep=$base; fi
	# How the agent is found and the environment it runs in: agent-env.sh (shared with
	# doctor.sh). The entries go to run.sh through agent.env (0600, emptied once read),
	# never through argv.
	local -a agent_env=()
	# shellcheck disable=SC2034 # plain_path and agent_cmd are read by agent-env.sh's functions
	local env_used=plain shell_flags=-l plain_path=$PATH agent_path='' agent_cmd=${argv[0]}
	local located=0
	locate_agent "$env_mode" || located=$?
	if [ "$located" = 2 ]; then
		die 31 "the $env_mode shell (${SHELL:-/bin/bash} $shell_flags) did not give its environment within 10 s: fix its start-up files on this host, or set environment = \"plain\" for this host or brother"
	fi
	if [ "$located" != 0 ]; then
		if [[ $agent_cmd == */* ]]; then
			die 21 "agent command $agent_cmd is not an executable file on this host: fix agent_path in the inventory"
		fi
		local alias_line=''
		if [ "$env_mode" != plain ]; then agent_alias; fi
		if [ -n "$alias_line" ]; then
			die 21 "agent command '$agent_cmd' is only an alias in your interactive shell ($alias_line): delegate runs programs, not aliases; set agent_path to the program's absolute path for this brother in the inventory"
		fi
		die 21 "agent command '$agent_cmd' not found on this host: looked on PATH of the ${env_used} environment and sshd's ($PATH) and in an interactive shell. Install it for this user (e.g. npm install -g @anthropic-ai/claude-code or @openai/codex), or set agent_path to its absolute path for this brother in the inventory"
	fi
	# shellcheck disable=SC2034 # read by in_agent_env (agent-env.sh)
	local run_path=$PATH

	# Variables from env files on the brother (`env_file` for a host or brother); their
	# values are never printed.
	local env_names='' env_error=''
	read_env_files "${env_files[@]}" || die 31 "$env_error"
	# The profile's credential_env: the variable must be set for the agent (its value is
	# never printed). Checked before anything starts, so a run never goes out without it.
	if [ -n "$credential_env" ]; then
		[[ $credential_env =~ ^[A-Z_][A-Z0-9_]*$ ]] || die 23 "the launch variables are damaged (credential_env)"
		local env_value=''
		agent_env_value "$credential_env"
		[ -n "$env_value" ] ||
			die 31 "credential_env $credential_env is not set in the agent's environment on this host: export it in ~/.profile here, or put $credential_env=... in an env_file or the profile's credential_file"
	fi

	local -a missing=()
	for tool in "${requires[@]}"; do
		command -v -- "$tool" >/dev/null 2>&1 || missing+=("$tool")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		die 26 "sandbox '$sandbox' for agent '$kind' needs ${missing[*]} on this host and it is missing: ${requires_hint:-install it}, or choose another --sandbox (delegate refuses rather than run with less isolation)"
	fi
	if [ "$refuse_root" = 1 ] && [ "$EUID" = 0 ]; then
		die 26 "agent '$kind' refuses sandbox '$sandbox' as root: log in as an unprivileged user on this host, or choose --sandbox write"
	fi
	if [ "${#sandbox_probe[@]}" -gt 0 ]; then
		local probe_out
		if sandbox_probe_fails "${sandbox_probe[@]}"; then
			die 26 "sandbox '$sandbox' for agent '$kind' cannot start on this host: '${sandbox_probe[*]}' failed (${probe_out:0:300}). Unprivileged user namespaces are probably off (containers, hardened kernels): enable them (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces), or choose another --sandbox"
		fi
	fi

	# --- task directory --------------------------------------------------------------------
	# The root, tasks/ and cache/ must be this user's alone (agent-env.sh: private_dirs): a
	# root another user made first (any root under /tmp) is refused, never used. A missing
	# root is created here, 0700 (umask 077), parents included.
	if [ -n "$env_keep" ]; then
		: # checked by an earlier launch of this resident shell (root_kept, above)
	else
		check_root
		printf -v record '__dlg_kept_root[%q]=1' "$base"
		keep "$record"
	fi

	# --- helper files, kept in <root>/helpers by their SHA-256 ---------------------------
	# The runner's body, the agent's helpers (report, inbox), the Claude hook and the agent
	# plan's files are the same for every task of one version of delegate: the lead names
	# them by hash and sends them only when this host asks (exit 34 above).
	[ -z "$DLG_FILES" ] || store_helpers
	local -a files=()
	load_helpers
	local dir=$root/tasks/$task_key
	# A cancel that reached this host before the launch (or before it was sent again) left
	# its mark: nothing is created, nothing starts. (Checked again by the runner under the
	# start lock, for a cancel landing from here on.)
	if [ -e "$dir.cancelled" ]; then
		die 33 "task cancelled while it was launching: its cancel reached this host first, so nothing was started"
	fi
	# Files carrying `{task_dir}` are JSON holding shell commands (the Claude hooks), and the
	# preamble shows the agent helper commands in single quotes: a path with a quote,
	# backslash or control character would need two kinds of escaping there, so such roots
	# are refused instead.
	if { [ "$files_name_task_dir" = 1 ] || [ -n "$preamble" ]; } && [[ $dir == *[[:cntrl:]\'\"\\]* ]]; then
		die 25 "task directory $dir contains a quote, backslash or control character, which the agent's per-task settings cannot carry: choose a remote_root without them"
	fi
	if ! mkdir -m 700 -- "$dir" 2>/dev/null; then
		[ -d "$dir" ] || die 25 "cannot create task directory $dir on this host: check the host's remote_root and its permissions"
		# A retry of the same launch (same nonce) finds its own directory; anything else is
		# another launch's, and is never reused.
		local previous=
		[ -f "$dir/launch.json" ] && read -r previous <"$dir/launch.json"
		if [[ $previous == *"\"nonce\":\"$nonce\""* ]] && tmux -L delegate has-session -t "=$session" 2>/dev/null; then
			printf 'DELEGATE-EVIDENCE %s\n' "$previous"
			printf 'DELEGATE-LAUNCHED %s %s %s\n' "$nonce" "$session" "-"
			exit 0
		fi
		die 29 "task directory $dir already holds a launch: not starting a second agent"
	fi
	# --- prompt: delegate's preamble, then the prompt exactly as sent ---------------------
	# The agent reads delegate's preamble (which names the helpers by this task directory's
	# absolute path: Claude Code refuses a command that starts with a variable) and then the
	# prompt, decoded by printf (`%b`: a NUL or any other byte comes out as sent). printf
	# fails on a short write (disk full, quota), and nothing reads `prompt` before the runner
	# starts; the transfer itself is SSH's (its MAC) and the script's sentinel. On failure
	# the partial file goes.
	[ -z "$preamble" ] || preamble=${preamble//"{task_dir}"/"$dir"}
	if ! printf '%s%b' "$preamble" "$DLG_PROMPT" >"$dir/prompt" 2>/dev/null; then
		rm -f -- "$dir/prompt"
		die 22 "could not write the prompt to $dir (disk full?)"
	fi
	if [ "${#agent_env[@]}" -gt 0 ]; then
		printf '%s\0' "${agent_env[@]}" >"$dir/agent.env" || die 22 "could not write $dir/agent.env (disk full?)"
	fi

	# Files for the task directory (the helpers, agent settings, the self-test agent), as
	# name/content pairs read from the store; `run-body.sh` is the body of run.sh and is
	# kept in memory. `{task_dir}` in a file's content becomes the task directory (the
	# per-task Claude settings name the hook by its absolute path); the path was checked
	# for quotes above.
	local run_body='' content
	for ((i = 0; i + 1 < ${#files[@]}; i += 2)); do
		content=${files[i + 1]}
		if [ "${files[i]}" = run-body.sh ]; then
			run_body=$content
		else
			# (Only when the lead saw one to replace: a 17 KB helper costs bash ~0.2 ms to scan.)
			[ "$files_name_task_dir" != 1 ] || content=${content//"{task_dir}"/"$dir"}
			printf '%s' "$content" >"$dir/${files[i]}" || die 22 "could not write $dir/${files[i]} (disk full?)"
		fi
	done
	[ -n "$run_body" ] || die 23 "the launch variables are damaged (no runner body among the helper files)"
	# The helpers the agent and its hooks call by path, made executable while tmux starts
	# the runner (a process less on the way; waited for before the launch is reported).
	local chmod_pid
	chmod 700 -- "$dir/report" "$dir/inbox" "$dir/hook" >/dev/null 2>&1 3>&- &
	chmod_pid=$!

	# Placeholders the lead cannot fill because they are remote paths.
	for i in "${!argv[@]}"; do
		argv[i]=${argv[i]//"{task_dir}"/"$dir"}
		argv[i]=${argv[i]//"{prompt_file}"/"$dir/prompt"}
		argv[i]=${argv[i]//"{workdir}"/"$workdir"}
	done
	argv[0]=$agent_path

	local agent_version=unknown
	if [ "${#version_argv[@]}" -gt 0 ]; then
		for i in "${!version_argv[@]}"; do
			version_argv[i]=${version_argv[i]//"{task_dir}"/"$dir"}
		done
		if [ "${version_argv[0]}" = "$agent_cmd" ]; then version_argv[0]=$agent_path; fi
		# `claude --version` starts node: hundreds of ms on every launch. The answer is kept per
		# binary (path, size, mtime, inode) and asked again only when the binary changes.
		local stamp name cache=
		if stamp=$(stat -L -c '%s-%Y-%i' -- "$agent_path" 2>/dev/null); then
			name="version-$agent_path-$stamp-${version_argv[*]:1}"
			name=${name//[^A-Za-z0-9._-]/_}
			# A file name holds at most 255 bytes; a longer one is simply not cached.
			[ "${#name}" -le 240 ] && cache="$root/cache/$name"
		fi
		if [ -n "$cache" ] && [ -f "$cache" ] && read -r agent_version <"$cache" && [ -n "$agent_version" ]; then
			:
		else
			# 126/127 mean it cannot run at all (a script whose interpreter is missing):
			# refused now, with its own words, rather than "launched" and dead.
			local probe_status=0
			probe_version "${version_argv[@]}"
			if [ "$probe_status" = 126 ] || [ "$probe_status" = 127 ]; then
				rm -rf -- "$dir"
				die 21 "agent $agent_path cannot run on this host (exit $probe_status from '${version_argv[*]}': ${agent_version:0:300}): if it is a node script, node must be on the PATH of the ${env_used} environment; install the agent for this user or set agent_path"
			fi
			[ "$probe_status" = 0 ] || agent_version=''
			if [ -n "$cache" ] && [ -n "$agent_version" ] && { [ -d "$root/cache" ] || mkdir -- "$root/cache" 2>/dev/null; }; then
				if ! { printf '%s\n' "$agent_version" >"$cache.$$" && mv -f -- "$cache.$$" "$cache"; } 2>/dev/null; then
					rm -f -- "$cache.$$"
				fi
			fi
		fi
	fi
	[ -n "$agent_version" ] || agent_version=unknown

	# --- the script tmux runs: our variables as bash declarations, then the body ---------
	{
		printf '#!%s\n' "$BASH"
		printf 'TASK_DIR=%q\nWORKDIR=%q\nDELIVERY=%q\nRUN_PATH=%q\nTASK_KEY=%q\nTASK_ID=%q\n' \
			"$dir" "$workdir" "$delivery" "$run_path" "$task_key" "$task_id"
		printf 'TIMEOUT_SECS=%q\nTURN_LIMIT=%q\nTURN_MARKER=%q\nGRACE_SECS=%q\nSPEND_LIMIT=(%s)\n' \
			"$timeout_secs" "$turn_limit" "$turn_marker" "$grace_secs" "$spend_limit"
		printf 'AGENT_ARGV=('
		printf '%q ' "${argv[@]}"
		printf ')\n%s' "$run_body"
	} >"$dir/run.sh" || die 22 "could not write $dir/run.sh (disk full?)"

	# --- the workdir's git state, before the agent can change it -------------------------
	local git_json
	git_state
	local started
	# One reading of the clock (bash 5); its decimal separator follows the locale.
	local t=$EPOCHREALTIME
	TZ=UTC0 printf -v started '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"

	# --- tmux: own socket, no user config, generated name, argv form (no default-shell) ---
	# The server exits with its last session: a launch that reaches it just then is told
	# "server exited unexpectedly" (or "lost server"), and nothing was created. Try again,
	# a few times; any other refusal is final. The session's answer carries the pane's pid
	# and the server's version (the one that runs the task, and no `tmux -V` process).
	local pane_pid why="" attempt started_tmux=0 answer tmux_version control=0
	DLG_STAGE=tmux # from here a stop may leave a session behind: the lead reconciles
	tmux_control || control=$?
	case $control in
	0) started_tmux=1 ;;
	1) ;; # refused: `why` is judged below, as a plain client's refusal
	3)
		# The command went to the control client and no answer came: the session may yet
		# appear. Never a second one: the lead reconciles (launch_unknown).
		printf 'the tmux control client did not answer for session %s within 10 s\n' "$session" >&2
		exit 27
		;;
	esac
	for attempt in 1 2 3 4; do
		[ "$control" = 2 ] || break # (made or refused through the control client)
		if answer=$(plain_tmux -f /dev/null new-session -d -s "$session" -c "$workdir" \
			-x 200 -y 50 -P -F '#{pane_pid} #{version}' "$BASH" "$dir/run.sh" 2>"$dir/tmux.err"); then
			started_tmux=1
			control_wanted "${answer#* }" "$session"
			break
		fi
		why=''
		read -r why <"$dir/tmux.err" || true
		[[ $why == *"server exited unexpectedly"* || $why == *"lost server"* ]] || break
		[ "$attempt" -lt 4 ] && sleep 0.05
	done
	if [ "$started_tmux" = 0 ]; then
		[[ $why == *"duplicate session"* ]] &&
			die 29 "tmux session $session already exists: not starting a second agent"
		die 27 "tmux could not start session $session: $why"
	fi
	pane_pid=${answer%% *} tmux_version="tmux ${answer#* }"

	# launch.json, written while the runner starts: everything but the runner's word.
	local evidence
	local j_path j_version j_tmux j_user j_dir
	json_safe j_path "$agent_path"
	json_safe j_version "$agent_version"
	json_safe j_tmux "$tmux_version"
	json_safe j_user "${USER:-${LOGNAME:-}}"
	json_safe j_dir "$dir"
	local j_env_names
	json_safe j_env_names "$env_names"
	printf -v evidence '%s,"agent_path":"%s","agent_version":"%s","tmux_version":"%s","remote_user":"%s","remote_uid":%s,"task_dir":"%s","environment":"%s","env_file_vars":"%s","git":%s,"started_at":"%s"}' \
		"$launch_prefix" "$j_path" "$j_version" "$j_tmux" "$j_user" "$EUID" "$j_dir" "$env_used" "$j_env_names" "$git_json" "$started"
	if ! printf '%s\n' "$evidence" >"$dir/launch.json"; then
		# Nothing may run that the lead is told failed: the session goes first.
		tmux -L delegate kill-session -t "=$session" 2>/dev/null || true
		die 22 "could not write $dir/launch.json (disk full?): the session was stopped"
	fi

	# "Launched" means the runner really started inside tmux: wait for its first state line.
	# The naps are reads with a timeout on a pipe nobody writes to: no process per nap (a
	# resident shell holds one).
	# The 3 s are read off the clock: a count of naps would stretch on a loaded host.
	local first='' nap give_up=$((${EPOCHREALTIME/[.,]/} + 3000000))
	# shellcheck disable=SC2154 # __dlg_nap is the resident shell's
	if [ "${__dlg_resident-}" = 1 ]; then nap=$__dlg_nap; else exec {nap}<> <(:); fi
	until [ -f "$dir/state" ] && read -r first <"$dir/state" && [[ $first == started* || $first == refused* ]]; do
		((${EPOCHREALTIME/[.,]/} < give_up)) ||
			die 28 "tmux session $session started (pane pid $pane_pid) but its runner did not report within 3 s"
		read -rt 0.0005 -u "$nap" _ || true
	done
	[ "${__dlg_resident-}" = 1 ] || exec {nap}<&-
	if ! wait "$chmod_pid"; then
		tmux -L delegate kill-session -t "=$session" 2>/dev/null || true
		die 25 "could not make the helpers in $dir executable: the session was stopped"
	fi
	if [[ $first == refused*cancelled ]]; then
		die 33 "task cancelled while it was launching: the runner found the cancel's mark and started no agent"
	elif [[ $first == refused* ]]; then
		die 28 "tmux session $session started but its runner started no agent: ${first:0:200}"
	fi

	printf 'DELEGATE-EVIDENCE %s\n' "$evidence"
	printf 'DELEGATE-LAUNCHED %s %s %s\n' "$nonce" "$session" "$pane_pid"
}
main delegate-launch-complete
