# delegate doctor: everything a launch needs on this host, checked for each brother on it,
# changing nothing. Sent on the stdin of bash (REMOTE_COMMAND in runner.rs) like launch.sh.
#
# Rust prepends `DLG_DOCTOR='<base64>'` and agent-env.sh (the functions launch.sh uses to
# find the agent and build its environment, so both find the same agent), and nothing
# else. DLG_DOCTOR holds 14 fields per brother, each followed by NUL (the order of
# doctor::render in doctor.rs); list fields hold their items each followed by \x1f:
#   index kind sandbox remote_root workdir environment env_files(list) agent_cmd
#   version_argv(list) requires(list) sandbox_probe(list) refuse_root credentials credential_env
#
# Output contract (stdout; read by crates/delegate-core/src/doctor.rs, which trusts none of
# it: lines are length-bounded, control characters dropped, and the words below checked):
#   DOCTOR <index|*> <check> <ok|warn|fail> <fix-key|-> <detail>
#   DOCTOR-FACT <index|*> <key> <value>
#   DOCTOR-DONE <index>                  (all of that brother's checks ran)
# `*` is every brother (the host's own checks). A fix key names one of the fixes doctor.rs
# knows; the brother never supplies fix text. Values of variables are never printed, only
# names (credentials, env files).

