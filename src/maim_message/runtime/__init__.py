"""asyncio helpers shared by servers and clients (callbacks, handler tasks)."""
