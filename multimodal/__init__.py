"""multimodal: classifiers over CSV data that mixes text, numbers, categories and images."""
__version__ = "0.1.0"

from .classifier import MultimodalClassifier  # noqa: E402
from .schema import DataError  # noqa: E402

__all__ = ["MultimodalClassifier", "DataError", "__version__"]
