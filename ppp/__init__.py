"""ppp: machine unlearning for cross-modal hashing retrieval and classification."""

__version__ = "0.1.0"
