# Body of the per-task runner that tmux starts (`bash <task dir>/run.sh`). The launch
# script prepends TASK_DIR, WORKDIR, DELIVERY, RUN_PATH, TASK_KEY and AGENT_ARGV as bash
# declarations. It records that it started, runs the agent with its output teed into the
# task directory, and records how the agent ended whether or not the agent cooperated.

main() {
	set -uo pipefail
	umask 077
	export PATH=$RUN_PATH DELEGATE_TASK_DIR=$TASK_DIR DELEGATE_TASK_KEY=$TASK_KEY
	# Builtins only: the launch script waits for the first state line.
	now() {
		local t=$EPOCHREALTIME # one reading; its decimal separator follows the locale
		TZ=UTC0 printf '%(%Y-%m-%dT%H:%M:%S)T.%sZ' "${t%[.,]*}" "${t#*[.,]}"
	}

	printf 'started pid=%s at=%s\n' "$$" "$(now)" >>"$TASK_DIR/state"
	printf '%s running\n' "$(now)" >>"$TASK_DIR/state"

	local code
	cd -- "$WORKDIR" || {
		printf '%s failed workdir %s vanished\n' "$(now)" "$WORKDIR" >>"$TASK_DIR/state"
		printf '126 %s\n' "$(now)" >"$TASK_DIR/exit"
		return 126
	}
	# stdin is always redirected: the prompt file, or /dev/null when the agent reads the
	# file itself. Never the tmux tty, which an agent (Codex) would wait on forever.
	local input=/dev/null
	[ "$DELIVERY" = stdin ] && input=$TASK_DIR/prompt
	"${AGENT_ARGV[@]}" <"$input" 2>>"$TASK_DIR/stderr.log" | tee -a "$TASK_DIR/stream.jsonl"
	code=${PIPESTATUS[0]}

	printf '%s %s\n' "$code" "$(now)" >"$TASK_DIR/exit.tmp" && mv -f -- "$TASK_DIR/exit.tmp" "$TASK_DIR/exit"
	printf '%s exited %s\n' "$(now)" "$code" >>"$TASK_DIR/state"
	return "$code"
}
main "$@"
