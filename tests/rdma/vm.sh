#!/usr/bin/env bash
# Runs a shell script inside a QEMU VM that has a real RDMA device: Soft-RoCE
# (rdma_rxe) as device rxe0 on the VM's virtio NIC. This machine's kernel has no RDMA,
# Debian's kernel does, so we boot /boot/vmlinuz-* under TCG with a tiny busybox
# initramfs, share the host's root read-only over 9p and chroot into it: the guest
# sees the host's libraries, rdma-core and our build tree.
#
# usage: tests/rdma/vm.sh SCRIPT [WORKDIR]
#   SCRIPT runs under /bin/sh in the chroot, from WORKDIR (default: the current
#   directory), with /tmp writable. Its output is printed here; its exit status
#   becomes ours. Requires qemu-system-x86, linux-image-amd64, busybox-static,
#   rdma-core (scripts/setup.sh installs them).
set -euo pipefail

script=${1:?usage: vm.sh SCRIPT [WORKDIR]}
workdir=$(realpath "${2:-$PWD}")
[ -r "$script" ] || { echo "vm.sh: cannot read $script" >&2; exit 2; }

kernel=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] || { echo "vm.sh: no /boot/vmlinuz-*-amd64 (install linux-image-amd64)" >&2; exit 2; }
kver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$kver
busybox=$(command -v busybox) || { echo "vm.sh: busybox not found (install busybox-static)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"/{bin,mod,proc,sys,dev,mnt/host}
cp "$busybox" "$root/bin/busybox"

# Load order matters: each module after the ones it depends on.
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci crc32_generic
failover net_failover virtio_net netfs fscache 9pnet 9pnet_virtio 9p ib_core ib_uverbs
udp_tunnel ip6_udp_tunnel rdma_rxe overlay"
for m in $modules; do
  f=$(find "$moddir" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "vm.sh: module $m missing in $moddir" >&2; exit 2; }
  case "$f" in
    *.xz) xz -dc "$f" > "$root/mod/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$root/mod/$m.ko" ;;
    *) cp "$f" "$root/mod/$m.ko" ;;
  esac
done
cp "$script" "$root/cmd.sh"
printf '%s\n' "$workdir" > "$root/workdir"

cat > "$root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(echo $modules); do insmod /mod/\$m.ko || echo "vm: insmod \$m failed"; done
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /mnt/host
h=/mnt/host
mount -t proc proc \$h/proc; mount -t sysfs sys \$h/sys; mount -t devtmpfs dev \$h/dev
# /tmp stays the host's (a build may live there) with writes going to memory.
mkdir -p /ovl; mount -t tmpfs ovl /ovl; mkdir -p /ovl/up /ovl/work
mount -t overlay overlay -o lowerdir=\$h/tmp,upperdir=/ovl/up,workdir=/ovl/work \$h/tmp || echo "vm: overlay on /tmp failed"
mount -t tmpfs run \$h/run
cp /cmd.sh \$h/tmp/tandem-vm-cmd.sh
echo "vm: booted, running the script"
chroot \$h /bin/sh -c "rdma link add rxe0 type rxe netdev eth0 && cd \$(cat /workdir) && /bin/sh /tmp/tandem-vm-cmd.sh"
echo "TANDEM_VM_EXIT=\$?"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/initrd.gz"

log=$tmp/console.log
timeout "${TANDEM_VM_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -cpu max -m "${TANDEM_VM_MEM:-2048}" -smp 2 \
  -nographic -no-reboot -kernel "$kernel" -initrd "$tmp/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on \
  -nic user,model=virtio-net-pci > "$log" 2>&1 </dev/null || true
# The console has the script's output; print it without the kernel's boot chatter.
sed -n '/^vm: booted/,$p' "$log" | tr -d '\r' | grep -v -e '^TANDEM_VM_EXIT=' -e '^\[ *[0-9.]*\] ' || true
code=$(tr -d '\r' < "$log" | sed -n 's/^TANDEM_VM_EXIT=\([0-9]*\).*/\1/p' | tail -1)
if [ -z "$code" ]; then
  echo "vm.sh: the VM did not finish the script; last console lines:" >&2
  tail -30 "$log" | tr -d '\r' >&2
  exit 1
fi
exit "$code"
