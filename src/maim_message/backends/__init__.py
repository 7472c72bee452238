"""Storage and cluster backends.

- ``sqlite_outbox``: the durable outbox (one process survives its restart).
- ``cluster_base``: the cluster seam the server sends through, ``Selector``, and
  ``LocalCluster`` (one process, the default).
- ``pubsub_cluster``: the base of every distributed backend (its hooks: ``pubsub_io``;
  what nodes tell each other: ``pubsub_messages``); ``redis_cluster`` runs it on Redis
  (needs ``maim_message[cluster]``), ``memory_bus`` in one process (tests).
"""
