#!/bin/sh
# Build a QEMU whose system emulator has the vfio-user client (-device vfio-user-pci),
# for the end-to-end test of `mmiofilter serve` (tests/test_vfiouser_qemu.py).
#
# The client is upstream since QEMU 10.1; Debian 12 ships 7.2 and Debian 13 10.0, so this
# builds Debian's 10.2 source package (fetched with a private apt configuration that reads
# the sid deb-src index: the machine's apt sources are not changed) into a cache outside
# the clone:
#     ${MMIOFILTER_QEMU_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/mmiofilter/qemu}
# The test finds the binary there or via MMIOFILTER_QEMU. About 6 minutes on 2 cores; run it
# with `nice`. Re-running is cheap once the binary is installed.
set -eu

QEMU_VERSION="${QEMU_DEB_VERSION:-1:10.2.2+ds-1}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mmiofilter"
PREFIX="${MMIOFILTER_QEMU_PREFIX:-$CACHE/qemu}"
WORK="${MMIOFILTER_QEMU_WORK:-$CACHE/qemu-build}"
JOBS="${JOBS:-$(nproc)}"
BIN="$PREFIX/bin/qemu-system-x86_64"

has_client() {
    [ -x "$1" ] && "$1" -device help 2>/dev/null | grep -q '"vfio-user-pci"'
}

if has_client "$BIN"; then
    echo "already built: $BIN"
    exit 0
fi

# Build dependencies (Debian 12 package names); meson comes from PyPI below because
# Debian 12's meson 1.0 is too old for QEMU 10.
DEPS="pkg-config libglib2.0-dev libpixman-1-dev flex bison libslirp-dev libfdt-dev zlib1g-dev ninja-build dpkg-dev python3-venv"
missing=""
for p in $DEPS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
    else
        echo "build-qemu-vfio-user: missing build dependencies:$missing" >&2
        echo "install them with: apt-get install$missing" >&2
        exit 1
    fi
fi

mkdir -p "$WORK"
cd "$WORK"

# Fetch the source with a private apt state: one deb-src stanza for sid, same mirror and
# keyring as Debian's default sources.
APT="$WORK/apt"
mkdir -p "$APT/parts" "$APT/lists/partial" "$APT/archives/partial"
cat > "$APT/parts/sid-src.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
APTOPTS="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$APT/parts \
 -o Dir::State::Lists=$APT/lists -o Dir::Cache::Archives=$APT/archives \
 -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache="
UPSTREAM_VERSION="$(echo "$QEMU_VERSION" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')"
SRCDIR="$WORK/qemu-${UPSTREAM_VERSION%+ds}"
if [ ! -d "$SRCDIR" ]; then
    # shellcheck disable=SC2086
    apt-get $APTOPTS update
    # shellcheck disable=SC2086
    apt-get $APTOPTS source --download-only "qemu=$QEMU_VERSION"
    dsc="$(ls qemu_*.dsc | head -n 1)"
    dpkg-source --no-check -x "$dsc" "$SRCDIR"
fi

# meson >= 1.5 for QEMU 10.x
if [ ! -x "$WORK/venv/bin/meson" ]; then
    /usr/bin/python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q 'meson==1.9.0'
fi

mkdir -p "$SRCDIR/build"
cd "$SRCDIR/build"
if [ ! -f build.ninja ]; then
    ../configure --prefix="$PREFIX" --python="$WORK/venv/bin/python3" \
        --target-list=x86_64-softmmu --without-default-features \
        --enable-kvm --enable-pixman --enable-fdt=system --enable-slirp \
        --disable-docs --disable-werror --disable-tools --disable-user \
        --disable-install-blobs --disable-gtk --disable-sdl --disable-vnc \
        --disable-opengl --disable-spice
fi
make -j"$JOBS"
make install

if has_client "$BIN"; then
    echo "built: $BIN"
else
    echo "build-qemu-vfio-user: $BIN has no vfio-user-pci device" >&2
    exit 1
fi
