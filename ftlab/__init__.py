"""ftlab: a self-hosted fine-tuning lab for chat LLMs."""

__version__ = "0.1.0"
