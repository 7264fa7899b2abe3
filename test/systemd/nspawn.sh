#!/usr/bin/env bash
# Boots a container for test/systemd.test.ts in a cgroup of its own, so that nothing of
# it stays behind (systemd-nspawn leaves its payload/supervisor cgroups otherwise).
#   nspawn.sh run NAME [systemd-nspawn options...]   exec's systemd-nspawn --boot
#   nspawn.sh cleanup NAME                           kills what is left, removes the cgroups
# With systemd as PID 1 the container runs in a transient scope unit NAME.scope (systemd
# removes it); otherwise in a cgroup NAME made here in every hierarchy nspawn uses.
set -euo pipefail
action=$1 name=$2
shift 2
[[ $name =~ ^nfh-[A-Za-z0-9-]+$ ]] || { echo "nspawn.sh: bad name $name" >&2; exit 64; }

hierarchies() {
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo /sys/fs/cgroup
  else
    [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] && echo /sys/fs/cgroup/unified
    [ -d /sys/fs/cgroup/systemd ] && echo /sys/fs/cgroup/systemd
  fi
  return 0
}

case $action in
run)
  if [ -d /run/systemd/system ]; then
    exec systemd-run --quiet --scope --collect -p Delegate=yes --unit="$name" -- \
      systemd-nspawn --boot --register=no --keep-unit --machine="$name" "$@"
  fi
  for h in $(hierarchies); do
    mkdir -p "$h/$name"
    echo $$ >"$h/$name/cgroup.procs"
  done
  exec systemd-nspawn --boot --register=no --keep-unit --machine="$name" "$@"
  ;;
cleanup)
  if [ -d /run/systemd/system ]; then
    systemctl kill -s SIGKILL "$name.scope" >/dev/null 2>&1 || true
    systemctl stop "$name.scope" >/dev/null 2>&1 || true
    exit 0
  fi
  for h in $(hierarchies); do
    [ -d "$h/$name" ] || continue
    # Anything still inside (the container was killed hard): kill it, then remove leaves first.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(find "$h/$name" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
      [ -z "$pids" ] && break
      kill -KILL $pids 2>/dev/null || true
      sleep 0.2
    done
    find "$h/$name" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$h/$name" ] && { echo "nspawn.sh: could not remove $h/$name" >&2; exit 1; }
  done
  exit 0
  ;;
*)
  echo "usage: nspawn.sh run|cleanup NAME [options]" >&2
  exit 64
  ;;
esac
