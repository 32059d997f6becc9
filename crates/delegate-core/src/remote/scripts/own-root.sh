# The check every script that reads or writes under `remote_root` makes before it does:
# sync.sh, cancel.sh and say.sh get this file in front of them (sync_protocol.rs: script);
# the launch makes the full check, mode included (agent-env.sh: private_dirs).
#
# Only a function definition: a script cut anywhere in this part runs nothing.

# foreign_root ROOT: true, with `root_problem` set, when ROOT or ROOT/tasks is a symbolic
# link, not a directory, or not this user's; another local user could then swap what we
# read or run. Builtins only: sync runs on every state command.
foreign_root() {
	local own
	# ${1%/...}: trailing slashes dropped, so `-L` sees the link itself.
	for own in "${1%"${1##*[!/]}"}" "$1/tasks"; do
		if [ -L "$own" ] || { [ -e "$own" ] && ! { [ -d "$own" ] && [ -O "$own" ]; }; }; then
			# shellcheck disable=SC2034 # read by the script this is put in front of
			root_problem="remote_root refused: $own is a symbolic link, not a directory, or not this user's (uid $EUID): choose a remote_root in this user's home (e.g. ~/.delegate)"
			return 0
		fi
	done
	return 1
}
