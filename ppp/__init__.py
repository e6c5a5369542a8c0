"""ppp: machine unlearning for cross-modal hashing retrieval and classification.

`ppp.unlearn(model, forget, retain, method=...)` and `ppp.evaluate(...)` (ppp/api.py) are imported on
first use, so `import ppp` stays light (the CLI and the cache tools import it)."""

__version__ = "0.1.0"
__all__ = ["unlearn", "evaluate"]


def __getattr__(name: str):
    if name in __all__:
        from ppp import api

        return getattr(api, name)
    raise AttributeError(f"module 'ppp' has no attribute '{name}'")
