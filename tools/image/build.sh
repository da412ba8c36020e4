#!/usr/bin/env bash
# Builds the pipeline's image (Dockerfile) as IMAGE: `make image` runs it.
#
#   tools/image/build.sh IMAGE [PYTHON310]
#
# With a Docker engine that answers (`docker info`), a plain `docker build`
# from python:3.10-slim-bookworm. Without one (no daemon, no image registry,
# as on our CI machines), podman builds the same Dockerfile from a local base
# of the same layout (BASE below, made once by tools/image/base.sh: Debian
# bookworm from debootstrap plus this machine's CPython 3.10 in /usr/local).
# Both cache their layers: a second build copies only the changed sources.
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${1:?usage: $0 IMAGE [PYTHON310]}
python310=${2:-python3.10}
# The local stand-in for python:3.10-slim-bookworm.
base=localhost/tfx-deep-pipelines-base:3.10-bookworm

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    exec docker build -t "$image" .
fi
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
podman image exists "$base" || tools/image/base.sh "$base" "$python310"
# This machine's CA bundle (SSL_CERT_FILE, else Debian's) for pip and uv:
# behind a TLS-inspecting proxy theirs do not verify the registries.
ca_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
# chroot isolation: no OCI runtime, so none of its rlimit or cgroup set-up,
# which this machine refuses (docs/deployment.md).
exec podman build --isolation chroot --layers \
    --build-arg "BASE_IMAGE=$base" \
    --volume "$(readlink -f "$ca_bundle"):/run/build-ca-bundle.crt:ro" \
    --build-arg CA_BUNDLE=/run/build-ca-bundle.crt \
    -t "$image" .
