"""``kubetune serve``: a stored run's model, or an index with its encoder, behind HTTP.

:func:`create_app` makes the FastAPI app (the model loads once, in a thread, when it
starts); :func:`serve` runs it with uvicorn. Concurrent requests share model calls through
:class:`~kubetune.serve.batcher.Batcher`.
"""

from kubetune.serve.app import create_app, serve
from kubetune.serve.schemas import Limits

__all__ = ["Limits", "create_app", "serve"]
