"""seqcls: fine-tune decoder LLMs (Qwen2, Llama, ...) as text classifiers with the Hugging Face stack."""

__version__ = "0.1.0"
