#!/bin/bash
# vm.sh (run by `cargo xtask kernels`; the verified recipe kernel-vm.sh):
# boot a Debian kernel .deb under QEMU with the host's root filesystem shared
# read-only (9p) under a tmpfs overlay, run one command in the guest, print
# its output and return its exit status.
#
# usage: vm.sh [options] KERNEL -- COMMAND [ARGS...]
#   KERNEL   a linux-image-*.deb file, or a Debian suite name (bookworm,
#            bullseye, ...) whose linux-image-amd64 is fetched with apt into the
#            cache (a private sources list; the system's apt config is untouched)
#   COMMAND  run in the guest as root through /bin/sh, in the current directory
#            (same path in the guest), with the caller's PATH
# options:
#   --rw DIR       share host DIR read-write at the same path (repeatable);
#                  everything else is a throw-away overlay
#   --cgroup MODE  v2 (default: cgroup2 on /sys/fs/cgroup), hybrid (v1
#                  controllers on /sys/fs/cgroup/<c>, cgroup2 on
#                  /sys/fs/cgroup/unified, like systemd's hybrid mode), none
#   --accel A      kvm, tcg or auto (default; kvm only if /dev/kvm is a real
#                  VMX/SVM KVM, not kvm-pvm, which cannot run stock kernels)
#   --timeout S    kill the VM after S seconds (default 600, per boot), exit 124
#   --boot-tries N boot again a guest whose kernel died before the command
#                  started, up to N boots in all (default 2; 1: never again)
#   --keep-log     print where the guest kernel log is kept
#   --console-log FILE
#                  if the run fails, keep the guest's whole kernel log in FILE
#                  (the report printed on failure is bounded)
# environment: WEIR_KERNEL_CACHE (default /var/cache/weir-kernels),
#   VM_ROOT (host dir shared as guest root, default /), VM_MEM (default 2G),
#   VM_CPUS (default 2), DEBIAN_MIRROR (default: taken from the system's apt
#   sources), QEMU (default qemu-system-x86_64), BUSYBOX (a static busybox,
#   default: busybox in PATH)
# exit status: the command's, or 124 on timeout, 125 if the guest never
#   reported one (boot failure: see the kernel log it names).
# needs: root, qemu-system-x86, busybox-static, kmod (depmod, modprobe), cpio,
#   util-linux (flock), xz-utils/zstd for compressed modules (trixie on).
set -euo pipefail
shopt -s inherit_errexit

CACHE=${WEIR_KERNEL_CACHE:-/var/cache/weir-kernels}
VM_ROOT=${VM_ROOT:-/}
VM_MEM=${VM_MEM:-2G}
VM_CPUS=${VM_CPUS:-2}
QEMU=${QEMU:-qemu-system-x86_64}
ACCEL=auto CGROUP=v2 TIMEOUT=600 KEEP_LOG=0 CONSOLE_COPY= BOOT_TRIES=2
RW=()

die() { echo "vm.sh: $*" >&2; exit 125; }
log() { echo "vm.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --rw) RW+=("$(realpath "$2")"); shift 2 ;;
    --cgroup) CGROUP=$2; shift 2 ;;
    --accel) ACCEL=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep-log) KEEP_LOG=1; shift ;;
    --console-log) CONSOLE_COPY=$2; shift 2 ;;
    --boot-tries) BOOT_TRIES=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) [ -z "${KERNEL:-}" ] || die "one kernel only"; KERNEL=$1; shift ;;
  esac
done
[ -n "${KERNEL:-}" ] || die "no kernel given (a .deb or a suite name)"
[ $# -gt 0 ] || die "no command given (after --)"
case $CGROUP in v2|hybrid|none) ;; *) die "--cgroup v2|hybrid|none" ;; esac
BUSYBOX=${BUSYBOX:-$(command -v busybox || true)}
[ -x "$BUSYBOX" ] || die "no busybox (apt-get install busybox-static)"
mkdir -p "$CACHE"

# --- the kernel package -----------------------------------------------------
mirror() {
  [ -n "${DEBIAN_MIRROR:-}" ] && { echo "$DEBIAN_MIRROR"; return; }
  # the first non-security Debian URI in the system's apt sources
  local m
  m=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{for(i=2;i<=NF;i++)print $i}'
         cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed 's/\[[^]]*\]//' | awk '/^deb /{print $2}'
       } | awk '/\/debian\/?$/ && !/security/{print; exit}' ) || true
  [ -n "$m" ] || die "no Debian mirror in apt sources; set DEBIAN_MIRROR"
  echo "${m%/}"
}

