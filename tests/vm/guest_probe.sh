#!/bin/bash
# Probe what a memguard cgroup v2 test needs inside the virtme-ng guest (see NOTES.md).
# Run it in the guest as root, e.g. from /work/main:
#   .venv/bin/python testing/run_in_vm.py --rwdir /tmp/vm-results -- bash tests/vm/guest_probe.sh
# Prints sections and "OK:"/"FAIL:" lines; exits 1 if any check failed.  Removes the
# cgroups, mount, RAM disk and files it creates.
set -u

CG=/sys/fs/cgroup
PARENT=$CG/memguard-test-x
LEAF=$PARENT/leaf
MNT=/run/memguard-probe-mnt
PROJECT=${MEMGUARD_PROJECT:-/work/main}
failures=0
oks=0

ok() { echo "OK: $*"; oks=$((oks + 1)); }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
section() { echo; echo "=== $*"; }
check() { # check DESCRIPTION CMD...: OK if CMD succeeds
    local what=$1; shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

cleanup() {
    exec 7>&- 2>/dev/null
    [ -n "${SLEEPER:-}" ] && kill "$SLEEPER" 2>/dev/null
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT"; fi
    rmdir "$MNT" 2>/dev/null
    grep -q '^brd ' /proc/modules && rmmod brd
    for cg in "$LEAF" "$PARENT"; do
        if [ -d "$cg" ]; then
            # Move stragglers to the root so the directories can go.
            while read -r pid; do echo "$pid" > "$CG/cgroup.procs" 2>/dev/null; done \
                < "$cg/cgroup.procs"
            rmdir "$cg" || echo "WARN: could not remove $cg"
        fi
    done
}
trap cleanup EXIT

section "kernel"
uname -r
uname -a

section "cgroup mounts (mount | grep cgroup)"
mount | grep cgroup
if mount | grep -q ' type cgroup '; then
    fail "a cgroup v1 hierarchy is mounted"
else
    ok "no cgroup v1 hierarchy mounted (cgroup2 only)"
fi
echo "--- /proc/cgroups (hierarchy 0 = not bound to a v1 hierarchy)"
cat /proc/cgroups
if awk '$1 == "memory" && $2 == 0 && $4 == 1 { found = 1 } END { exit !found }' /proc/cgroups
then
    ok "memory controller enabled and not on a v1 hierarchy"
else
    fail "memory controller bound to v1 or disabled"
fi
echo "--- /proc/self/cgroup"
cat /proc/self/cgroup

section "root cgroup"
echo "cgroup.controllers:      $(cat $CG/cgroup.controllers)"
echo "cgroup.subtree_control:  '$(cat $CG/cgroup.subtree_control)' (before)"
echo "cgroup.procs count:      $(wc -l < $CG/cgroup.procs)"
echo "children: $(find $CG -mindepth 1 -maxdepth 1 -type d -printf '%f ' | sort)"
check "memory in root cgroup.controllers" grep -qw memory $CG/cgroup.controllers
check "root memory.pressure exists" test -e $CG/memory.pressure
check "root memory.stat exists" test -e $CG/memory.stat

section "delegation: child cgroup with the memory controller"
# Root may hold processes and still enable controllers (it is exempt from the
# no-internal-processes rule); a non-root parent must have no processes of its own.
check "echo +memory > root cgroup.subtree_control" \
    sh -c "echo +memory > $CG/cgroup.subtree_control"
echo "root cgroup.subtree_control: '$(cat $CG/cgroup.subtree_control)' (after)"
check "mkdir $PARENT" mkdir "$PARENT"
echo "$PARENT/cgroup.controllers: $(cat "$PARENT/cgroup.controllers")"
check "memory.max exists in $PARENT" test -e "$PARENT/memory.max"
check "echo +memory > $PARENT/cgroup.subtree_control (empty parent)" \
    sh -c "echo +memory > $PARENT/cgroup.subtree_control"
check "mkdir $LEAF" mkdir "$LEAF"
echo "$LEAF/cgroup.controllers: $(cat "$LEAF/cgroup.controllers")"
for cg in "$PARENT" "$LEAF"; do
    check "set $cg/memory.max = 256M" sh -c "echo 256M > $cg/memory.max"
    echo "  memory.max=$(cat "$cg/memory.max")"
    for file in memory.current memory.events memory.pressure memory.stat memory.high \
        memory.swap.max memory.reclaim memory.oom.group cgroup.kill cgroup.events; do
        if [ -e "$cg/$file" ]; then ok "$cg/$file exists"; else fail "$cg/$file missing"; fi
    done
    echo "  memory.current=$(cat "$cg/memory.current")"
    echo "  memory.events: $(tr '\n' ' ' < "$cg/memory.events")"
    echo "  memory.pressure: $(tr '\n' ' ' < "$cg/memory.pressure")"
done
# A parent with a process cannot enable controllers for children (EBUSY) and vice versa.
# Not a job of this shell (bash would print "Killed" when cgroup.kill hits it).
SLEEPER=$(sh -c 'sleep 300 >/dev/null 2>&1 & echo $!')
if echo "$SLEEPER" > "$PARENT/cgroup.procs" 2>/dev/null; then
    echo "NOTE: moving a process into $PARENT (which has +memory in subtree_control) worked"
else
    ok "no-internal-processes rule: cannot move a process into $PARENT (subtree_control +memory)"
fi
check "move a process into the leaf" sh -c "echo $SLEEPER > $LEAF/cgroup.procs"
grep -q "$SLEEPER" "$LEAF/cgroup.procs" && echo "  leaf cgroup.procs: $(cat "$LEAF/cgroup.procs")"
echo "  leaf memory.current with a sleep in it: $(cat "$LEAF/memory.current")"

section "PSI trigger on $LEAF/memory.pressure"
# bash: one write(2) of the trigger on an fd that stays open.
if exec 7<>"$LEAF/memory.pressure" && printf 'some 150000 1000000' >&7; then
    ok "wrote trigger 'some 150000 1000000' to memory.pressure (fd 7 kept open)"
    ls -l /proc/$$/fd/7
else
    fail "write PSI trigger from bash"
fi
# python: register, poll(POLLPRI) once (no pressure: expect no event), close.
python3 - "$LEAF/memory.pressure" <<'EOF'
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)
os.write(fd, b"some 150000 1000000\0")
poller = select.poll()
poller.register(fd, select.POLLPRI)
print("OK: python PSI trigger registered; poll(200 ms) ->", poller.poll(200))
os.close(fd)
EOF
[ $? -eq 0 ] && oks=$((oks + 1)) || fail "python PSI trigger"

