#!/usr/bin/env bash
# Builds the authmd-proxy container image from this checkout:
#
#     deploy/build-image.sh [TAG]        # TAG defaults to authmd-proxy:<version>
#
# No base image is pulled: the image is the release binary, the exact shared
# libraries `ldd` says it links (copied from this machine, with their Debian
# copyright files), /etc/passwd and /etc/group for the non-root user, and
# config.example.yaml as /etc/authmd/config.yaml. deploy/Dockerfile arranges them.
#
# It runs `buildah bud` (root or rootless; `--isolation chroot` and the vfs storage
# driver work inside unprivileged containers too), or `docker build` where buildah
# is missing or BUILDER=docker. Set STORAGE_DRIVER=overlay for buildah's faster
# driver where the kernel allows it. Build on the oldest distribution you deploy to:
# the binary needs that machine's glibc or a newer one, and gets exactly that.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
tag="${1:-authmd-proxy:$version}"
builder="${BUILDER:-$(command -v buildah >/dev/null && echo buildah || echo docker)}"

cargo build --release --locked

# Where cargo put the binary: CARGO_TARGET_DIR when it is set (relative to this
# checkout, as cargo takes it from here), ./target otherwise.
target_dir="${CARGO_TARGET_DIR:-target}"
context="$target_dir/image"
rm -rf "$context"
# rootfs/var/lib is root's; only data/, copied to /var/lib/authmd, is the user's.
mkdir -p "$context/rootfs/var/lib" "$context/data"
root="$context/rootfs"

binary="$target_dir/release/authmd-proxy"
install -D -m 0755 "$binary" "$root/usr/local/bin/authmd-proxy"
# Line tables stay in the target directory's release/ for profiling; the image
# does without them.
strip --strip-debug "$root/usr/local/bin/authmd-proxy"

# The libraries and the loader, at the paths the binary asks for.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
    while read -r lib; do
        install -D -m 0644 "$(readlink -f "$lib")" "$root$lib"
        if package=$( (dpkg -S "$lib" || dpkg -S "$(readlink -f "$lib")") 2>/dev/null |
            cut -d: -f1 | head -n 1) &&
            [ -f "/usr/share/doc/$package/copyright" ]; then
            install -D -m 0644 "/usr/share/doc/$package/copyright" \
                "$root/usr/share/doc/$package/copyright"
        fi
    done
chmod 0755 "$root"/lib*/ld-linux* "$root"/lib/*/ld-linux* 2>/dev/null || true

install -D -m 0644 deploy/image/etc/passwd "$root/etc/passwd"
install -D -m 0644 deploy/image/etc/group "$root/etc/group"
install -D -m 0644 deploy/image/etc/nsswitch.conf "$root/etc/nsswitch.conf"
install -D -m 0644 config.example.yaml "$root/etc/authmd/config.yaml"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision"
    --build-arg "CREATED=$created" -f deploy/Dockerfile -t "$tag")

case "$builder" in
buildah)
    export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
    # The Docker format keeps HEALTHCHECK, which the OCI format drops.
    buildah bud --isolation chroot --format docker "${args[@]}" "$context"
    ;;
docker) docker build "${args[@]}" "$context" ;;
*) echo "build-image.sh: BUILDER must be buildah or docker, not $builder" >&2; exit 64 ;;
esac
echo "built $tag ($(du -sh "$root" | cut -f1) uncompressed)"
