"""Sans-I/O core: data models, envelope codec, routing table, delivery bookkeeping.

Nothing in this package imports sockets, asyncio transports, websockets or starlette.
"""
