#!/usr/bin/env bash
# The README's figures, made with stagerl's own commands: train the GoToObj example (about 20 s
# on 2 cores), plot its training success, and keep the longest of three test episodes as a GIF.
# Usage: docs/make_figures.sh [STAGERL]   (default: .venv/bin/stagerl)
set -euo pipefail
cd "$(dirname "$0")/.."
stagerl=${1:-.venv/bin/stagerl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
config=projects/babyai/gotoobj_ppo.py
"$stagerl" train "$config" -s 7 -o "$work/runs"
run=$(ls -d "$work"/runs/BabyAIGoToObjPPO/*/)
"$stagerl" plot "$run" -o docs/figures/gotoobj_success.png
checkpoint=$(ls "$run"checkpoints/ckpt_*.pt | tail -n 1)
"$stagerl" eval "$config" -c "$checkpoint" --episodes 16 --deterministic \
    --output-json "$work/eval.json" --video "$work/videos" --video-episodes 3
cp "$(ls -S "$work"/videos/*.gif | head -n 1)" docs/figures/gotoobj_episode.gif
