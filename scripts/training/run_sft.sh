#!/bin/sh
# Instruction tuning, laid out like the seed's scripts/training/run_sft.sh. Set the variables below
# (edit them, or set them in the environment), then run `sh run_sft.sh` or `bash run_sft.sh`; extra
# flags after the script name are passed on (e.g. --max_steps 10).
# Differences from the seed: the seed is a variable (`--seed $RANDOM` broke under sh), an empty
# validation_file means no evaluation, and an interrupted run resumes unless overwrite_output_dir=True.
lr=${lr:-1e-4}
lora_rank=${lora_rank:-64}
lora_alpha=${lora_alpha:-128}
lora_trainable=${lora_trainable:-"q_proj,v_proj,k_proj,o_proj,gate_proj,down_proj,up_proj"}
modules_to_save=${modules_to_save:-"embed_tokens,lm_head"}
lora_dropout=${lora_dropout:-0.05}

pretrained_model=${pretrained_model:-smollm2-135m-instruct}
dataset_dir=${dataset_dir:-path/to/sft/data/dir}
per_device_train_batch_size=${per_device_train_batch_size:-1}
per_device_eval_batch_size=${per_device_eval_batch_size:-1}
gradient_accumulation_steps=${gradient_accumulation_steps:-8}
max_seq_length=${max_seq_length:-1024}
output_dir=${output_dir:-output_dir}
validation_file=${validation_file:-}
seed=${seed:-42}
torch_dtype=${torch_dtype:-bfloat16}
overwrite_output_dir=${overwrite_output_dir:-False}
nproc_per_node=${nproc_per_node:-1}
python=${PYTHON:-python3}

if [ -n "$validation_file" ]; then
  set -- --do_eval --evaluation_strategy steps --eval_steps 100 --validation_file "$validation_file" "$@"
fi

exec "$python" -m torch.distributed.run --nnodes 1 --nproc_per_node "$nproc_per_node" -m adeptlm sft \
    --model_name_or_path "$pretrained_model" --tokenizer_name_or_path "$pretrained_model" \
    --dataset_dir "$dataset_dir" \
    --per_device_train_batch_size "$per_device_train_batch_size" \
    --per_device_eval_batch_size "$per_device_eval_batch_size" \
    --do_train --seed "$seed" --bf16 \
    --num_train_epochs 3 --lr_scheduler_type cosine --learning_rate "$lr" \
    --warmup_ratio 0.05 --weight_decay 0.1 \
    --logging_strategy steps --logging_steps 10 \
    --save_strategy steps --save_total_limit 3 --save_steps 200 \
    --gradient_accumulation_steps "$gradient_accumulation_steps" \
    --preprocessing_num_workers 8 --max_seq_length "$max_seq_length" \
    --output_dir "$output_dir" --overwrite_output_dir "$overwrite_output_dir" --ddp_timeout 30000 \
    --logging_first_step True \
    --lora_rank "$lora_rank" --lora_alpha "$lora_alpha" --trainable "$lora_trainable" \
    --lora_dropout "$lora_dropout" --modules_to_save "$modules_to_save" \
    --torch_dtype "$torch_dtype" --load_in_kbits 16 \
    "$@"
