# The agent's environment on the brother: how delegate finds the agent program and what it
# runs with. Shared by launch.sh (which starts the agent) and doctor.sh (which reports what a
# launch would meet): Rust puts this file in front of each (runner.rs: AGENT_ENV_SH), so the
# two can never disagree about where the agent is.
#
# Only function definitions: a script cut anywhere in this part runs nothing. The functions
# work on their caller's variables (bash's dynamic scope), which the caller declares local:
#   agent_env   array of NAME=value: the environment captured from a shell, then env files
#   plain_path  sshd's PATH, before any shell's
#   agent_cmd   argv[0] of the agent: a name to look up, or a path
#   agent_path  where the agent was found
#   env_used    plain | login | interactive: the environment the agent was found in
#   shell_flags the flags of the shell whose environment was taken (-l or -il)
#   run_path    the PATH the agent runs with (in_agent_env)
#   env_names, env_error, alias_line, probe_status, agent_version, probe_out,
#   dir_problem, dir_code: results
# shellcheck disable=SC2154,SC2034 # every variable above is the caller's, read or set there

# `~` and `~/...` against the brother's home; `{home}` is the same for argv templates.
home_path() {
	local -n path_=$1
	# shellcheck disable=SC2088 # a literal "~/" prefix, expanded here on purpose
	case $path_ in "~") path_=$HOME ;; "~/"*) path_=$HOME/${path_:2} ;; esac
	path_=${path_//"{home}"/"$HOME"}
}

