#!/bin/sh
# Start one deepfm scoring replica: the command of the Docker image, of every scorer-<N> service in
# docker-compose.yml and of the Kubernetes Deployment, and what tests/deploy and
# benchmarks/deploy_bench.py start on loopback. Every setting is a DEEPFM_SERVE_* environment
# variable (`python -m service --help` lists them); arguments are passed on to `python -m service`.
set -eu

# One worker process per CPU the container may use (its CFS quota, cgroup v2 or v1; else the CPUs it may
# run on), each with one torch thread: a scorer's model calls are too small for a second thread to pay
# (benchmarks/results/cores_bench.md). A quota below one CPU still gets one worker.
if [ -z "${DEEPFM_SERVE_WORKERS:-}" ]; then
    cpus=$(nproc)
    quota=max
    if [ -r /sys/fs/cgroup/cpu.max ]; then
        read -r quota period < /sys/fs/cgroup/cpu.max
    elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
        period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
    fi
    if [ "$quota" != max ] && [ "$quota" -gt 0 ] && [ $((quota / period)) -lt "$cpus" ]; then
        cpus=$((quota / period))
    fi
    DEEPFM_SERVE_WORKERS=$((cpus > 0 ? cpus : 1))
    export DEEPFM_SERVE_WORKERS
fi

# OpenMP and MKL size their thread pools from these variables when torch is imported, before the
# service applies DEEPFM_SERVE_TORCH_THREADS (default 1): make them agree with it unless they are set.
: "${OMP_NUM_THREADS:=${DEEPFM_SERVE_TORCH_THREADS:-1}}"
: "${MKL_NUM_THREADS:=$OMP_NUM_THREADS}"
export OMP_NUM_THREADS MKL_NUM_THREADS

# glibc's malloc: freed model-sized blocks stay in the heap for the next model call instead of going
# back to the kernel and faulting in again page by page (mmap threshold at its 32 MiB maximum, trim
# threshold 128 MiB). glibc reads these at process start; a value the operator set wins.
: "${MALLOC_MMAP_THRESHOLD_:=33554432}"
: "${MALLOC_TRIM_THRESHOLD_:=134217728}"
export MALLOC_MMAP_THRESHOLD_ MALLOC_TRIM_THRESHOLD_

# exec: the server becomes this process, so the SIGTERM of `docker stop` or Kubernetes reaches
# uvicorn, which stops accepting, finishes the requests in flight and exits. (PROMETHEUS_MULTIPROC_DIR,
# if set, is emptied by the service itself.)
exec python -m service "$@"
