"""HTTP server for vectordb: a FastAPI app (`create_app`) and its settings.

    from vectordb.server import create_app
    app = create_app("./vector_db")     # then run it with uvicorn, or use `vectordb serve`
"""
from vectordb.server.app import create_app
from vectordb.server.settings import ServerSettings

__all__ = ["create_app", "ServerSettings"]
