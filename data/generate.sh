#!/usr/bin/env bash
# Generate (or continue) the committed DFT ELF datasets; resumable: rerun the same command to continue.
# One pw.x process at a time (single core). Crystals and fluids are interleaved in chunks so that both
# grow together; each chunk skips what is already finished (or recorded as failed).
#   nohup bash data/generate.sh > /tmp/elfscreen-dataset.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
ELFSCREEN=${ELFSCREEN:-elfscreen}
CRYSTALS=${CRYSTALS:-400}
FLUIDS=${FLUIDS:-80}
MD_SNAPSHOTS=${MD_SNAPSHOTS:-21}   # 7 snapshots per trajectory, trajectories at 76, 115, 139 GPa in turn
# the held-out cubic + hexagonal crystals of the ablation (never trained on: not a training folder)
$ELFSCREEN dataset generate --out data/crystal-test --kind crystal --families cubic,hexagonal --seed 1 \
  --count 40 --max-atoms 24 --relax-fraction 0 || exit $?
$ELFSCREEN dataset generate --out data/fluid-md --kind fluid-md --count "$MD_SNAPSHOTS" || exit $?
for round in $(seq 1 50); do
  $ELFSCREEN dataset generate --out data/crystal --kind crystal --count "$CRYSTALS" --relax-fraction 0 --max-new 25 || exit $?
  $ELFSCREEN dataset generate --out data/fluid --kind fluid --count "$FLUIDS" --min-atoms 32 --max-atoms 40 --max-new 4 || exit $?
done