fetch_suite() {  # prints the path of the suite's linux-image .deb in the cache
  local suite=$1 m d a pkg
  m=$(mirror); d=$CACHE/apt-$suite
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  { echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m $suite main"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${m%/debian}/debian-security $suite-security main"
  } > "$d/sources.list"
  a=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root)
  # refresh the lists at most once a day
  if [ -z "$(find "$d/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
    apt-get "${a[@]}" -q update >&2 || die "apt-get update for $suite failed"
  fi
  pkg=$(apt-cache "${a[@]}" depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$pkg" ] || die "no linux-image-amd64 in $suite"
  if ! ls "$CACHE/${pkg}_"*.deb >/dev/null 2>&1; then
    (cd "$CACHE" && apt-get "${a[@]}" -q download "$pkg" >&2) || die "download of $pkg failed"
  fi
  ls -t "$CACHE/${pkg}_"*.deb | head -1
}

case $KERNEL in
  *.deb) DEB=$(realpath "$KERNEL") ;;
  *) DEB=$(fetch_suite "$KERNEL") ;;
esac
[ -f "$DEB" ] || die "no such file: $DEB"
PKG=$(dpkg-deb -f "$DEB" Package)
VER=$(dpkg-deb -f "$DEB" Version)
KDIR=$CACHE/$PKG-$VER

# --- extract the kernel, once per package version ----------------------------
exec 9> "$KDIR.lock"; flock 9   # concurrent runs: one extracts, the others wait
if [ ! -f "$KDIR/vmlinuz" ]; then
  log "extracting $DEB into $KDIR"
  rm -rf "$KDIR.tmp"; mkdir -p "$KDIR.tmp/root"
  dpkg-deb -x "$DEB" "$KDIR.tmp/root"
  # merged-/usr packages (trixie on) ship usr/lib/modules; depmod -b wants lib/modules
  [ -e "$KDIR.tmp/root/lib" ] || ln -s usr/lib "$KDIR.tmp/root/lib"
  KVER=$(ls "$KDIR.tmp/root/lib/modules" | head -1)
  depmod -b "$KDIR.tmp/root" "$KVER"
  cp "$KDIR.tmp/root/boot/vmlinuz-$KVER" "$KDIR.tmp/vmlinuz"
  echo "$KVER" > "$KDIR.tmp/kver"
  rm -rf "$KDIR"; mv "$KDIR.tmp" "$KDIR"
fi
KVER=$(cat "$KDIR/kver")

# --- a tiny initramfs (busybox, those modules, the init below), rebuilt when
# this script changes -----------------------------------------------------------
INITRD=$KDIR/initrd-$(sha1sum "$0" | cut -c1-12).img
if [ ! -f "$INITRD" ]; then
  rm -f "$KDIR"/initrd-*.img
  ir=$(mktemp -d); mkdir -p "$ir/bin" "$ir/mods" "$ir/dev" "$ir/proc" "$ir/sys"
  cp "$BUSYBOX" "$ir/bin/busybox"
  # modules for 9p over virtio and overlayfs, and the socket diagnostics a
  # node's modprobe would load on demand (weir resets sockets through them;
  # the guest has no modprobe for its kernel), in load order (builtins are
  # skipped)
  modprobe -d "$KDIR/root" -S "$KVER" --show-depends -a 9pnet_virtio 9p virtio_pci overlay \
    inet_diag tcp_diag \
    | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' | sed "s|^$KDIR/||" > "$KDIR/mods.list"
  # busybox insmod wants plain .ko files
  while read -r m; do
    m=$KDIR/$m
    b=$(basename "$m"); b=${b%.xz}; b=${b%.zst}; b=${b%.gz}
    case $m in
      *.xz) xz -dc "$m" > "$ir/mods/$b" ;;
      *.zst) zstd -qdc "$m" > "$ir/mods/$b" ;;
      *.gz) gzip -dc "$m" > "$ir/mods/$b" ;;
      *) cp "$m" "$ir/mods/$b" ;;
    esac
    echo "$b" >> "$ir/mods/order"
  done < "$KDIR/mods.list"
  cat > "$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
