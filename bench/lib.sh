# Helpers the bench scripts share; sourced, not run.

# The median of numbers read one per line from stdin (empty lines ignored).
median() { sort -g | awk 'NF {a[++n] = $1} END {print (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2}'; }

# a / b with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# Timestamped lines on stderr.
log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Kills the processes in PIDS (the caller's array) at exit.
kill_started_processes() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# Sends `signal` to the Hub fixture `pid` and prints the "xet bytes sent" line it then writes to
# `log` (SIGUSR2 only counts; SIGUSR1 also publishes revision 2).
fixture_xet_bytes() {  # signal pid log
  local before
  before=$(grep -c '^xet bytes sent' "$3" || true)
  kill "-$1" "$2"
  until [[ $(grep -c '^xet bytes sent' "$3" || true) -gt $before ]]; do sleep 0.05; done
  grep '^xet bytes sent' "$3" | tail -1 | awk '{print $4}'
}
