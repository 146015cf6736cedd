"""kner: Korean named-entity recognition from four eras of NLP, trained and compared on KLUE NER."""
from .models import load
from .types import LABELS, Example, Span

__version__ = "0.1.0"

__all__ = ["LABELS", "Example", "Span", "load", "__version__"]
