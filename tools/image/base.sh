#!/usr/bin/env bash
# Makes BASE, a local image laid out like python:3.10-slim-bookworm, for
# building the Dockerfile where no image registry is reachable:
#
#   tools/image/base.sh BASE PYTHON310
#
# Debian bookworm (minbase) from debootstrap, the shared libraries the given
# CPython 3.10's extension modules link against (from Debian, by package),
# and that CPython itself copied to /usr/local as the official image has it
# (/usr/local/bin/python3.10, libpython3.10.so in /usr/local/lib), without
# its site-packages and test suite; pip and setuptools from its ensurepip.
# Debian bookworm ships Python 3.11, and the lock (requirements.txt) is for
# 3.10, so the interpreter comes from this machine (the one `make setup`
# uses: same glibc, as this machine is bookworm too).
set -euo pipefail

base=${1:?usage: $0 BASE PYTHON310}
python310=${2:?usage: $0 BASE PYTHON310}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
prefix=$("$python310" -c 'import sys; print(sys.base_prefix)')
version=$("$python310" -c 'import platform; print(platform.python_version())')
case $version in 3.10.*) ;; *)
    echo "$python310: Python $version, not 3.10" >&2; exit 2;;
esac
command -v debootstrap >/dev/null || {
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

work=$(mktemp -d /var/tmp/tfx-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

# The Debian packages of the libraries python and its modules link against.
libs=$(ldd "$prefix"/bin/python3.10 "$prefix"/lib/libpython3.10.so* \
    "$prefix"/lib/python3.10/lib-dynload/*.so 2>/dev/null \
    | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | grep -v "^$prefix" | sort -u)
packages=$(for lib in $libs; do dpkg -S "$(readlink -f "$lib")" 2>/dev/null \
    || dpkg -S "$lib"; done | cut -d: -f1 | sort -u | paste -sd,)
debootstrap --variant=minbase \
    --include="ca-certificates,netbase,tzdata,$packages" \
    bookworm "$rootfs" "$mirror"

tar -C "$prefix" -c --exclude='./lib/python3.10/site-packages/*' \
    --exclude=./lib/python3.10/test --exclude='__pycache__' \
    ./bin ./include ./lib ./share | tar -C "$rootfs/usr/local" -x
# Scripts (pip3, pydoc3, python3.10-config ...) named the old prefix.
grep -rlI "^#!$prefix/" "$rootfs/usr/local/bin" \
    | xargs -r sed -i "1s|^#!$prefix/|#!/usr/local/|"
chroot "$rootfs" ldconfig
chroot "$rootfs" /usr/local/bin/python3.10 -m ensurepip --default-pip \
    >/dev/null
ln -sf pip3 "$rootfs/usr/local/bin/pip"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PYTHON_VERSION=$version" \
    --change 'CMD ["python3"]' - "$base"
