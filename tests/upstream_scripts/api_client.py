"""A published maim-message 0.6.8 ``WebSocketClient`` driven over JSON lines (see api_common).

Run by the 0.6.8 interpreter: ``python api_client.py '<json options>'`` with options
``url``, ``api_key``, ``platform``, ``ca`` (CA file for wss://), ``reconnect_delay``.
Prints ``READY`` once ``client.start()`` returned (connecting is the ``connect`` command,
so that a refused connection can be observed).

Events: ``message`` (on_message: message dict + meta), ``custom`` (handler ``note``,
registered the 0.6.8 way: one argument, the payload).
Commands: ``connect`` (replies when 0.6.8's ``connect()`` returns), ``state``,
``send_message``, ``send_custom``, ``cache``, ``inject_cache``, ``wait_active``,
``wait_inactive``, ``stats``, ``exit``.
"""

import asyncio
import json
import sys

from api_common import announce_package, emit, hard_exit, poll, serve_commands

from maim_message.client import WebSocketClient, create_client_config
from maim_message.message import APIMessageBase


def main():
    opts = json.loads(sys.argv[1])

    async def on_message(message, meta):
        emit({"event": "message", "message": message.to_dict(), "meta": meta})

    async def on_note(payload):
        emit({"event": "custom", "type": "custom_note", "payload": payload})

    kwargs = {
        "platform": opts.get("platform", "qq"),
        "on_message": on_message,
        "reconnect_delay": float(opts.get("reconnect_delay", 2.0)),
    }
    if opts.get("ca"):
        kwargs["ssl_ca_certs"] = opts["ca"]
    config = create_client_config(opts["url"], opts["api_key"], **kwargs)
    client = WebSocketClient(config)
    client.register_custom_handler("note", on_note)

    # Remember every frame the client hands to its network driver (msg_id -> envelope), so
    # that a test can put one back into 0.6.8's resend cache (a frame whose ack was lost).
    sent = {}
    driver_send = client.network_driver.send_message

    async def recording_send(connection_uuid, message):
        sent[message.get("msg_id")] = message
        return await driver_send(connection_uuid, message)

    client.network_driver.send_message = recording_send

    def active():
        uuid = client.get_connection_uuid()
        return bool(uuid) and uuid in client.network_driver.active_connections

    def cache():
        return client.network_driver.message_cache

    async def connect(cmd):
        ok = await client.connect()
        return {"connected": ok, "is_connected": client.is_connected(),
                "last_error": client.get_last_error(), "uuid": client.get_connection_uuid()}

    async def state(cmd):
        return {"is_connected": client.is_connected(), "active": active(),
                "last_error": client.get_last_error(), "uuid": client.get_connection_uuid()}

    async def send_message(cmd):
        before = set(sent)
        ok = await client.send_message(APIMessageBase.from_dict(cmd["message"]))
        new = [m for m in sent if m not in before]
        return {"ok": ok, "msg_id": new[-1] if new else None}

    async def send_custom(cmd):
        before = set(sent)
        ok = await client.send_custom_message(cmd["type"], cmd["payload"])
        new = [m for m in sent if m not in before]
        return {"ok": ok, "msg_id": new[-1] if new else None}

    async def cached(cmd):
        return {"ids": sorted(c.message_id for c in cache().get_all())}

    async def inject_cache(cmd):
        msg_id = cmd["msg_id"]
        cache().add(msg_id, sent[msg_id], client.get_connection_uuid())
        return {"ids": sorted(c.message_id for c in cache().get_all())}

    async def wait_active(cmd):
        return {"ok": await poll(active, float(cmd.get("timeout", 10)))}

    async def wait_inactive(cmd):
        return {"ok": await poll(lambda: not active(), float(cmd.get("timeout", 10)))}

    async def stats(cmd):
        return {"stats": client.get_stats()}

    async def run():
        announce_package()
        await client.start()
        emit("READY")
        await serve_commands({
            "connect": connect,
            "state": state,
            "send_message": send_message,
            "send_custom": send_custom,
            "cache": cached,
            "inject_cache": inject_cache,
            "wait_active": wait_active,
            "wait_inactive": wait_inactive,
            "stats": stats,
        })

    try:
        asyncio.run(run())
    finally:
        hard_exit(0)


if __name__ == "__main__":
    main()
