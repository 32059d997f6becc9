# The resident brother shell of delegate (see transport/ssh/resident.rs). Started once per held
# connection; reads framed requests on stdin, one at a time:
#   R <nonce> <length> [<body>]\n<length bytes of script>
#   A <nonce> <length> [<body>]\n<length bytes of ASCII script>
#   D <body> <length>\n<length bytes of ASCII script body>
# R and A run a script the way the usual remote command does (the whole script read
# first, then evaluated), in a subshell whose stdin is /dev/null so no script can eat the
# requests that follow, and frame its output on both streams (RS is byte 036):
#   RS dlg-begin <nonce> RS <output> RS dlg-end <nonce> <exit status> RS
# D keeps a script body (one of the bodies of delegate, named by its hash) as a function, answering
# nothing; an R or A naming that body runs its variable lines and then the kept body, so the
# brother parses a body once per shell instead of once per request.
# It travels inside single quotes: never put one in this file.
# dd reads exactly <length> bytes in big reads (bash reads a pipe one byte per read(2)); a
# small ASCII payload (A) is read by read -N instead, with no process: it asks for the whole
# length at once and, ASCII being one byte per character in every locale, takes exactly
# those bytes (it then copies them a character at a time: dd wins past some 64 KiB).
dd if=/dev/null bs=1 count=1 iflag=fullblock status=none || exit 96
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
		eval "__dlg_body_$__dlg_id() {
$__dlg_script
}" || exit 99
		continue
	fi
	printf "\036dlg-begin %s\036" "$__dlg_id"
	printf "\036dlg-begin %s\036" "$__dlg_id" >&2
	(
		unset __dlg_tag __dlg_len
		if [ -z "$__dlg_body" ]; then
			eval "$__dlg_script"
		else
			eval "$__dlg_script"
			"__dlg_body_$__dlg_body"
		fi
	) </dev/null
	__dlg_rc=$?
	printf "\036dlg-end %s %s\036" "$__dlg_id" "$__dlg_rc" >&2
	printf "\036dlg-end %s %s\036" "$__dlg_id" "$__dlg_rc"
done
