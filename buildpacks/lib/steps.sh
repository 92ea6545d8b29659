# Shared by the bundled buildpacks' bin/compile (sourced): Heroku's output conventions and
# timed steps. Needs bash 5 ($EPOCHREALTIME).

puts_step() { echo "-----> $*"; }
puts_warn() { echo " !     $*"; }

# Prefix every line with 7 spaces, one line at a time so long output streams.
indent() {
  case "$(uname)" in
    Darwin) sed -l 's/^/       /' ;;
    *) sed -u 's/^/       /' ;;
  esac
}

fail() {
  local line
  for line in "$@"; do puts_warn "$line"; done
  exit 1
}

# config_var NAME: the value of config var NAME from ENV_DIR (env_dir), empty when unset.
# The file is read as data and never run. NUL bytes (how Dokuen's envdir stores newlines)
# become newlines; the command substitution that receives the value drops trailing newlines.
config_var() {
  local file="${env_dir:-}/$1"
  if [[ -n "${env_dir:-}" && -f "$file" ]]; then
    tr '\0' '\n' <"$file"
  fi
}

# seconds_since START: the time since START (an $EPOCHREALTIME) as "0.4s".
seconds_since() {
  local now=${EPOCHREALTIME/[.,]/} then=${1/[.,]/}
  local tenths=$(((now - then + 50000) / 100000))
  printf '%d.%ds' $((tenths / 10)) $((tenths % 10))
}

# step TITLE COMMAND...: run COMMAND, then print "-----> TITLE (0.4s)" and its output,
# indented. Returns COMMAND's status. A step still running after 3 s streams instead: its
# title at once, its output as it comes, its time last.
step() {
  local title=$1 start=$EPOCHREALTIME log status=0 pid watcher
  shift
  log=$(mktemp)
  "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  (
    sleep 3 >/dev/null 2>&1 </dev/null
    if kill -0 "$pid" 2>/dev/null; then
      : >"$log.streamed"
      puts_step "$title"
      tail -s 0.1 -n +1 -f --pid="$pid" "$log" | indent
    fi
  ) &
  watcher=$!
  wait "$pid" || status=$?
  if [[ -e "$log.streamed" ]]; then
    wait "$watcher" || true
    echo "       (took $(seconds_since "$start"))"
  else
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    if [[ -e "$log.streamed" ]]; then # it began to stream just now: finish the stream
      indent <"$log"
      echo "       (took $(seconds_since "$start"))"
    else
      puts_step "$title ($(seconds_since "$start"))"
      indent <"$log"
    fi
  fi
  rm -f "$log" "$log.streamed"
  return "$status"
}
