"""multimodal: classifiers over CSV data that mixes text, numbers, categories and images."""
__version__ = "0.1.0"

__all__ = ["MultimodalClassifier", "DataError", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that `multimodal-serve` binds its port before numpy and pandas load
    # (SageMaker expects connections to be accepted within 250 ms of start).
    if name == "MultimodalClassifier":
        from .classifier import MultimodalClassifier
        return MultimodalClassifier
    if name == "DataError":
        from .schema import DataError
        return DataError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
