#!/usr/bin/env bash
# Grid sweep over run_classification.py: one output directory per combination, safe to re-run.
#
#   LR="1e-5 2e-5 5e-5" SEEDS="1 2 3" scripts/sweep.sh configs/quickstart.yaml --num_train_epochs 2
#   LAUNCHER="accelerate launch --config_file configs/accelerate/ddp.yaml" LR="1e-5 2e-5" scripts/sweep.sh cfg.yaml
#   SWEEP_FILE=my_sweep.txt scripts/sweep.sh cfg.yaml      # lines `option value value ...`, `#` comments
#
# Every argument is passed to each run (a config file first, then --key value overrides); the swept options
# come after them and win. The grid is the product of every value list set:
#   LR (learning_rate)  EPOCHS (num_train_epochs)  BATCH (per_device_train_batch_size)
#   GRAD_ACCUM (gradient_accumulation_steps)  WD (weight_decay)  WARMUP (warmup_steps)  MAX_LEN (max_seq_length)
#   LORA_R (lora_r)  LORA_ALPHA (lora_alpha)  SEEDS (seed, the innermost loop: mean and std are taken over it)
#   SWEEP_FILE: any other option, one line each: `lr_scheduler_type linear cosine`.
# Other settings:
#   SWEEP_DIR   where the runs go (default runs/sweep-<config name>, or runs/sweep); run directories are named
#               by their parameters, e.g. runs/sweep-quickstart/lr1e-5_seed1
#   LAUNCHER    the command that runs the script (default python; e.g. "accelerate launch --num_processes 4")
#   PYTHON      python for the summary (default python); SUMMARIZE=0 skips it; DRY_RUN=1 prints the commands
#
# Re-running the same command skips finished runs (all_results.json written and the run exited cleanly) and
# resumes interrupted ones from their last checkpoint (save checkpoints by steps or epochs for that; a run with
# no checkpoint starts afresh). Runs never get --overwrite_output_dir true from a config: the sweep passes false.
# A failed run is listed in SWEEP_DIR/failed.txt with its log, and the sweep goes on; the exit status is 1 when
# any run failed, 130 when interrupted, else 0. Each run logs to SWEEP_DIR/<run>/train.log.
set -euo pipefail
set -f  # value lists are split on spaces, never globbed

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=${SCRIPT:-$ROOT/run_classification.py}
PYTHON=${PYTHON:-python}
LAUNCHER=${LAUNCHER:-$PYTHON}
read -r -a launcher <<<"$LAUNCHER"

