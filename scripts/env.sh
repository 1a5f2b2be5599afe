# Offline, project-local Hugging Face settings (sourced by the scripts; nothing is fetched from the Hub).
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export HF_HOME=${HF_HOME:-$PWD/.hf_home}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
