# The resident brother shell of delegate (see transport/ssh/resident.rs). Started once per held
# connection; reads framed requests on stdin, one at a time:
#   R <nonce> <length>\n<length bytes of script>
# runs each script the way the usual remote command does (the whole script read
# first, then evaluated), in a subshell whose stdin is /dev/null so no script can eat the
# requests that follow, and frames its output on both streams (RS is byte 036):
#   RS dlg-begin <nonce> RS <output> RS dlg-end <nonce> <exit status> RS
# It travels inside single quotes: never put one in this file.
# dd reads exactly <length> bytes in big reads (bash reads a pipe one byte per read(2)).
dd if=/dev/null bs=1 count=1 iflag=fullblock status=none || exit 96
printf "\036dlg-ready 1\036\n"
while IFS=" " read -r __dlg_tag __dlg_nonce __dlg_len; do
	case "$__dlg_tag:$__dlg_nonce:$__dlg_len" in
	R:[0-9a-f]*:[0-9]*) ;;
	*) exit 97 ;;
	esac
	__dlg_script=
	if [ "$__dlg_len" -gt 0 ]; then
		__dlg_script=$(dd bs="$__dlg_len" count=1 iflag=fullblock status=none) || exit 98
	fi
	printf "\036dlg-begin %s\036" "$__dlg_nonce"
	printf "\036dlg-begin %s\036" "$__dlg_nonce" >&2
	(
		unset __dlg_tag __dlg_len
		eval "$__dlg_script"
	) </dev/null
	__dlg_rc=$?
	printf "\036dlg-end %s %s\036" "$__dlg_nonce" "$__dlg_rc" >&2
	printf "\036dlg-end %s %s\036" "$__dlg_nonce" "$__dlg_rc"
done