p9() { mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,$3 "$1" "$2"; }
fail() { echo "weir-vm: $*"; poweroff -f; }
mkdir -p /lower /rw /newroot
p9 root /lower ro,cache=loose || fail "cannot mount the 9p root"
mount -t tmpfs -o mode=755 rw /rw; mkdir -p /rw/upper /rw/work
if ! mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot; then
  echo "weir-vm: no overlay, read-only root with tmpfs on /tmp /run /var/tmp /root"
  mount --bind /lower /newroot
  for d in /tmp /var/tmp /root; do mount -t tmpfs tmpfs /newroot$d; done
fi
R=/newroot
# the kernel's module autoloading (e.g. "ip link add type bridge") runs
# /proc/sys/kernel/modprobe in this root: hand it to the guest root's modprobe
printf '#!/bin/busybox sh\nexec chroot /newroot /sbin/modprobe "$@"\n' > /modprobe
chmod +x /modprobe; echo /modprobe > /proc/sys/kernel/modprobe
mount -t proc proc $R/proc; mount -t sysfs sys $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm; mount -t devpts devpts $R/dev/pts; mount -t tmpfs shm $R/dev/shm
mount -t tmpfs -o mode=755 run $R/run; mount -t tmpfs -o mode=1777 tmp $R/tmp
mkdir -p $R/run/vmjob; p9 job $R/run/vmjob cache=none || fail "cannot mount the job dir"
KVER=$(uname -r); mkdir -p $R/lib/modules/$KVER; p9 modules $R/lib/modules/$KVER ro,cache=loose
while read -r tag dir; do mkdir -p $R$dir; p9 $tag $R$dir cache=mmap; done < $R/run/vmjob/mounts
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
mount -t bpf bpffs $R/sys/fs/bpf || echo "weir-vm: bpffs mount failed"
case $(cat $R/run/vmjob/cgroup) in
  v2) mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || echo "weir-vm: cgroup2 mount failed" ;;
  hybrid)
    mount -t tmpfs -o mode=755 cgroup $R/sys/fs/cgroup
    for c in cpuset cpu,cpuacct blkio memory devices freezer net_cls,net_prio perf_event hugetlb pids; do
      mkdir -p $R/sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup $R/sys/fs/cgroup/$c 2>/dev/null || rmdir $R/sys/fs/cgroup/$c
    done
    mkdir -p $R/sys/fs/cgroup/unified; mount -t cgroup2 cgroup2 $R/sys/fs/cgroup/unified || echo "weir-vm: cgroup2 mount failed" ;;
