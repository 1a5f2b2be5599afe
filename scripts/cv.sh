#!/usr/bin/env bash
# K-fold cross-validation of one recipe: out-of-fold predictions, CV metrics, likely label errors, fold models.
#
#   K=5 CV_DIR=runs/cv scripts/cv.sh configs/quickstart.yaml --num_train_epochs 2
#   LAUNCHER="accelerate launch --config_file configs/accelerate/ddp.yaml" scripts/cv.sh cfg.yaml
#
# Every argument is the training recipe, as for run_classification.py (a config file first, then --key value
# overrides). `python -m seqcls.cv split` writes the folds of the training file under CV_DIR/data/fold<i>/
# (stratified: by label, by iterative stratification for multi-label, by target quantiles for regression; each row
# keeps its position in the column cv_row); each fold is then one run of the recipe on the other folds, with its
# own fold as --test_file (so CV_DIR/fold<i>/predict_results.jsonl holds out-of-fold probabilities), and
# `python -m seqcls.cv collect` writes, in CV_DIR:
#   oof_predictions.jsonl   every training row in input order: row, id, label, fold, predicted, score, probabilities
#   cv_results.md / .csv    every fold's held-out metrics, their mean ± std and the pooled out-of-fold metrics
#   label_issues.jsonl/.md  rows cleanlab flags as likely mislabelled, most likely first (needs seqcls[cv])
# The k fold models predict together with `python -m seqcls.cv predict --cv_dir CV_DIR INPUT -o OUT`.
# Settings:
#   K         folds (default 5)          CV_DIR   where everything goes (default runs/cv-<config name>, or runs/cv)
#   CV_SEED   seed of the fold assignment (default 42)
#   LAUNCHER  the command that runs the script (default python; e.g. "accelerate launch --num_processes 4")
#   PYTHON    python for split and collect (default python); DRY_RUN=1 prints the fold commands
#
# As with scripts/sweep.sh: re-running the same command skips finished folds and resumes interrupted ones from
# their last checkpoint (save checkpoints by steps or epochs for that); a failed fold is listed in
# CV_DIR/failed.txt with its log and the other folds go on; exit status 1 when a fold failed, 130 when
# interrupted, 2 for bad input (K < 2, K above the rows of the smallest class, no labels, a CV_DIR holding a CV
# with other options: one line, nothing written).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT=${SCRIPT:-$ROOT/run_classification.py}
PYTHON=${PYTHON:-python}
LAUNCHER=${LAUNCHER:-$PYTHON}
read -r -a launcher <<<"$LAUNCHER"
K=${K:-5}
CV_SEED=${CV_SEED:-42}

config_name=""
if [[ $# -gt 0 && "$1" != -* && "$1" =~ \.(yaml|yml|json)$ ]]; then
  config_name=$(basename "${1%.*}")
fi
CV_DIR=${CV_DIR:-runs/cv${config_name:+-$config_name}}
if [[ ! "$K" =~ ^[0-9]+$ ]]; then
  echo "cv: K=$K is not a whole number; set e.g. K=5" >&2
  exit 2
fi

# --- folds (checked before anything is written) -------------------------------------------------------------
"$PYTHON" -m seqcls.cv split --cv_dir "$CV_DIR" --k "$K" --seed "$CV_SEED" -- "$@"

dry=${DRY_RUN:-0}
rm -f "$CV_DIR/failed.txt"
log() { echo "[cv $(date +%H:%M:%S)] $*" | tee -a "$CV_DIR/cv.log"; }
trap 'log "interrupted: re-run the same command to resume"; exit 130' INT TERM

has_checkpoint() {  # a checkpoint saved whole (Trainer writes trainer_state.json last)
  local d found=1
  for d in "$1"/checkpoint-*/; do
    if [[ -f "$d/trainer_state.json" ]]; then found=0; fi
  done
  return $found
}

# --- one run per fold (the run bookkeeping of scripts/sweep.sh: same marker, params.json, failed.txt) ---------
n_done=0 n_skipped=0 n_failed=0
log "$K fold(s) in $CV_DIR"
for ((f = 0; f < K; f++)); do
  name="fold$f"
  dir="$CV_DIR/$name"
  data="$CV_DIR/data/$name"
  running="$dir/.sweep_running"  # present from the start of a run until it exits cleanly (seqcls.sweep reads it)
  if [[ -f "$dir/all_results.json" && ! -e "$running" ]]; then
    log "$((f + 1))/$K $name: finished before, skipped"
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
      overwrite=true
    fi
  fi
  cmd=("${launcher[@]}" "$SCRIPT" "$@" --train_file "$data/train.jsonl" --test_file "$data/heldout.jsonl"
    --do_train true --do_predict true --output_dir "$dir" --run_name "$name" --overwrite_output_dir "$overwrite")
  if [[ "$dry" != 0 ]]; then
    printf '%q ' "${cmd[@]}"
    echo
    continue
  fi
  mkdir -p "$dir"
  echo "{\"fold\": \"$f\"}" >"$dir/params.json"
  touch "$running"
  log "$((f + 1))/$K $name ($state)"
  {
    echo "### $(date -Iseconds) $state"
    printf '%q ' "${cmd[@]}"
    echo
  } >>"$dir/train.log"
  start=$SECONDS
  if "${cmd[@]}" >>"$dir/train.log" 2>&1; then
    rm -f "$running"
    n_done=$((n_done + 1))
    log "$((f + 1))/$K $name: done in $((SECONDS - start)) s"
  else
    rc=$?
    if [[ $rc -eq 130 ]]; then
      log "$((f + 1))/$K $name: interrupted; re-run the same command to resume"
      exit 130
    fi
    n_failed=$((n_failed + 1))
    printf '%s\texit %s\t%s\n' "$name" "$rc" "$dir/train.log" >>"$CV_DIR/failed.txt"
    log "$((f + 1))/$K $name: FAILED (exit $rc) after $((SECONDS - start)) s; last lines of $dir/train.log:"
    tail -n 5 "$dir/train.log" | sed 's/^/    /' | tee -a "$CV_DIR/cv.log"
  fi
done

if [[ "$dry" != 0 ]]; then exit 0; fi
see=""
if [[ $n_failed -gt 0 ]]; then see=" (see $CV_DIR/failed.txt)"; fi
log "$K fold(s): $n_done done, $n_skipped skipped (finished before), $n_failed failed$see"
if [[ $((n_done + n_skipped)) -gt 0 ]]; then
  collected=0
  "$PYTHON" -m seqcls.cv collect --cv_dir "$CV_DIR" || collected=$?
  if [[ $collected -eq 2 ]]; then exit 2; fi
fi
if [[ $n_failed -gt 0 ]]; then exit 1; fi
