# The resident brother shell of delegate (see transport/ssh/resident.rs). Started once per held
# connection; reads framed requests on stdin, one at a time:
#   R <nonce> <length> [<body>]\n<length bytes of script>
#   A <nonce> <length> [<body>]\n<length bytes of ASCII script>
#   D <body> <length>\n<length bytes of ASCII script body>
# R and A run a script the way the usual remote command does (the whole script read
# first, then evaluated), in a subshell whose stdin is /dev/null so no script can eat the
# requests that follow, and frame its output on both streams (RS is byte 036):
#   RS dlg-begin <nonce> RS <output> RS dlg-end <nonce> <exit status> RS
# D keeps a script body (one of the bodies of delegate, named by its hash), answering nothing:
# its function definitions, run here once, with its entry function renamed and a function
# __dlg_body_<body> calling it (remote/allowlist.rs: resident_form). An R or A naming that
# body runs its variable lines and then __dlg_body_<body>, so the brother neither parses a
# body nor defines its functions (bash copies the parsed body of a function each time) per request.
# It travels inside single quotes: never put one in this file.
# dd reads exactly <length> bytes in big reads (bash reads a pipe one byte per read(2)); a
# small ASCII payload (A) is read by read -N instead, with no process: it asks for the whole
# length at once and, ASCII being one byte per character in every locale, takes exactly
# those bytes (it then copies them a character at a time: dd wins past some 64 KiB).
#
# What a script verified once can be kept for the requests that follow in this shell
# ("keep"): the request runs with fd 3 on a file of this shell (made by mktemp, for this
# user alone, emptied for each request, removed when the shell ends), and a script that
# sees __dlg_resident writes assignments of __dlg_kept_* variables there, each ended by a
# NUL (launch.sh: the helpers it checked, the remote_root it checked, the login
# environment it captured); the shell reads them after the script. (A file, not a pipe
# read while the script runs: that took a second process per request, some 0.35 ms, and a
# process the script left running, a tmux server, could hold a pipe open.) The
# assignments are taken only from a script that ended on its own (status below 128: a
# killed one may have cut one short), and only records that start with a __dlg_kept_ name
# (they come from the scripts of delegate, which alone this shell runs).
dd if=/dev/null bs=1 count=1 iflag=fullblock status=none || exit 96
__dlg_keepfile=$(mktemp 2>/dev/null) && [ -f "$__dlg_keepfile" ] || exit 96
trap "rm -f -- \"\$__dlg_keepfile\"" EXIT
__dlg_resident=1
printf -v __dlg_nl "\n"
declare -A __dlg_kept_helper=() __dlg_kept_root=()
# A pipe nobody writes to, for naps (read -t) that start no process.
exec {__dlg_nap}<> <(:)
# The tmux control client (tmux-control.sh): after a launch made a session with a plain
# tmux client (record __dlg_kept_ctl="start <session>"), a tmux client in control mode
# attached to that session (no-output: the pane output is not sent to it), reading
# commands from __dlg_ctl_in and writing to __dlg_ctl_out, so the launches (and small
# syncs) that follow start no tmux process. tmux ends it with its session (%exit); a
# script that finds it gone or not answering asks for it to be let go ("stop"), and a
# launch asks for a new one ("start", which lets any earlier one go) once a plain client
# made its session. It holds no session of its own, so the tmux server still ends with its
# last task. The client gets its two pipes and none of the other descriptors of the shell.
__dlg_ctl_pid="" __dlg_ctl_in="" __dlg_ctl_out="" __dlg_kept_ctl=""
__dlg_ctl_stop() {
	[ -n "$__dlg_ctl_pid" ] || return 0
	exec {__dlg_ctl_in}>&- {__dlg_ctl_out}<&-
	kill "$__dlg_ctl_pid" 2>/dev/null
	__dlg_ctl_pid="" __dlg_ctl_in="" __dlg_ctl_out=""
}
__dlg_ctl_start() {
	exec {__dlg_ctl_out}<> <(:)
	exec {__dlg_ctl_in}> >(exec tmux -L delegate -C attach-session -f no-output,ignore-size -t "=$1" \
		>&"$__dlg_ctl_out" 2>/dev/null {__dlg_ctl_out}>&- {__dlg_nap}<&- 4>&-)
	__dlg_ctl_pid=$!
}
exec 4>&1
printf "\036dlg-ready 1\036\n"
while IFS=" " read -r __dlg_tag __dlg_id __dlg_len __dlg_body; do
	case "$__dlg_tag:$__dlg_id:$__dlg_len:$__dlg_body" in
	[RAD]:[0-9a-f]*:[0-9]*:) ;;
	[RA]:[0-9a-f]*:[0-9]*:[0-9a-f]*) ;;
	*) exit 97 ;;
	esac
	__dlg_script=
	if [ "$__dlg_len" -gt 0 ]; then
		if [ "$__dlg_tag" = R ]; then
			__dlg_script=$(dd bs="$__dlg_len" count=1 iflag=fullblock status=none) || exit 98
		else
			IFS= read -r -N "$__dlg_len" __dlg_script || exit 98
			[ "${#__dlg_script}" = "$__dlg_len" ] || exit 98
		fi
	fi
	if [ "$__dlg_tag" = D ]; then
		eval "$__dlg_script" || exit 99
		declare -F "__dlg_body_$__dlg_id" >/dev/null || exit 99
		continue
	fi
	printf "\036dlg-begin %s\036" "$__dlg_id"
	printf "\036dlg-begin %s\036" "$__dlg_id" >&2
	__dlg_keep=
	(
		unset __dlg_tag __dlg_len __dlg_rec __dlg_keep __dlg_keepfile
		trap - EXIT
		if [ -z "$__dlg_body" ]; then
			eval "$__dlg_script"
		else
			eval "$__dlg_script"
			"__dlg_body_$__dlg_body"
		fi
	) </dev/null 3>"$__dlg_keepfile" 4>&-
	__dlg_rc=$?
	if [ "$__dlg_rc" -lt 128 ]; then
		while IFS= read -r -d "" __dlg_rec; do
			case $__dlg_rec in __dlg_kept_*) __dlg_keep+=$__dlg_rec$__dlg_nl ;; esac
		done <"$__dlg_keepfile"
		if [ -n "$__dlg_keep" ]; then eval "$__dlg_keep"; fi
	fi
	case $__dlg_kept_ctl in
	stop) __dlg_ctl_stop ;;
	"start "*) __dlg_ctl_stop && __dlg_ctl_start "${__dlg_kept_ctl#start }" ;;
	esac
	__dlg_kept_ctl=""
	printf "\036dlg-end %s %s\036" "$__dlg_id" "$__dlg_rc" >&2
	printf "\036dlg-end %s %s\036" "$__dlg_id" "$__dlg_rc"
done
