#!/usr/bin/env bash
# Runs the pipeline's command line in IMAGE: `docker run` where a Docker
# engine answers, else `podman run` as this kind of machine allows it.
#
#   tools/image/run.sh IMAGE [RUN FLAGS ...] -- [PIPELINE ARGS ...]
#   tools/image/run.sh tfx-deep-pipelines:TAG -v $PWD/out:/out -- \
#       run --profile smoke --home /out/home
#
# podman here: runc, as crun refuses this kernel's hybrid cgroups ("cgroups
# in hybrid mode not supported"); the container's rlimits no higher than
# this shell's, as without CAP_SYS_RESOURCE the runtime cannot raise them
# (podman's defaults, nofile 1048576 and nproc 32768 or more, fail with
# "setrlimit RLIMIT_NOFILE: Operation not permitted"). docs/deployment.md.
set -euo pipefail

image=${1:?usage: $0 IMAGE [RUN FLAGS ...] -- [PIPELINE ARGS ...]}
shift
flags=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do flags+=("$1"); shift; done
[ $# -gt 0 ] && shift

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    exec docker run --rm "${flags[@]}" "$image" "$@"
fi
nofile=$(ulimit -Hn)
# podman lowers its own nproc limit to 32768 before it starts the runtime.
nproc=$(ulimit -Hu)
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
exec podman run --rm --runtime runc \
    --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
    "${flags[@]}" "$image" "$@"
