"""seqcls: fine-tune decoder LLMs (Qwen2, Llama, ...) as text classifiers with the Hugging Face stack."""

__version__ = "0.1.0"

__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    # PEP 562: `from seqcls import Classifier` loads the prediction module (and with it torch) only when asked,
    # so `import seqcls` and the CLIs' --help stay instant.
    if name == "Classifier":
        from .predict import Classifier

        return Classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + ["Classifier"])
