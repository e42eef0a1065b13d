#!/usr/bin/env bash
# Build the Debian package linkwatch_<version>-<revision>_<arch>.deb from this repository with
# Debian's tooling (dpkg-buildpackage, debhelper, dh-virtualenv): natively for this machine's
# architecture (amd64, arm64 or armhf: on the Pi itself or a machine of the same arch), or with
# --arch for a Raspberry Pi in an emulated Debian 12 root on an amd64 machine.
#
#   scripts/build-deb.sh [--out DIR] [--committed] [--arch arm64|armhf]
#     --out DIR     where the .deb is copied (default: dist/)
#     --committed   build what HEAD holds (git archive) instead of the working tree (the tracked
#                   files plus untracked ones that .gitignore does not exclude)
#     --arch ARCH   build in a Debian 12 (bookworm) root of that architecture run under qemu-user
#                   (needs root, debootstrap, qemu-user-static and binfmt-support; about 3x slower).
#                   The root is debootstrapped once with the build dependencies and cached as a
#                   tarball under .cache/deb-build/ (or $LINKWATCH_DEB_BUILD_CACHE); each build
#                   unpacks a fresh copy, mounts /proc and /dev in it (always unmounted at the end)
#                   and runs the same dpkg-buildpackage there, with pip's cache for that arch kept
#                   in pip-<arch>/ beside the tarball. On armhf, cffi has no wheel on PyPI and is
#                   compiled in the root (gcc, libffi-dev; cryptography has an armv7l wheel).
#
# The build tree is a copy of the repository in a temporary directory with packaging/debian as
# debian/. Missing build dependencies are installed with apt-get (needs root). pip fetches the
# Python dependencies from PyPI (or the index in pip.conf, e.g. piwheels on Raspberry Pi OS).
# Build logs go to stderr; the last line on stdout is the path of the .deb.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/dist
committed=0
arch=
while (($#)); do
    case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --committed) committed=1; shift ;;
    --arch) arch=${2:?--arch needs arm64 or armhf}; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "build-deb: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "build-deb: $*" >&2; exit 1; }
command -v git >/dev/null || die "git is needed (apt-get install git)"
command -v dpkg-buildpackage >/dev/null || die "dpkg-buildpackage is needed (apt-get install dpkg-dev)"
git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$repo is not a git checkout"

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$repo/pyproject.toml")
deb_version=$(dpkg-parsechangelog -l "$repo/packaging/debian/changelog" -S Version)
[ "${deb_version%-*}" = "$version" ] || die "pyproject.toml has version $version but" \
    "packaging/debian/changelog has $deb_version: add a changelog entry for $version-1"

native=$(dpkg --print-architecture)
[ "$arch" = "$native" ] && arch=
if [ -n "$arch" ]; then
    # shellcheck source=scripts/emulated-root.sh
    . "$repo/scripts/emulated-root.sh"
    emu_check "$arch" || exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/linkwatch-deb.XXXXXX")
cleanup() {
    if [ -n "$arch" ]; then emu_release "$work/root"; fi
    if [ -n "$arch" ] && [ -n "$(emu_mounts "$work")" ]; then
        echo "build-deb: left $work in place: still mounted: $(emu_mounts "$work")" >&2
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ -n "$arch" ]; then
    mkdir -p "$work/root/build"
    src=$work/root/build/linkwatch-$version
else
    src=$work/linkwatch-$version
fi
mkdir "$src"

if [ "$committed" = 1 ]; then
    git -C "$repo" archive --format=tar HEAD | tar -x -C "$src"
else
    # Tracked and untracked-but-not-ignored files that exist (a deleted tracked file is skipped).
    git -C "$repo" ls-files -z --cached --others --exclude-standard --deduplicate |
        (cd "$repo" && while IFS= read -r -d '' f; do
            if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done) |
        tar -C "$repo" --null -T - -c | tar -x -C "$src"
fi
[ -f "$src/packaging/debian/control" ] || die "packaging/debian is missing from the build tree"
rm -rf "$src/debian"
cp -a "$src/packaging/debian" "$src/debian"

if [ -n "$arch" ]; then
    emu_build "$arch" "$work/root" "/build/linkwatch-$version" "${LINKWATCH_DEB_BUILD_CACHE:-$repo/.cache/deb-build}"
    deb=$work/root/build/linkwatch_${deb_version}_${arch}.deb
    [ -f "$deb" ] || die "dpkg-buildpackage did not produce $deb"
    mkdir -p "$out"
    cp "$deb" "$out/"
    echo "$(cd "$out" && pwd)/$(basename "$deb")"
    exit 0
fi

cd "$src"
if ! dpkg-checkbuilddeps >/dev/null 2>&1; then
    missing=$( (dpkg-checkbuilddeps 2>&1 || true) | sed -n 's/.*Unmet build dependencies: //p')
    [ "$(id -u)" = 0 ] || die "missing build dependencies: $missing (run as root to install them)"
    echo "build-deb: installing build dependencies: $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get build-dep -y -q "$src" >&2; then
        apt-get update -q >&2
        apt-get build-dep -y -q "$src" >&2
    fi
fi

echo "build-deb: building linkwatch $deb_version in $src" >&2
dpkg-buildpackage -us -uc -b >&2

deb=$work/linkwatch_${deb_version}_$(dpkg-architecture -qDEB_HOST_ARCH).deb
[ -f "$deb" ] || die "dpkg-buildpackage did not produce $deb"
mkdir -p "$out"
cp "$deb" "$out/"
echo "$(cd "$out" && pwd)/$(basename "$deb")"
