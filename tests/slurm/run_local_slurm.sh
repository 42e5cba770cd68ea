#!/usr/bin/env bash
# The harness's --slurm path against a real single-node Slurm (Debian's slurm-wlm + munge) on this machine:
# install, configure one node, start munged/slurmctld/slurmd, submit a tiny benchmark (one run deliberately failing),
# and check the aggregation job's verdict. Needs root. `make test-slurm` runs it (not part of CI: it installs daemons).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}

if ! command -v slurmctld >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
slurmctld -c
slurmd -c
for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix' && break; sleep 1; done
sinfo

out=$(mktemp -d)
tiny=(--num-envs 4 --num-steps 32 --minibatch-size 64 --num-eval-episodes 2 --eval-frequency 128 --checkpoint-frequency 128)
PYTHON=$PY bash benchmark/coinrun.sh --slurm --seeds 1 --variants ppo_procgen ppo_procgen_aug --total-timesteps 256 \
  --threads 1 --cpus 1 --out "$out" -- "${tiny[@]}"
# A second benchmark in which one run fails (an indivisible minibatch): the aggregation job must fail and name it.
bad=$(mktemp -d)
PYTHON=$PY bash benchmark/coinrun.sh --slurm --seeds 1 --variants ppo_procgen --total-timesteps 256 --threads 1 \
  --cpus 1 --out "$bad" -- "${tiny[@]}" --minibatch-size 100
for _ in $(seq 300); do [ -z "$(squeue -h)" ] && break; sleep 2; done
squeue
echo "--- good benchmark"
cat "$out/slurm/aggregate.out"
grep -q "Gap table" "$out/gap_table.md" && [ -s "$out/curves.png" ]
sacct >/dev/null 2>&1 || true
! grep -q "missing or failed" "$out/slurm/aggregate.out"
echo "--- failing benchmark"
cat "$bad/slurm/aggregate.out"
grep -q "ppo_procgen__1 (at step 0 of 256" "$bad/slurm/aggregate.out"
echo "local Slurm test passed"
