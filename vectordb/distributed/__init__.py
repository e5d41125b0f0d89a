"""vectordb.distributed: collections split into shards over a Ray cluster, with the same API.

>>> from vectordb.distributed import RayClient
>>> client = RayClient(path="./vector_db_ray")          # or RayClient(address="auto", path=...)
>>> col = client.create_collection("docs", shards=4)
>>> col.add(ids=["a"], embeddings=[[0.1, 0.2]])

Needs Ray: pip install 'vectordb[distributed]'.
"""
from .client import RayClient, ShardedCollection, ShardUnavailableError, ShardWriteError
from .routing import shard_of

__all__ = ["RayClient", "ShardUnavailableError", "ShardWriteError", "ShardedCollection", "shard_of"]
