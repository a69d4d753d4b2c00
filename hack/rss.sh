#!/usr/bin/env bash
# hack/rss.sh — resident memory (VmRSS) and peak (VmHWM) of each component of
# the cluster in ${VANE_RUN_DIR:-/tmp/vane-cluster}, read from the pid files
# hack/cluster.sh up wrote.
set -euo pipefail

RUN_DIR=${1:-${VANE_RUN_DIR:-/tmp/vane-cluster}}
[[ -d $RUN_DIR/pids ]] || {
  echo "no cluster in $RUN_DIR (no pids/ dir)" >&2
  exit 1
}

kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status" 2>/dev/null; }

total=0
printf '%-24s %8s %10s %10s\n' component pid 'RSS MiB' 'peak MiB'
names=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
for f in "$RUN_DIR"/pids/*.pid; do # anything else recorded (vane, watchdog)
  n=$(basename "$f" .pid)
  [[ " ${names[*]} " == *" $n "* ]] || names+=("$n")
done
for name in "${names[@]}"; do
  f=$RUN_DIR/pids/$name.pid
  [[ -f $f ]] || continue
  pid=$(<"$f")
  rss=$(kib VmRSS "$pid")
  if [[ -z $rss ]]; then
    printf '%-24s %8s %10s\n' "$name" "$pid" 'not running'
    continue
  fi
  hwm=$(kib VmHWM "$pid")
  total=$((total + rss))
  awk -v n="$name" -v p="$pid" -v r="$rss" -v h="$hwm" 'BEGIN {printf "%-24s %8s %10.1f %10.1f\n", n, p, r/1024, h/1024}'
done
printf '%-24s %8s %10.1f\n' total '' "$(awk -v t="$total" 'BEGIN {print t/1024}')"
