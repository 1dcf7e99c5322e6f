"""kshark: the service side (store, KFL, API, worker, hub)."""

__version__ = "0.1.0"
