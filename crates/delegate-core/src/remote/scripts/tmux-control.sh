# The tmux control client a resident shell keeps (transport/ssh/resident.sh): a tmux
# client in control mode attached to a session of a task, reading command lines from a pipe
# (__dlg_ctl_in) and answering on another (__dlg_ctl_out). A command through it starts no
# tmux process. Function definitions only, put in front of launch.sh (new-session; its
# `keep` records too) and sync.sh (list-sessions); each asks for a client (control_wanted)
# after it used a plain one.

# control_command LINE: tmux parses LINE (its callers quote every argument); the answer is
# the block tmux writes for it (%begin, its output, then %end or %error). Returns 0 with
# the output lines in control_lines (done), 1 with tmux's complaint there (refused), 2 when
# there is no usable client (nothing was sent), 3 when the line went and no answer came
# within 10 s (it may yet be done), or 4 when the client ended (%exit) after the line went
# and before an answer: its session or the server ended meanwhile, and whether tmux ran the
# line only the server can tell (it ran it before it let the client go, or never). A client
# found gone (%exit: tmux ends it with its session) or not answering is let go
# (control_gone).
control_command() {
	control_lines=()
	[ "${__dlg_resident-}" = 1 ] && [ -n "${__dlg_ctl_pid-}" ] || return 2
	# shellcheck disable=SC2154 # __dlg_ctl_in and __dlg_ctl_out are the resident shell's
	local line begun=0 give_up in=$__dlg_ctl_in out=$__dlg_ctl_out pending=0
	# What the client said since the last command (notifications), read first: a few lines
	# per session begun or ended. A client that has more to say than any idle spell explains
	# (it never stops) is let go.
	while read -r -t 0 -u "$out"; do
		if ! IFS= read -r -t 1 -u "$out" line || [[ $line == %exit* ]] || ((++pending > 4096)); then
			control_gone
			return 2
		fi
	done
	trap '' PIPE # a client gone meanwhile is a failed write, not the end of the script
	if ! { printf '%s\n' "$1" >&"$in"; } 2>/dev/null; then
		trap - PIPE
		control_gone
		return 2
	fi
	trap - PIPE
	give_up=$((${EPOCHREALTIME/[.,]/} + 10000000))
	while IFS= read -r -t 10 -u "$out" line; do
		case $line in
		"%begin "*) begun=1 control_lines=() ;;
		"%end "*) [ "$begun" = 0 ] || return 0 ;;
		"%error "*) [ "$begun" = 0 ] || return 1 ;;
		%exit*)
			if [ "$begun" = 0 ]; then
				control_gone
				return 4
			fi
			control_lines+=("$line")
			;;
		*) [ "$begun" = 0 ] || control_lines+=("$line") ;; # (outside a block: a notification)
		esac
		((${EPOCHREALTIME/[.,]/} < give_up)) || break
	done
	control_gone
	return 3
}

# control_wanted VERSION SESSION: after a plain tmux client found tmux VERSION running
# SESSION, a resident shell without a control client is asked to start one attached to it,
# when the server is tmux 3.7 or later. Control mode exists from 3.2 (`attach -f
# no-output`: the pane's output is never sent to the client), but until 3.7 the server
# crashes when it has news for a control client that is still introducing itself (tmux
# commit e5a2a25f, "Do not notify clients if not fully initialized", GitHub issue 4980:
# control_write on a client whose control_state is not yet made; tmux 3.3a, Debian 12's,
# segfaults in control_write). A session made or ended by another launch or task at that
# moment is such news, and a crashed server takes every task's session with it: the
# bench's sweeps of 100 and 1000 tasks lost from 15 to 99 of them. On 3.2 to 3.6 the
# client starts only where the brother's user opted in with the file
# ~/.delegate-tmux-control (accepting the risk; the test suite does, on tmux 3.3a).
control_wanted() {
	[ "${__dlg_resident-}" = 1 ] && [ -z "${__dlg_ctl_pid-}" ] || return 0
	[[ ${1#next-} =~ ^([0-9]+)\.([0-9]+) ]] || return 0
	local major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]} record
	if ((major == 3 && minor < 7)); then
		((minor >= 2)) && [ -e "${HOME-}/.delegate-tmux-control" ] || return 0
	elif ((major < 3)); then
		return 0
	fi
	printf -v record '__dlg_kept_ctl=%q' "start $2"
	keep "$record"
}

# The resident shell is asked to let its control client go; for the rest of this script
# there is none.
control_gone() {
	keep "__dlg_kept_ctl=stop"
	__dlg_ctl_pid=''
}

# keep ASSIGNMENT: run by a resident shell, hands it one assignment of a __dlg_kept_
# variable for the requests that follow in that shell (transport/ssh/resident.sh reads
# fd 3 after the script). Elsewhere nothing is kept. (Here because both bodies that carry
# this file hand records: the control client's, and the launch's checks.)
keep() {
	[ "${__dlg_resident-}" = 1 ] || return 0
	printf '%s\0' "$1" >&3 2>/dev/null || true
}