# The remote_root and what delegate keeps in it (tasks/, cache/) must be this user's alone,
# as OpenSSH's StrictModes and tmux's socket directory require: another local user who owns
# (or may write) one of them could swap the helpers a task runs, read its prompt or forge its
# results. own_dir checks one existing path with builtins only (no process started):
# not a symbolic link, a directory, owned by the effective user. private_dirs checks each
# of its arguments that exists that way, then the modes of all of them with one stat: no
# write bit for group or others. On failure both return 1 with dir_problem (what is wrong,
# naming the path) and dir_code (symlink | not_dir | owner | mode | stat).
own_dir() {
	local d=$1 uid
	if [ -L "$d" ]; then
		dir_code=symlink dir_problem="$d is a symbolic link"
	elif ! [ -d "$d" ]; then
		dir_code=not_dir dir_problem="$d exists and is not a directory"
	elif ! [ -O "$d" ]; then
		uid=$(stat -c %u -- "$d" 2>/dev/null) || uid='?'
		dir_code=owner dir_problem="$d belongs to uid $uid, not to this user (uid $EUID)"
	else
		return 0
	fi
	return 1
}
private_dirs() {
	local d out mode
	local -a present=() modes=()
	for d in "$@"; do
		if [ -e "$d" ] || [ -L "$d" ]; then
			own_dir "$d" || return 1
			present+=("$d")
		fi
	done
	[ "${#present[@]}" -gt 0 ] || return 0
	if ! out=$(stat -c %a -- "${present[@]}" 2>/dev/null); then
		dir_code=stat dir_problem="cannot stat ${present[*]}"
		return 1
	fi
	mapfile -t modes <<<"$out"
	for d in "${!present[@]}"; do
		mode=${modes[d]-}
		if ! [[ $mode =~ ^[0-7]{1,4}$ ]]; then
			dir_code=stat dir_problem="cannot stat ${present[d]}"
			return 1
		fi
		if ((8#$mode & 8#022)); then
			dir_code=mode dir_problem="${present[d]} is writable by group or others (mode $mode)"
			return 1
		fi
	done
}

# The agent runs in the environment the user's own login shell sets up (`environment =
# "login"`, the default): PATH, API keys, proxies and cloud switches people export in
# ~/.profile reach it, as they do at the user's prompt. When the agent is not on that
# PATH (nvm, fnm, volta or asdf set PATH in ~/.bashrc after its "not interactive: return"
# guard), the interactive shell's environment is used instead and recorded as such.
# "plain" keeps sshd's environment.
#
# A launch run by a resident shell (transport/ssh/resident.sh) sets env_keep to its checked
# remote_root: the environment it captures is kept in that shell (launch.sh: keep) and
# used again by the launches that follow there for at most 60 s, and only while the same
# start-up files exist and none is newer than the stamp written just before the capture
# (builtins: no process). A file such a start-up file sources (nvm's default alias, say)
# is not looked at: a change there reaches launches within the 60 s.
shell_env() { # flags (-l or -il): that shell's environment into agent_env; false if it failed
	local -a items
	local item begin=0 slot=${1//[!a-z]/} stamp=''
	if [ -n "${env_keep-}" ]; then
		stamp=$env_keep/.env-stamp-$slot
		if env_kept "$slot" "$stamp"; then return 0; fi
		# Written before the capture: a file changed while it runs counts as changed.
		{ ! [ -L "$stamp" ] && : >"$stamp"; } 2>/dev/null || stamp=''
	fi
	mapfile -d '' -t items < <(timeout 10 "${SHELL:-/bin/bash}" "$1" -c 'printf "\0DLG-ENV-BEGIN\0"; exec env -0' </dev/null 2>/dev/null 3>&-)
	agent_env=()
	for item in "${items[@]}"; do
		if ((begin)); then
			[[ $item =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || continue
			case ${item%%=*} in
			PWD | OLDPWD | SHLVL | _ | TMUX | TMUX_PANE | PS1 | PS2 | PROMPT_COMMAND | COLUMNS | LINES) continue ;;
			UID | EUID | PPID | BASHOPTS | SHELLOPTS | BASH_VERSINFO | GROUPS) continue ;;
			esac
			agent_env+=("$item")
		elif [ "$item" = DLG-ENV-BEGIN ]; then
			begin=1
		fi
	done
	((begin)) || return 1
	[ -z "$stamp" ] || keep_env "$slot"
}

# The start-up files of the shells people log in with (bash, zsh, fish), present or not,
# into startup_files.
list_startup_files() {
	startup_files=(/etc/profile /etc/profile.d /etc/profile.d/*.sh /etc/bash.bashrc /etc/bashrc
		"$HOME/.bash_profile" "$HOME/.bash_login" "$HOME/.profile" "$HOME/.bashrc"
		/etc/zsh/zshenv /etc/zsh/zprofile /etc/zsh/zshrc /etc/zsh/zlogin /etc/zshenv /etc/zprofile
		/etc/zshrc /etc/zlogin "$HOME/.zshenv" "$HOME/.zprofile" "$HOME/.zshrc" "$HOME/.zlogin"
		/etc/fish/config.fish "$HOME/.config/fish/config.fish" "$HOME/.config/fish/conf.d")
}

# startup_present [STAMP]: which start-up files exist, as one line into startup_seen (part
# of what a kept environment is checked by); with STAMP, false as soon as one that exists is
# newer than it (one look at each file).
startup_present() {
	local f
	local -a startup_files
	list_startup_files
	startup_seen=''
	for f in "${startup_files[@]}"; do
		[ -e "$f" ] || continue
		[ -z "${1-}" ] || ! [ "$f" -nt "$1" ] || return 1
		startup_seen+="$f"$'\n'
	done
	return 0
}

# keep_env SLOT: hands agent_env, with the shell, the time and the start-up files present,
# to the resident shell (launch.sh: keep).
keep_env() {
	local startup_seen record meta
	startup_present
	printf -v meta '%s|%s|%s' "${SHELL:-/bin/bash}" "$EPOCHSECONDS" "$startup_seen"
	printf -v record '__dlg_kept_envmeta_%s=%q' "$1" "$meta"
	keep "$record"
	local quoted=''
	# Each entry quoted for the shell that evaluates the record (%q, the format applied to
	# every entry in turn).
	[ "${#agent_env[@]}" = 0 ] || printf -v quoted '%q ' "${agent_env[@]}"
	keep "__dlg_kept_env_$1=($quoted)"
}

# env_kept SLOT STAMP: agent_env from the resident shell's kept capture, if it is at most
# 60 s old, of the same shell, with the same start-up files present and none newer than
# STAMP; false otherwise.
env_kept() {
	local -n kept_meta_=__dlg_kept_envmeta_$1 kept_env_=__dlg_kept_env_$1
	local meta=${kept_meta_-} startup_seen
	[ -n "$meta" ] && [ -f "$2" ] && ! [ -L "$2" ] || return 1
	[ "${meta%%|*}" = "${SHELL:-/bin/bash}" ] || return 1
	meta=${meta#*|}
	[[ -n ${meta%%|*} && ${meta%%|*} != *[!0-9]* ]] && ((EPOCHSECONDS - ${meta%%|*} < 60)) || return 1
	startup_present "$2" || return 1
	[ "${meta#*|}" = "$startup_seen" ] || return 1
	agent_env=("${kept_env_[@]}")
}

# PATH for finding the agent: the captured environment's, then sshd's own.
env_path() {
	local item
	PATH=$plain_path
	for item in "${agent_env[@]}"; do
		[[ $item == PATH=* ]] && PATH=${item#PATH=}${PATH:+:$PATH}
	done
	hash -r
}

# Sets agent_path from agent_cmd: a path as given, or a name looked up on PATH. `hash`
# resolves without starting a process.
find_agent() {
	case $agent_cmd in
	*/*) agent_path=$agent_cmd ;;
	*) agent_path=''; hash -- "$agent_cmd" 2>/dev/null && agent_path=${BASH_CMDS[$agent_cmd]-} ;;
	esac
	[ -n "$agent_path" ] && [ -f "$agent_path" ] && [ -x "$agent_path" ]
}

# locate_agent MODE (plain | login | interactive): takes that environment and looks for the
# agent in it; with `login`, a name not on the login PATH is looked for in the interactive
# shell's too. Sets env_used, shell_flags, agent_env, agent_path and PATH. Returns 0 when
# the agent is an executable file, 1 when not, 2 when MODE's shell gave no environment.
locate_agent() {
	local mode=$1
	env_used=plain shell_flags=-l
	case $mode in
	login | interactive)
		[ "$mode" = interactive ] && shell_flags=-il
		shell_env "$shell_flags" || return 2
		env_used=$mode
		;;
	esac
	env_path
	if ! find_agent && [ "$mode" = login ] && [[ $agent_cmd != */* ]] && shell_env -il; then
		env_used=interactive
		env_path
		find_agent || true
	fi
	[ -n "$agent_path" ] && [ -f "$agent_path" ] && [ -x "$agent_path" ]
}

# Sets alias_line to the interactive shell's alias definition of agent_cmd (`alias
# claude='...'`), or '' when it is not an alias there: delegate runs programs, and an
# alias is the usual reason a command that works at the prompt is "not found".
agent_alias() {
	# shellcheck disable=SC2016 # $1 is the inner shell's
	alias_line=$(timeout 10 "${SHELL:-/bin/bash}" -il -c 'command -v -- "$1"' delegate "$agent_cmd" </dev/null 2>/dev/null | head -n1) || true
	case $alias_line in alias\ *) ;; *) alias_line='' ;; esac
}

# Variables from env files on the brother (`env_file` for a host or brother): NAME=value
# lines (an `export ` prefix, `#` comments and one pair of surrounding quotes allowed),
# read without running them, appended to agent_env; their names to env_names. Their values
# are never printed. On a bad file: env_error says what to do, and false.
read_env_files() {
	local f line n name value
	for f in "$@"; do
		home_path f
		if ! { [ -f "$f" ] && [ -r "$f" ]; }; then
			env_error="env_file $f does not exist or is not readable on this host: create it (NAME=value lines) or remove env_file from the inventory"
			return 1
		fi
		n=0
		while IFS= read -r line || [ -n "$line" ]; do
			n=$((n + 1))
			line=${line%$'\r'}
			[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
			if ! [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
				env_error="env_file $f line $n is not NAME=value: fix the file (values are taken literally, nothing is run)"
				return 1
			fi
			name=${BASH_REMATCH[2]} value=${BASH_REMATCH[3]}
			if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
			agent_env+=("$name=$value")
			env_names+=${env_names:+,}$name
		done <"$f"
	done
}

# The value of NAME in the agent's environment (the captured and env-file entries override
# sshd's, the last one wins) into env_value. Only ever tested for being empty. Always
# true: launch.sh runs under `set -e`.
agent_env_value() {
	local kv
	env_value=${!1-}
	for kv in "${agent_env[@]}"; do
		if [[ $kv == "$1="* ]]; then env_value=${kv#*=}; fi
	done
	return 0
}

# Runs a command in the agent's environment (probes), in a subshell.
in_agent_env() {
	(
		local kv
		# shellcheck disable=SC2163 # kv is NAME=value: export sets NAME
		for kv in "${agent_env[@]}"; do export "$kv" 2>/dev/null || true; done
		export PATH=$run_path
		exec "$@"
	)
}

# probe_version ARGV...: asks the agent its version in the agent's environment (a
# node-based CLI needs the node its PATH finds). Sets probe_status (126/127: it cannot run
# at all, e.g. a script whose interpreter is missing) and agent_version: the first line
# that looks like a version (CLIs print warnings first: Codex does when its home is under
# /tmp), control characters blanked.
probe_version() {
	probe_status=0
	agent_version=$(in_agent_env timeout 10 "$@" </dev/null 2>&1) || probe_status=$?
	local vline first=''
	while IFS= read -r vline; do
		[ -z "$first" ] && first=$vline
		if [[ $vline =~ [0-9]+\.[0-9]+ ]] && ! [[ $vline =~ ^[[:space:]]*(WARN|warn|Warn) ]]; then
			first=$vline
			break
		fi
	done <<<"$agent_version"
	agent_version=${first//[[:cntrl:]]/ }
}

# sandbox_probe_fails ARGV...: runs the sandbox probe (bwrap making a namespace) in the
# agent's environment; true when it failed, with its words (control characters blanked) in
# probe_out.
sandbox_probe_fails() {
	if probe_out=$(in_agent_env timeout 10 "$@" </dev/null 2>&1); then
		return 1
	fi
	probe_out=${probe_out//[[:cntrl:]]/ }
}
