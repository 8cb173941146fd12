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
for round in $(seq 1 50); do
  $ELFSCREEN dataset generate --out data/crystal --kind crystal --count "$CRYSTALS" --max-new 25 || exit $?
  $ELFSCREEN dataset generate --out data/fluid --kind fluid --count "$FLUIDS" --min-atoms 32 --max-atoms 48 --max-new 4 || exit $?
done
