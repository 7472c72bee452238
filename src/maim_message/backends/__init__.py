"""Storage and cluster backends.

``sqlite_outbox``: the durable outbox. ``cluster_base``: the cluster seam and the
single-node backend; ``pubsub_cluster``: the pub/sub base every distributed backend
builds on (``memory_bus`` runs it in one process, for tests); ``redis_cluster``: the Redis
backend (needs ``maim_message[cluster]``).
"""
