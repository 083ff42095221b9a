#!/usr/bin/env bash
# Installs Debian's single-node Slurm (slurm-wlm: slurmctld, slurmd, sinfo, sbatch, ...) and munge for
# tests/test_slurm_cluster.py, which starts its own cluster on localhost in a temporary folder.
# Never fails `make test`: where it cannot install (not root, no apt-get, apt failing) it says why and exits 0;
# the test then skips with that reason. Installs nothing when the programs are already there.
set -uo pipefail
need=(slurmctld slurmd sbatch sinfo scontrol squeue scancel munged)
missing=()
for prog in "${need[@]}"; do
    command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || missing+=("$prog")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "slurm: already installed ($(dpkg-query -W -f="slurm-wlm \${Version}" slurm-wlm 2>/dev/null || echo "not from apt"))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm: not installed (missing ${missing[*]}) and not root: tests/test_slurm_cluster.py will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm: not installed (missing ${missing[*]}) and no apt-get: tests/test_slurm_cluster.py will skip"
    exit 0
fi
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
if ! timeout 300 apt-get install -y -q --no-install-recommends slurm-wlm munge >/tmp/install_slurm.log 2>&1; then
    # the package lists may be missing or stale on a fresh machine: update once, then try again
    timeout 300 apt-get update -q >>/tmp/install_slurm.log 2>&1
    if ! timeout 300 apt-get install -y -q --no-install-recommends slurm-wlm munge >>/tmp/install_slurm.log 2>&1; then
        echo "slurm: apt-get install slurm-wlm munge failed (log: /tmp/install_slurm.log): tests/test_slurm_cluster.py will skip"
        tail -5 /tmp/install_slurm.log
        exit 0
    fi
fi
echo "slurm: installed slurm-wlm and munge in $(( $(date +%s) - start )) s ($(dpkg-query -W -f="slurm-wlm \${Version}" slurm-wlm))"
