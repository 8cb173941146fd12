#!/usr/bin/env bash
# Generate (or continue) the hydride and relaxed pure-H DFT datasets of issue 12; resumable: rerun the
# same command to continue. One pw.x at a time (single core); the folders grow together, in rounds.
#   nohup bash data/generate-hydrides.sh > /tmp/elfscreen-hydrides.log 2>&1 &
# Held out by construction: hydride-test/ (random hydrides, seed 1: other structures) and hydride-lpo/
# (the MH9 P6_3/mmc prototype family, never in hydride-proto/).
# The mix per round follows the cost (docs/DFT.md, "What the dataset costs"): a relaxed random hydride
# costs ~8x an unrelaxed one, so hydride-unrelaxed/ (seed 2, never relaxed) carries the cell count while
# the prototypes and half of hydride-random/ carry the relaxed ones; an MH9 cell (20 atoms, relaxed)
# costs as much as ~30 unrelaxed cells, so hydride-lpo/ grows every third round.
set -u  # a failed command (say, a broken import while the code is edited) waits and the loop goes on
# Yield the CPU to interactive work: with the kernel's autogroup scheduling, `nice` only ranks processes
# within one session, so a generator started with setsid/nohup in its own session competes as an equal
# with a training run in another; its autogroup's nice is what makes it step back.
echo 19 > /proc/self/autogroup 2>/dev/null || true
cd "$(dirname "$0")/.."
ELFSCREEN=${ELFSCREEN:-elfscreen}
LPO=${LPO:-MH9-P63/mmc}
ROUNDS=${ROUNDS:-100}
# Elements in fewer than 20 hydride cells (issue 12 asks for >= 20 over >= 12 elements): their unrelaxed
# random cells run first each round (`--elements`: a filter over the same entries).
rare_elements() {
  $ELFSCREEN dataset summary data/hydride-* --json | python3 -c 'import json, sys
print(",".join(e for e, n in json.load(sys.stdin)["by_element"].items() if e != "H" and n < 20))'
}
for round in $(seq 1 "$ROUNDS"); do
  rare=$(rare_elements) || rare=""
  if [ -n "$rare" ]; then
    $ELFSCREEN dataset generate --out data/hydride-unrelaxed --kind hydride-random --seed 2 --count 600 \
      --relax-fraction 0 --elements "$rare" --max-new 4 || sleep 30
  fi
  $ELFSCREEN dataset generate --out data/hydride-proto --kind hydride-prototype --count 1000 \
    --exclude-prototypes "$LPO" --max-new 6 || sleep 30
  $ELFSCREEN dataset generate --out data/hydride-unrelaxed --kind hydride-random --seed 2 --count 600 \
    --relax-fraction 0 --max-new 8 || sleep 30
  $ELFSCREEN dataset generate --out data/hydride-random --kind hydride-random --count 400 --max-new 3 || sleep 30
  $ELFSCREEN dataset generate --out data/crystal-relaxed --kind crystal-relaxed --count 200 --max-atoms 48 --max-new 6 || sleep 30
  $ELFSCREEN dataset generate --out data/hydride-test --kind hydride-random --seed 1 --count 80 --max-new 2 || sleep 30
  if (( round % 3 == 1 )); then
    $ELFSCREEN dataset generate --out data/hydride-lpo --kind hydride-prototype --count 1000 --prototypes "$LPO" --max-new 1 || sleep 30
  fi
done
