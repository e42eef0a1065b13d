# Helpers for a Debian 12 root of a foreign architecture (arm64, armhf) run under qemu-user:
# sourced by scripts/build-deb.sh (--arch). Needs root, debootstrap, qemu-user-static and
# binfmt-support (scripts/bootstrap.sh --test-tools installs them).
#
# The qemu interpreters are registered with binfmt_misc's F flag (Debian's qemu-user-static does
# that), so the kernel runs the root's binaries without a copy of qemu inside the root.

EMU_SUITE=bookworm
EMU_MIRROR=http://deb.debian.org/debian
# What the build root holds beyond minbase: the package's Build-Depends (packaging/debian/control)
# and build-essential, which dpkg-buildpackage always wants. Missing ones are still installed by
# apt-get build-dep at build time (slower: a later run rebuilds the tarball if this list changes).
EMU_BUILD_INCLUDE=build-essential,ca-certificates,debhelper,dh-virtualenv,libffi-dev,python3-dev,python3-venv
EMU_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8
         DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/ssl/certs/ca-certificates.crt)

emu_log() { echo "emulated-root: $*" >&2; }

# The binfmt_misc entry that runs ARCH's binaries.
emu_binfmt_name() {
    case "$1" in
    arm64) echo qemu-aarch64 ;;
    armhf) echo qemu-arm ;;
    *) return 1 ;;
    esac
}

# Check (and where it can, prepare) that this machine runs ARCH's binaries; say what is missing.
emu_check() {
    local arch=$1 name entry=/proc/sys/fs/binfmt_misc
    name=$(emu_binfmt_name "$arch") || { emu_log "--arch $arch: only arm64 and armhf are supported"; return 1; }
    [ "$(id -u)" = 0 ] || { emu_log "--arch $arch needs root (debootstrap, chroot, mount)"; return 1; }
    command -v debootstrap >/dev/null || { emu_log "debootstrap is missing: apt-get install debootstrap"; return 1; }
    if [ ! -e /usr/libexec/qemu-binfmt/"${name#qemu-}"-binfmt-P ] && [ ! -x /usr/bin/"$name"-static ]; then
        emu_log "qemu-user-static is missing: apt-get install qemu-user-static binfmt-support"
        return 1
    fi
    if [ ! -e "$entry/register" ]; then
        mount -t binfmt_misc binfmt_misc "$entry" 2>/dev/null || {
            emu_log "binfmt_misc is not mounted and could not be: mount -t binfmt_misc binfmt_misc $entry"
            return 1
        }
    fi
    if [ ! -e "$entry/$name" ] && command -v update-binfmts >/dev/null; then
        update-binfmts --enable "$name" >/dev/null 2>&1 || true
    fi
    if ! grep -qx enabled "$entry/$name" 2>/dev/null; then
        emu_log "the $name interpreter is not registered with binfmt_misc: apt-get install binfmt-support" \
            "qemu-user-static, then update-binfmts --enable $name"
        return 1
    fi
    if ! grep -q '^flags:.*F' "$entry/$name"; then
        emu_log "$name is registered without the F (fix-binary) flag: a chroot cannot run it"
        return 1
    fi
}

# The cached build root of ARCH (a tarball under CACHE), debootstrapped once.
emu_build_tarball() {
    local arch=$1 cache=$2 hash tarball tree
    hash=$(printf '%s' "$EMU_BUILD_INCLUDE" | sha256sum | cut -c1-8)
    tarball=$cache/$EMU_SUITE-build-$hash-$arch.tar
    if [ ! -f "$tarball" ]; then
        mkdir -p "$cache"
        tree=$cache/$EMU_SUITE-build-$hash-$arch.tree
        [ -z "$(emu_mounts "$tree")" ] || { emu_log "$tree is still mounted: $(emu_mounts "$tree")"; return 1; }
        rm -rf --one-file-system "$tree"
        emu_log "debootstrapping the $arch build root (once; several minutes under emulation)"
        debootstrap --variant=minbase --arch="$arch" --include="$EMU_BUILD_INCLUDE" \
            "$EMU_SUITE" "$tree" "$EMU_MIRROR" >&2 || { rm -rf --one-file-system "$tree"; return 1; }
        rm -f "$tree"/var/cache/apt/archives/*.deb
        tar -C "$tree" --numeric-owner -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
        rm -rf --one-file-system "$tree"
    fi
    echo "$tarball"
}

# Mount points at or below DIR, deepest last.
emu_mounts() {
    local dir
    dir=$(realpath -m "$1")
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo
}

# Kill what still runs inside ROOT (by pid) and unmount everything below it.
emu_release() {
    local root=$1 pid real m
    [ -d "$root" ] || return 0
    real=$(realpath "$root")
    for pid in /proc/[0-9]*; do
        if [ "$(readlink "$pid/root" 2>/dev/null)" = "$real" ]; then kill -9 "${pid#/proc/}" 2>/dev/null || true; fi
    done
    for m in $(emu_mounts "$root" | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || emu_log "could not unmount $m"
    done
}

# Unpack a fresh build root for ARCH at ROOT (which already holds the source tree at SRC, a path
# inside the root) and run dpkg-buildpackage there. CACHE keeps the root tarball and pip's cache.
emu_build() {
    local arch=$1 root=$2 src=$3 cache=$4 tarball t0
    t0=$(date +%s)
    tarball=$(emu_build_tarball "$arch" "$cache") || return 1
    tar -C "$root" --numeric-owner -xpf "$tarball"
    # pip inside the root must trust what this machine trusts (a proxy's CA, say)
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mkdir -p "$cache/pip-$arch" "$root/root/.cache/pip"
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    mount --bind "$cache/pip-$arch" "$root/root/.cache/pip"
    emu_log "$arch root ready after $(($(date +%s) - t0)) s; building"
    chroot "$root" /usr/bin/env -i "${EMU_ENV[@]}" /bin/sh -ec "
        cd $src
        if ! dpkg-checkbuilddeps >/dev/null 2>&1; then
            apt-get update -q && apt-get build-dep -y -q .
        fi
        dpkg-buildpackage -us -uc -b" >&2
    emu_log "$arch package built in $(($(date +%s) - t0)) s"
}