config_name=""
if [[ $# -gt 0 && "$1" != -* && "$1" =~ \.(yaml|yml|json)$ ]]; then
  config_name=$(basename "${1%.*}")
fi
SWEEP_DIR=${SWEEP_DIR:-runs/sweep${config_name:+-$config_name}}

# --- the grid ------------------------------------------------------------------------------------------------
keys=()
lists=()
add_dim() {  # add_dim OPTION "v1 v2 ..."
  local key=$1 list=$2 v
  if [[ -z "${list// /}" ]]; then
    echo "sweep: $key has no values" >&2
    exit 2
  fi
  for v in $list; do
    if [[ "$v" == *[\"\\]* ]]; then
      echo "sweep: $key value '$v' may not contain a quote or a backslash" >&2
      exit 2
    fi
  done
  keys+=("$key")
  lists+=("$list")
}
if [[ -n "${LR:-}" ]]; then add_dim learning_rate "$LR"; fi
if [[ -n "${EPOCHS:-}" ]]; then add_dim num_train_epochs "$EPOCHS"; fi
if [[ -n "${BATCH:-}" ]]; then add_dim per_device_train_batch_size "$BATCH"; fi
if [[ -n "${GRAD_ACCUM:-}" ]]; then add_dim gradient_accumulation_steps "$GRAD_ACCUM"; fi
if [[ -n "${WD:-}" ]]; then add_dim weight_decay "$WD"; fi
if [[ -n "${WARMUP:-}" ]]; then add_dim warmup_steps "$WARMUP"; fi
if [[ -n "${MAX_LEN:-}" ]]; then add_dim max_seq_length "$MAX_LEN"; fi
if [[ -n "${LORA_R:-}" ]]; then add_dim lora_r "$LORA_R"; fi
if [[ -n "${LORA_ALPHA:-}" ]]; then add_dim lora_alpha "$LORA_ALPHA"; fi
if [[ -n "${SWEEP_FILE:-}" ]]; then
  if [[ ! -f "$SWEEP_FILE" ]]; then
    echo "sweep: SWEEP_FILE $SWEEP_FILE does not exist" >&2
    exit 2
  fi
  lineno=0
  while IFS= read -r line || [[ -n "$line" ]]; do
    lineno=$((lineno + 1))
    line=${line%%#*}
    read -r key rest <<<"$line" || true
    if [[ -z "${key:-}" ]]; then continue; fi
    key=${key%:}
    key=${key#--}
    if [[ ! "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
      echo "sweep: $SWEEP_FILE:$lineno: '$key' is not an option name (write: option value value ...)" >&2
      exit 2
    fi
    add_dim "$key" "${rest:-}"
  done <"$SWEEP_FILE"
fi
if [[ -n "${SEEDS:-}" ]]; then add_dim seed "$SEEDS"; fi
if [[ ${#keys[@]} -eq 0 ]]; then
  echo "sweep: nothing to sweep; set e.g. LR=\"1e-5 2e-5\" SEEDS=\"1 2\", or SWEEP_FILE (see the top of $0)" >&2
  exit 2
fi

short_name() {  # the short name of an option in run directory names
  case $1 in
    learning_rate) echo lr ;;
    num_train_epochs) echo ep ;;
    per_device_train_batch_size) echo bs ;;
    gradient_accumulation_steps) echo ga ;;
    weight_decay) echo wd ;;
    warmup_steps) echo warmup ;;
    max_seq_length) echo len ;;
    lora_r) echo r ;;
    lora_alpha) echo alpha ;;
    seed) echo seed ;;
    *) echo "$1-" ;;  # other options: lr_scheduler_type-cosine
  esac
}

# every combination as "i=value j=value ..." (indices into keys), the last dimension innermost
combos=("")
for i in "${!keys[@]}"; do
  next=()
  for c in "${combos[@]}"; do
    for v in ${lists[i]}; do
      next+=("${c:+$c }$i=$v")
    done
  done
  combos=("${next[@]}")
done

dry=${DRY_RUN:-0}
if [[ "$dry" == 0 ]]; then
  mkdir -p "$SWEEP_DIR"
  rm -f "$SWEEP_DIR/failed.txt"
  log() { echo "[sweep $(date +%H:%M:%S)] $*" | tee -a "$SWEEP_DIR/sweep.log"; }
else
  log() { echo "[sweep] $*"; }
fi
trap 'log "interrupted: re-run the same command to resume"; exit 130' INT TERM

has_checkpoint() {  # a checkpoint saved whole (Trainer writes trainer_state.json last)
  local d found=1
  set +f
  for d in "$1"/checkpoint-*/; do
    if [[ -f "$d/trainer_state.json" ]]; then found=0; fi
  done
  set -f
  return $found
}

total=${#combos[@]}
n_done=0 n_skipped=0 n_failed=0 k=0
log "$total run(s) in $SWEEP_DIR: ${keys[*]}"
for combo in "${combos[@]}"; do
  k=$((k + 1))
  name="" params="" run_args=()
  for pair in $combo; do
    i=${pair%%=*}
    v=${pair#*=}
    key=${keys[i]}
    name+="${name:+_}$(short_name "$key")${v//\//-}"  # a model id Qwen/Qwen3 becomes Qwen-Qwen3
    params+="${params:+, }\"$key\": \"$v\""
    run_args+=("--$key" "$v")
  done
  dir="$SWEEP_DIR/$name"
  running="$dir/.sweep_running"  # present from the start of a run until it exits cleanly

  if [[ -f "$dir/all_results.json" && ! -e "$running" ]]; then
    log "$k/$total $name: finished before, skipped"
    n_skipped=$((n_skipped + 1))
    continue
  fi
  overwrite=false
  state="new"
  if [[ -e "$running" ]]; then
    if has_checkpoint "$dir"; then
      state="interrupted: resuming from its last checkpoint"
    else
      state="interrupted before any checkpoint: starting afresh"
      overwrite=true  # nothing to resume; an earlier partial model must not stop the run
    fi
  fi
  cmd=("${launcher[@]}" "$SCRIPT" "$@" "${run_args[@]}" --output_dir "$dir" --run_name "$name"
    --overwrite_output_dir "$overwrite")
  if [[ "$dry" != 0 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    continue
  fi
  mkdir -p "$dir"
  echo "{$params}" >"$dir/params.json"
  touch "$running"
  log "$k/$total $name ($state)"
  {
    echo "### $(date -Iseconds) $state"
    printf '%q ' "${cmd[@]}"
    echo
  } >>"$dir/train.log"
  start=$SECONDS
  if "${cmd[@]}" >>"$dir/train.log" 2>&1; then
    rm -f "$running"
    n_done=$((n_done + 1))
    log "$k/$total $name: done in $((SECONDS - start)) s"
  else
    rc=$?
    if [[ $rc -eq 130 ]]; then  # Ctrl-C reached the run too: stop the sweep, not just this run
      log "$k/$total $name: interrupted; re-run the same command to resume"
      exit 130
    fi
    n_failed=$((n_failed + 1))
    printf '%s\texit %s\t%s\n' "$name" "$rc" "$dir/train.log" >>"$SWEEP_DIR/failed.txt"
    log "$k/$total $name: FAILED (exit $rc) after $((SECONDS - start)) s; last lines of $dir/train.log:"
    tail -n 5 "$dir/train.log" | sed 's/^/    /' | tee -a "$SWEEP_DIR/sweep.log"
  fi
done

if [[ "$dry" != 0 ]]; then exit 0; fi
see=""
if [[ $n_failed -gt 0 ]]; then see=" (see $SWEEP_DIR/failed.txt)"; fi
log "$total run(s): $n_done done, $n_skipped skipped (finished before), $n_failed failed$see"
if [[ "${SUMMARIZE:-1}" != 0 && $((n_done + n_skipped)) -gt 0 ]]; then
  "$PYTHON" "$ROOT/scripts/summarize_sweep.py" "$SWEEP_DIR" || log "summary failed (the runs are fine): $PYTHON $ROOT/scripts/summarize_sweep.py $SWEEP_DIR"
fi
if [[ $n_failed -gt 0 ]]; then exit 1; fi
