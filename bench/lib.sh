# shellcheck shell=bash
# What the bench scripts share; sourced (after `cd` to the repository root)
# as `. bench/lib.sh`. Linux only: it reads /proc.

# sample_run INTERVAL CMD...: runs CMD in the background (its stdout and
# stderr are the caller's) and samples it every INTERVAL seconds until it
# exits: the largest RssAnon of CMD's process and of its children (the
# command a wrapper such as timeout or flock runs), and the largest CPU time
# (user + system, from /proc/PID/stat) among them. It prints nothing; it
# sets
#   run_start, run_end  the `date +%s.%N` stamps around the run
#   run_secs            wall seconds (run_end - run_start, bc -l)
#   run_peak_kib        the peak RssAnon in KiB
#   run_cpu_secs        the CPU seconds (bc -l; 0 for a shell function)
#   run_rc              CMD's exit code
sample_run() {
	local interval=$1
	shift
	local pid q v c peak=0 cpu=0
	run_start=$(date +%s.%N)
	"$@" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		for q in $pid $(pgrep -P "$pid"); do
			v=$(awk '/^RssAnon:/ {print $2}' "/proc/$q/status" 2>/dev/null || true)
			[ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
			c=$(awk '{print $14+$15}' "/proc/$q/stat" 2>/dev/null || true)
			[ -n "$c" ] && [ "$c" -gt "$cpu" ] && cpu=$c
		done
		sleep "$interval"
	done
	run_rc=0
	wait "$pid" || run_rc=$?
	run_end=$(date +%s.%N)
	run_secs=$(echo "$run_end - $run_start" | bc -l)
	run_peak_kib=$peak
	run_cpu_secs=$(echo "$cpu / $(getconf CLK_TCK)" | bc -l)
}

# measure_step COLUMNS LABEL CMD...: one step of bench/lowrank8b.sh and
# bench/wm8b.sh. Holding the lock file $LOCK (none when empty), with the
# page cache dropped first (unless DROP=0), it runs CMD (stopped with
# SIGINT after $TIMEOUT seconds when set), CMD's stdout into $tmp/LABEL.out
# and its stderr into $tmp/LABEL.err, sampled every 0.5 s; then deletes
# $OUT. It prints, and appends to $tmp/results.tsv, a tab-separated line:
# LABEL, wall seconds, with COLUMNS=cpu the CPU seconds, the peak RssAnon in
# MiB and CMD's exit code.
measure_step() {
	local cols=$1 label=$2
	shift 2
	(
		if [ -n "$LOCK" ]; then
			exec 9>>"$LOCK"
			flock 9
		fi
		[ "${DROP:-1}" = 0 ] || { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
		to=()
		if [ -n "${TIMEOUT:-}" ]; then to=(timeout --signal=INT "$TIMEOUT"); fi
		sample_run 0.5 "${to[@]}" "$@" >"$tmp/$label.out" 2>"$tmp/$label.err"
		if [ "$cols" = cpu ]; then
			printf "%s\t%.1f\t%.1f\t%d\t%d\n" "$label" "$run_secs" "$run_cpu_secs" $((run_peak_kib / 1024)) "$run_rc"
		else
			printf "%s\t%.1f\t%d\t%d\n" "$label" "$run_secs" $((run_peak_kib / 1024)) "$run_rc"
		fi
		rm -rf "$OUT"
	) | tee -a "$tmp/results.tsv"
}