doctor_main() {
	if [ "${1-}" != delegate-doctor-complete ]; then
		printf 'DOCTOR-ERROR the doctor script arrived incomplete: nothing was checked\n' >&2
		exit 23
	fi
	# No `set -e`: a failed check is a finding, and the next check still runs.
	set -uo pipefail
	umask 077

	say() { # index check status fix-key detail: one finding on one line
		printf 'DOCTOR %s %s %s %s %s\n' "$1" "$2" "$3" "$4" "${5//[[:cntrl:]]/ }"
	}
	fact() {
		printf 'DOCTOR-FACT %s %s %s\n' "$1" "$2" "${3//[[:cntrl:]]/ }"
	}
	split_list() {
		local -n into=$1
		# shellcheck disable=SC2034 # a nameref: filling it fills the caller's array
		mapfile -d $'\x1f' -t into <<<"$2"
		unset 'into[-1]'
	}

	# --- the host's own checks, with sshd's PATH, as launch.sh makes them ---------------
	if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
		say '*' bash fail bash_old "bash $BASH_VERSION: delegate's scripts need bash 4.4 or newer"
	else
		say '*' bash ok - "$BASH_VERSION"
	fi
	fact '*' remote_user "${USER:-${LOGNAME:-?}} (uid $EUID)"
	local tool
	local -a missing=()
	for tool in base64 sha256sum mkdir mv chmod timeout tee grep flock; do
		command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		say '*' tools fail tools_missing "${missing[*]} not found on PATH ($PATH)"
		# Without base64 the brothers' variables cannot even be read.
		[[ " ${missing[*]} " == *" base64 "* ]] && return
	else
		say '*' tools ok - "base64, sha256sum, timeout, tee, grep, flock and the rest of coreutils present"
	fi
	local tmux_version
	if command -v tmux >/dev/null 2>&1 && tmux_version=$(tmux -V 2>&1); then
		say '*' tmux ok - "$tmux_version"
	else
		say '*' tmux fail tmux_missing "tmux not found on PATH ($PATH)"
	fi

	local -a v
	mapfile -d '' -t v < <(printf '%s' "$DLG_DOCTOR" | base64 -d)
	if [ "${#v[@]}" -eq 0 ] || [ $((${#v[@]} % 14)) != 0 ]; then
		printf 'DOCTOR-ERROR the doctor variables did not decode (got %s fields): is base64 GNU coreutils?\n' "${#v[@]}" >&2
		exit 23
	fi
	local b
	for ((b = 0; b < ${#v[@]}; b += 14)); do
		# A subshell each: one brother's environment (PATH, captured variables) must not
		# leak into the next one's.
		(check_brother "${v[@]:b:14}")
	done
}

# One brother's checks (run in a subshell).
check_brother() {
	local idx=$1 kind=$2 sandbox=$3 root=$4 workdir=$5 env_mode=$6 refuse_root=${12} creds=${13} credential_env=${14}
	local agent_cmd=$8 i
	local -a env_files version_argv requires sandbox_probe
	split_list env_files "$7"
	split_list version_argv "$9"
	split_list requires "${10}"
	split_list sandbox_probe "${11}"
	[[ $idx =~ ^[0-9]{1,6}$ ]] || return
	home_path root
	home_path workdir
	home_path agent_cmd
	for i in "${!version_argv[@]}"; do home_path "version_argv[$i]"; done

	# --- the agent: found where and how launch.sh would find it -------------------------
	# shellcheck disable=SC2034 # agent_env is read by agent-env.sh's functions
	local -a agent_env=()
	# shellcheck disable=SC2034 # plain_path is read by agent-env.sh's functions
	local env_used=plain shell_flags=-l plain_path=$PATH agent_path='' located=0
	locate_agent "$env_mode" || located=$?
	if [ "$located" = 0 ]; then
		fact "$idx" agent_path "$agent_path"
		fact "$idx" environment "$env_used"
		say "$idx" agent ok - "$agent_path (found by the $env_used environment)"
	elif [ "$located" = 2 ]; then
		say "$idx" agent fail shell_env "the $env_mode shell (${SHELL:-/bin/bash} $shell_flags) did not give its environment within 10 s"
	elif [[ $agent_cmd == */* ]]; then
		say "$idx" agent fail agent_path_bad "$agent_cmd is not an executable file on this host"
	else
		local alias_line=''
		if [ "$env_mode" != plain ]; then agent_alias; fi
		if [ -n "$alias_line" ]; then
			say "$idx" agent fail agent_alias "'$agent_cmd' is only an alias in the interactive shell ($alias_line)"
		else
			say "$idx" agent fail agent_missing "'$agent_cmd' not found: looked on PATH of the $env_used environment and sshd's ($PATH) and in an interactive shell"
		fi
	fi
	# shellcheck disable=SC2034 # read by in_agent_env (agent-env.sh)
	local run_path=$PATH

	local env_names='' env_error=''
	if [ "${#env_files[@]}" -gt 0 ]; then
		if read_env_files "${env_files[@]}"; then
			say "$idx" env_file ok - "${env_files[*]}: ${env_names:-no variables}"
		else
			say "$idx" env_file fail env_file "$env_error"
		fi
	fi

	# --- the profile's credential_env: set for the agent (its value never printed) -------
	if [[ $credential_env =~ ^[A-Z_][A-Z0-9_]*$ ]]; then
		local env_value=''
		agent_env_value "$credential_env"
		if [ -n "$env_value" ]; then
			say "$idx" credential_env ok - "$credential_env is set in the agent's environment"
		else
			say "$idx" credential_env fail credential_env "$credential_env is not set in the agent's environment"
		fi
		env_value=''
	fi

	# --- the sandbox level's requirements, as launch.sh checks them --------------------
	local -a absent=()
	local probe_out tool
	for tool in "${requires[@]}"; do
		command -v -- "$tool" >/dev/null 2>&1 || absent+=("$tool")
	done
	if [ "${#absent[@]}" -gt 0 ]; then
		say "$idx" sandbox fail sandbox_tools "needs ${requires[*]}; missing: ${absent[*]}"
	elif [ "$refuse_root" = 1 ] && [ "$EUID" = 0 ]; then
		say "$idx" sandbox fail sandbox_root "agent '$kind' refuses sandbox '$sandbox' as root"
	elif [ "${#sandbox_probe[@]}" -gt 0 ]; then
		if sandbox_probe_fails "${sandbox_probe[@]}"; then
			say "$idx" sandbox fail sandbox_probe "'${sandbox_probe[*]}' failed: ${probe_out:0:300}"
		else
			say "$idx" sandbox ok - "${requires[*]} present; '${sandbox_probe[*]}' works"
		fi
	else
		say "$idx" sandbox ok - "nothing to check on the host"
	fi

	# --- the agent's version, asked as launch.sh asks it ---------------------------------
	if [ "$located" = 0 ] && [ "${#version_argv[@]}" -gt 0 ]; then
		if [ "${version_argv[0]}" = "$agent_cmd" ]; then version_argv[0]=$agent_path; fi
		local probe_status=0 agent_version=''
		probe_version "${version_argv[@]}"
		case $probe_status in
		0)
			fact "$idx" agent_version "$agent_version"
			say "$idx" agent_version ok - "$agent_version"
			;;
		126 | 127)
			say "$idx" agent_version fail agent_cannot_run "$agent_path cannot run (exit $probe_status from '${version_argv[*]}': ${agent_version:0:300})"
			;;
		124)
			say "$idx" agent_version warn version_failed "'${version_argv[*]}' did not answer within 10 s"
			;;
		*)
			say "$idx" agent_version warn version_failed "'${version_argv[*]}' exited $probe_status: ${agent_version:0:300}"
			;;
		esac
	fi

	# --- credentials: only whether they are there, never what they are --------------------
	if [ -n "$creds" ]; then
		check_credentials "$idx" "$creds"
	fi

	# --- remote_root: where task directories go -------------------------------------------
	check_remote_root "$idx" "$root"

	# --- workdir ------------------------------------------------------------------------
	if ! [ -e "$workdir" ]; then
		say "$idx" workdir fail workdir_missing "$workdir does not exist on this host"
	elif ! [ -d "$workdir" ]; then
		say "$idx" workdir fail workdir_missing "$workdir is not a directory"
	elif ! command -v git >/dev/null 2>&1; then
		say "$idx" workdir warn workdir_not_git "$workdir exists; git is not installed, so whether it is a work tree is unknown"
	elif [ "$(git -C "$workdir" rev-parse --is-inside-work-tree 2>/dev/null)" = true ]; then
		say "$idx" workdir ok - "$workdir: a git work tree"
	else
		say "$idx" workdir warn workdir_not_git "$workdir exists but is not in a git work tree"
	fi
	printf 'DOCTOR-DONE %s\n' "$idx"
}

# What the agent's CLI would authenticate with, seen without a network call: variable
# names set in its environment, and its credential files. A key may come from elsewhere
# (a keychain, managed settings, a wrapper), so nothing found is a warning, not a failure.
check_credentials() {
	local idx=$1 creds=$2 name dir env_value='' found=''
	local -a names=()
	case $creds in
	claude)
		names=(ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN CLAUDE_CODE_OAUTH_TOKEN CLAUDE_CODE_USE_BEDROCK CLAUDE_CODE_USE_VERTEX)
		agent_env_value CLAUDE_CONFIG_DIR
		dir=${env_value:-$HOME/.claude}
		;;
	codex)
		names=(OPENAI_API_KEY CODEX_API_KEY)
		agent_env_value CODEX_HOME
		dir=${env_value:-$HOME/.codex}
		;;
	*) return ;;
	esac
	for name in "${names[@]}"; do
		agent_env_value "$name"
		[ -n "$env_value" ] && found+="${found:+, }$name set in the agent's environment"
	done
	env_value=''
	case $creds in
	claude)
		[ -f "$dir/.credentials.json" ] && found+="${found:+, }$dir/.credentials.json (a claude login)"
		if [ -f "$dir/settings.json" ]; then
			grep -q '"apiKeyHelper"[[:space:]]*:' -- "$dir/settings.json" 2>/dev/null &&
				found+="${found:+, }apiKeyHelper in $dir/settings.json"
			grep -Eq '"(ANTHROPIC_API_KEY|ANTHROPIC_AUTH_TOKEN|CLAUDE_CODE_OAUTH_TOKEN|CLAUDE_CODE_USE_BEDROCK|CLAUDE_CODE_USE_VERTEX)"[[:space:]]*:' -- "$dir/settings.json" 2>/dev/null &&
				found+="${found:+, }a key in the env of $dir/settings.json"
		fi
		;;
	codex)
		[ -f "$dir/auth.json" ] && found+="${found:+, }$dir/auth.json (a codex login)"
		[ -f "$dir/config.toml" ] && grep -Eq '^[[:space:]]*model_provider[[:space:]]*=' -- "$dir/config.toml" 2>/dev/null &&
			found+="${found:+, }a model_provider in $dir/config.toml"
		;;
	esac
	if [ -n "$found" ]; then
		say "$idx" credentials ok - "$found"
	elif [ "$creds" = claude ]; then
		say "$idx" credentials warn credentials "none seen: no ${names[*]} in the agent's environment, no $dir/.credentials.json, no apiKeyHelper or key in $dir/settings.json"
	else
		say "$idx" credentials warn credentials "none seen: no ${names[*]} in the agent's environment, no $dir/auth.json, no model_provider in $dir/config.toml"
	fi
}

# remote_root: exists (or can be created) as a directory of this user's alone, by the rule
# the launch applies (agent-env.sh: own_dir, private_dirs): the root, its tasks/ and cache/
# are real directories (not symlinks: another user's link would send task files, prompts
# included, elsewhere), owned by this user, not writable by group or others. Then the free
# space on its filesystem.
check_remote_root() {
	local idx=$1 root=$2 near mode dir_problem='' dir_code=''
	[ "$root" != / ] && root=${root%"${root##*[!/]}"}
	near=$root
	if [ -e "$root" ] || [ -L "$root" ]; then
		if ! private_dirs "$root" "$root/tasks" "$root/cache"; then
			case $dir_code in
			symlink) say "$idx" remote_root fail root_symlink "$dir_problem" ;;
			owner) say "$idx" remote_root fail root_owner "$dir_problem" ;;
			mode) say "$idx" remote_root fail root_mode "$dir_problem" ;;
			*) say "$idx" remote_root fail root_not_writable "$dir_problem" ;;
			esac
		elif ! { [ -w "$root" ] && [ -x "$root" ]; }; then
			say "$idx" remote_root fail root_not_writable "$root is not writable by this user"
		elif [ -e "$root/tasks" ] && ! { [ -w "$root/tasks" ] && [ -x "$root/tasks" ]; }; then
			say "$idx" remote_root fail root_not_writable "$root/tasks is not a directory this user can write"
		else
			mode=$(stat -c %a -- "$root" 2>/dev/null) || mode='?'
			say "$idx" remote_root ok - "$root: this user's, mode $mode, writable"
		fi
	else
		while [ -n "$near" ] && ! [ -e "$near" ]; do near=${near%/*}; done
		[ -n "$near" ] || near=/
		if [ -d "$near" ] && [ -w "$near" ] && [ -x "$near" ]; then
			say "$idx" remote_root ok - "$root does not exist yet: the first launch creates it (mode 0700) in $near"
		else
			say "$idx" remote_root fail root_not_writable "$root does not exist and this user cannot create it in $near"
		fi
	fi
	local -a f=()
	{ read -r _ && read -ra f; } < <(df -Pk -- "$near" 2>/dev/null)
	local avail=${f[3]-}
	if ! [[ $avail =~ ^[0-9]{1,18}$ ]]; then
		say "$idx" disk warn - "could not measure the free space at $near (df -Pk)"
	elif ((avail < 1048576)); then
		say "$idx" disk warn disk_low "$((avail / 1024)) MiB free at $near"
	else
		say "$idx" disk ok - "$((avail / 1048576)) GiB free at $near"
	fi
}
doctor_main delegate-doctor-complete
