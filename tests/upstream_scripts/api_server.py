"""A published maim-message 0.6.8 ``WebSocketServer`` driven over JSON lines (see api_common).

Run by the 0.6.8 interpreter: ``python api_server.py '<json options>'`` with options
``port`` (required), ``keys`` ({api_key: user_id}, accepted keys), ``certfile``/``keyfile``
(TLS). Prints ``READY`` once the port accepts TCP connections.

Also run by the 0.7.5 interpreter (same API). 0.7.5's ``start()`` leaves its server task
unreferenced (wire-0.7.md §7 item 13: a garbage-collection pass stops it listening), so
every task alive after ``start()`` is kept referenced here.

Events: ``message`` (on_message: message dict + metadata), ``custom`` (custom handler
``ping``: the whole envelope + metadata).
Commands: ``send_message``, ``send_custom``, ``connections``, ``wait_connections``,
``stats``, ``stop``, ``start``, ``restart``, ``exit``.
"""

import asyncio
import json
import sys

from api_common import announce_package, emit, hard_exit, poll, serve_commands, wait_listening

from maim_message.message import APIMessageBase
from maim_message.server import WebSocketServer, create_server_config, create_ssl_server_config

_KEEP = set()  # 0.7.5: keep the server task alive


def _keep_tasks():
    _KEEP.update(asyncio.all_tasks())


def main():
    opts = json.loads(sys.argv[1])
    keys = opts.get("keys") or {}
    port = int(opts["port"])

    async def on_auth(metadata):
        return metadata.get("api_key") in keys

    async def extract_user(metadata):
        return keys.get(metadata.get("api_key"))

    async def on_message(message, metadata):
        emit({"event": "message", "message": message.to_dict(), "metadata": metadata})

    async def on_ping(envelope, metadata):
        emit({"event": "custom", "envelope": envelope, "metadata": metadata})

    def make_server():
        common = {
            "on_auth": on_auth,
            "on_auth_extract_user": extract_user,
            "on_message": on_message,
        }
        if opts.get("certfile"):
            config = create_ssl_server_config(
                host="127.0.0.1", port=port, ssl_certfile=opts["certfile"],
                ssl_keyfile=opts["keyfile"], **common,
            )
        else:
            config = create_server_config(host="127.0.0.1", port=port, **common)
        config.register_custom_handler("ping", on_ping)
        return WebSocketServer(config)

    state = {"server": make_server()}

    async def send_message(cmd):
        message = APIMessageBase.from_dict(cmd["message"])
        return {"result": await state["server"].send_message(message)}

    async def send_custom(cmd):
        result = await state["server"].send_custom_message(
            cmd["type"], cmd["payload"], target_user=cmd.get("target_user"),
            target_platform=cmd.get("target_platform"),
            connection_uuid=cmd.get("connection_uuid"),
        )
        return {"result": result}

    async def connections(cmd):
        server = state["server"]
        return {"uuids": sorted(server.connection_users), "users": dict(server.connection_users)}

    async def wait_connections(cmd):
        server = state["server"]
        n = int(cmd.get("n", 1))
        ok = await poll(lambda: len(server.connection_users) >= n, float(cmd.get("timeout", 10)))
        return {"ok": ok, "uuids": sorted(server.connection_users)}

    async def stats(cmd):
        server = state["server"]
        return {"stats": server.get_stats(), "network": server.network_driver.get_stats()}

    async def stop(cmd):
        await state["server"].stop()
        return {"ok": True}

    async def start(cmd):
        # A fresh 0.6.8 server object on the same port (its dedupe memory starts empty).
        state["server"] = make_server()
        await state["server"].start()
        _keep_tasks()
        await wait_listening("127.0.0.1", port)
        return {"ok": True}

    async def restart(cmd):
        await stop(cmd)
        return await start(cmd)

    async def run():
        announce_package()
        await state["server"].start()
        _keep_tasks()
        await wait_listening("127.0.0.1", port)
        emit("READY")
        await serve_commands({
            "send_message": send_message,
            "send_custom": send_custom,
            "connections": connections,
            "wait_connections": wait_connections,
            "stats": stats,
            "stop": stop,
            "start": start,
            "restart": restart,
        })

    try:
        asyncio.run(run())
    finally:
        hard_exit(0)


if __name__ == "__main__":
    main()
