"""Sightline: self-hosted product analytics that speaks PostHog's SDK protocol."""

from sightline.core import IngestResult, Sightline, open

__version__ = "0.1.0"
__all__ = ["IngestResult", "Sightline", "open", "__version__"]
