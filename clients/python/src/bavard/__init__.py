"""Bavard's Python client: a reconnecting WebSocket client (:class:`Client`) and the REST API (:class:`Rest`)."""

from .client import Client, endpoint
from .errors import BavardError
from .rest import Rest

__all__ = ["BavardError", "Client", "Rest", "endpoint"]
__version__ = "0.1.0"
