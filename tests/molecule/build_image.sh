#!/bin/sh
# Build the local systemd image every molecule scenario of this project runs in (offline: the CI
# machine reaches no container registry). Debian bookworm minbase with systemd as PID 1, cron, Python 3, sudo and
# git, imported into the local Docker engine. Does nothing when the image already exists.
#   tests/molecule/build_image.sh [NAME:TAG]      (default autotune-systemd:bookworm)
# Needs root, debootstrap and a Debian mirror (AUTOTUNE_DEBIAN_MIRROR, default deb.debian.org).
# Containers of it run unprivileged with (stop signal SIGRTMIN+3 is what systemd expects;
# `docker import` of Docker 20.10 cannot set STOPSIGNAL, so the molecule platform sets it):
#   --tmpfs /run --tmpfs /run/lock -v /sys/fs/cgroup:/sys/fs/cgroup:ro --stop-signal SIGRTMIN+3
set -eu
IMAGE=${1:-${AUTOTUNE_MOLECULE_IMAGE:-autotune-systemd:bookworm}}
MIRROR=${AUTOTUNE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,cron,python3,python3-apt,sudo,git,ca-certificates,procps

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "image $IMAGE already present"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }

ROOT=$(mktemp -d /tmp/autotune-systemd-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
    tail -n 30 "$ROOT.log" >&2
    exit 1
}
rm -f "$ROOT.log"

# A container has no consoles, no udev and no hardware clock: mask the units that would fail or
# wait for them, so `systemctl is-system-running` reports running.
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
    systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-remount-fs.service \
    systemd-firstboot.service sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    dev-hugepages.mount systemd-modules-load.service; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
# The image is minimal: no apt caches, no documentation.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/*
: >"$ROOT/etc/machine-id"

tar -C "$ROOT" -c . | docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/lib/systemd/systemd"]' \
    - "$IMAGE"
echo "built $IMAGE"
