"""raybench: benchmark audio-visual emotion recognition methods at scale on Ray."""

__version__ = "0.1.0"