section "cgroup.kill and memory.reclaim"
check "echo 1 > $LEAF/cgroup.kill" sh -c "echo 1 > $LEAF/cgroup.kill"
alive() { [ -e "/proc/$1" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
for _ in 1 2 3 4 5 6 7 8 9 10; do alive "$SLEEPER" || break; sleep 0.2; done
if alive "$SLEEPER"; then fail "the sleep in the leaf survived cgroup.kill"; else
    ok "the sleep in the leaf is gone after cgroup.kill"; fi
check "leaf empty after cgroup.kill" test -z "$(cat "$LEAF/cgroup.procs")"
# memory.reclaim on a cgroup with nothing to reclaim fails (EAGAIN): a note, not a failure.
python3 - "$LEAF/memory.reclaim" <<'PY'
import sys
try:
    with open(sys.argv[1], "w") as f:
        f.write("1M")
    print("NOTE: memory.reclaim 1M on the empty leaf succeeded")
except OSError as e:
    print(f"NOTE: memory.reclaim 1M on the empty leaf fails: {e!r}")
PY

section "page cache on ext4 over brd (/dev/ram0), charged to $LEAF"
check "modprobe brd rd_nr=1 rd_size=262144 (256 MiB)" modprobe brd rd_nr=1 rd_size=262144
ls -l /dev/ram0 2>&1
check "modprobe ext4" modprobe ext4
check "mkfs.ext4 -q /dev/ram0" mkfs.ext4 -q -F /dev/ram0
mkdir -p "$MNT"
check "mount -t ext4 /dev/ram0 $MNT" mount -t ext4 /dev/ram0 "$MNT"
mount | grep "$MNT"
file_before=$(awk '$1 == "file" { print $2 }' "$LEAF/memory.stat")
echo "  leaf memory.stat file before: $file_before"
# dd runs inside the leaf: its page cache is charged there.
sh -c "echo \$\$ > $LEAF/cgroup.procs && exec dd if=/dev/zero of=$MNT/pagecache bs=1M count=64 status=none"
file_after=$(awk '$1 == "file" { print $2 }' "$LEAF/memory.stat")
echo "  leaf memory.stat file after dd 64 MiB: $file_after ($((file_after / 1048576)) MiB)"
echo "  leaf memory.current: $(cat "$LEAF/memory.current")"
grep -E '^(file|file_dirty|file_writeback|active_file|inactive_file|anon) ' "$LEAF/memory.stat" \
    | sed 's/^/  /'
if [ "$file_after" -ge $((60 * 1048576)) ]; then
    ok "~64 MiB page cache charged to the leaf"
else
    fail "page cache not charged (file=$file_after)"
fi
sync
echo 1 > /proc/sys/vm/drop_caches
echo "  after drop_caches: file=$(awk '$1 == "file" { print $2 }' "$LEAF/memory.stat")"
sh -c "echo \$\$ > $LEAF/cgroup.procs && exec cat $MNT/pagecache > /dev/null"
reread=$(awk '$1 == "file" { print $2 }' "$LEAF/memory.stat")
echo "  after re-reading the file from the leaf: file=$reread"
if [ "$reread" -ge $((60 * 1048576)) ]; then ok "re-read page cache charged"; else fail "re-read"; fi
check "memory.reclaim 32M drops page cache" sh -c "echo 32M > $LEAF/memory.reclaim"
echo "  after memory.reclaim 32M: file=$(awk '$1 == "file" { print $2 }' "$LEAF/memory.stat")"

section "python in the guest"
echo "PATH=$PATH"
echo "python3 is $(command -v python3)"
if python3 -c 'import sys; print(" ", sys.executable, sys.version.split()[0])'; then
    ok "python3 runs"
else
    fail "python3 runs"
fi
VENV_PY=$PROJECT/.venv/bin/python
echo "$VENV_PY -> $(readlink -f "$VENV_PY")"
if (cd "$PROJECT" && PYTHONDONTWRITEBYTECODE=1 "$VENV_PY" -c '
import sys, trio, memguard, memguard._native as native
print(" ", sys.executable, sys.version.split()[0], "trio", trio.__version__)
print("  memguard._native from", native.__file__)
print("  ffi/lib:", [n for n in dir(native) if not n.startswith("__")])
'); then
    ok "venv python imports trio and memguard._native"
else
    fail "venv python imports trio and memguard._native"
fi

section "guest size"
echo "nproc: $(nproc)"
free -m
echo "swap: $(swapon --show --noheadings 2>/dev/null | wc -l) devices"

echo
echo "probe: $oks ok, $failures failed"
[ "$failures" -eq 0 ]