esac
ip link set lo up 2>/dev/null
stty -F /dev/ttyS1 raw -echo 2>/dev/null
echo "weir-vm: command starts at uptime $(cut -d' ' -f1 /proc/uptime)s"
chroot $R /bin/sh /run/vmjob/cmd.sh </dev/null >/dev/ttyS1 2>&1
echo $? > $R/run/vmjob/rc
echo "weir-vm: command done at uptime $(cut -d' ' -f1 /proc/uptime)s, exit $(cat $R/run/vmjob/rc)"
umount $R/run/vmjob; sync
poweroff -f
INIT
  chmod +x "$ir/init"
  (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  rm -rf "$ir"; mv "$INITRD.tmp" "$INITRD"
fi
exec 9>&-

# --- the job directory: command, mounts, exit status -------------------------
JOB=$(mktemp -d)
QPID=
cleanup() { [ -n "$QPID" ] && kill "$QPID" 2>/dev/null; [ "$KEEP_LOG" = 1 ] || rm -rf "$JOB"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
{
  echo "export PATH='${PATH//\'/\'\\\'\'}' HOME=/root TERM=dumb"
  printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$JOB/cmd.sh"
echo "$CGROUP" > "$JOB/cgroup"
: > "$JOB/mounts"
SHARES=(-virtfs "local,path=$VM_ROOT,mount_tag=root,security_model=none,readonly=on,multidevs=remap"
        -virtfs "local,path=$JOB,mount_tag=job,security_model=none"
        -virtfs "local,path=$KDIR/root/lib/modules/$KVER,mount_tag=modules,security_model=none,readonly=on")
i=0
for d in "${RW[@]}"; do
  echo "rw$i $d" >> "$JOB/mounts"
  SHARES+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
  i=$((i+1))
done

if [ "$ACCEL" = auto ]; then
  ACCEL=tcg
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qw -e vmx -e svm /proc/cpuinfo; then ACCEL=kvm; fi
fi
case $ACCEL in
  kvm) ACC=(-enable-kvm -cpu host) ;;
  tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;
  *) die "--accel kvm|tcg|auto" ;;
esac

log "$PKG $VER ($KVER), accel $ACCEL, cgroup $CGROUP"
# A panic prints a second trace after the first report, and a hung guest keeps
# printing lockup reports until it is killed, so the tail alone can miss how
# it started: show the first report (bounded), then the tail. A lockup or oops
# is looked for before a warning, which may be a harmless one printed earlier.
kernel_report() {
  local first
  first=$(grep -a -n -m1 -E 'Oops|BUG:|general protection|Kernel panic|INFO: rcu|INFO: task|watchdog:' "$JOB/console.log" | cut -d: -f1) ||
    first=$(grep -a -n -m1 -E 'WARNING:|RIP:' "$JOB/console.log" | cut -d: -f1) || true
  if [ -n "$first" ]; then
    log "kernel log from its first report (line $first):"
    sed -n "$((first > 5 ? first - 5 : 1)),$((first + 120))p" "$JOB/console.log" >&2
    log "kernel log tail:"; tail -10 "$JOB/console.log" >&2
  else
    log "kernel log tail:"; tail -30 "$JOB/console.log" >&2
  fi
}
# One boot: QRC is QEMU's status, the guest's own lines go to stderr.
boot() {
  rm -f "$JOB/console.log"
  local start end
  start=$(date +%s.%N)
  # ttyS0: kernel console -> $JOB/console.log; ttyS1: the command's output -> stdout.
  # loglevel=5: warnings reach the console. A soft lockup's registers and stack
  # are printed at the default level (warning), so loglevel=4 showed only its
  # one-line "BUG:"; softlockup_all_cpu_backtrace adds every CPU's stack.
  timeout --foreground -k 5 "$TIMEOUT" "$QEMU" "${ACC[@]}" -m "$VM_MEM" -smp "$VM_CPUS" \
    -machine pc -nodefaults -no-reboot -display none -monitor none \
    -kernel "$KDIR/vmlinuz" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 oops=panic loglevel=5 softlockup_all_cpu_backtrace=1 rdinit=/init" \
    -serial "file:$JOB/console.log" -chardev stdio,id=out,signal=off -serial chardev:out \
    "${SHARES[@]}" </dev/null &
  QPID=$!
  set +e; wait $QPID; QRC=$?; set -e; QPID=
  end=$(date +%s.%N)
  touch "$JOB/console.log"
  grep -a '^weir-vm:' "$JOB/console.log" >&2 || true
  log "VM wall time $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')s"
}
# A kernel that dies while booting, before the command starts, is booted again
# (up to BOOT_TRIES boots): nothing of the command ran, so nothing is repeated.
# Emulated (TCG) guests with two CPUs sometimes do: a 6.12 guest died on an
# int3 left by the kernel's own boot-time code patching (sched_init_debug).
case $BOOT_TRIES in ''|*[!0-9]*|0) die "--boot-tries takes a count of boots, 1 or more (got '$BOOT_TRIES')" ;; esac
[ -z "$CONSOLE_COPY" ] || rm -f "$CONSOLE_COPY".boot*
n=1
while :; do
  boot
  if [ "$QRC" = 0 ] && [ ! -s "$JOB/rc" ] &&
     ! grep -aq '^weir-vm: command starts' "$JOB/console.log" && [ "$n" -lt "$BOOT_TRIES" ]; then
    log "the guest's kernel died while booting, before the command started (boot $n of $BOOT_TRIES)"
    kernel_report
    if [ -n "$CONSOLE_COPY" ]; then
      cp "$JOB/console.log" "$CONSOLE_COPY.boot$n" && log "its whole kernel log: $CONSOLE_COPY.boot$n"
    fi
    log "booting the guest again"
    n=$((n + 1))
    continue
  fi
  break
done
if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
  log "timed out after ${TIMEOUT}s"; kernel_report; RC=124
elif [ -s "$JOB/rc" ]; then
  RC=$(cat "$JOB/rc")
else
  log "the guest reported no exit status"; kernel_report; RC=125
fi
if [ -n "$CONSOLE_COPY" ]; then
  if [ "$RC" != 0 ]; then
    cp "$JOB/console.log" "$CONSOLE_COPY" && log "whole kernel log: $CONSOLE_COPY"
  else
    rm -f "$CONSOLE_COPY"
  fi
fi
if [ "$KEEP_LOG" = 1 ]; then log "kernel log: $JOB/console.log"; fi
exit "$RC"
