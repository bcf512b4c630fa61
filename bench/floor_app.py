"""The floor: a bare ASGI app answering /gpu/acquire, /gpu/wait and /gpu/release with
seed-shaped JSON, no framework, no database. Served by the same daphne as gaiaorch, so the
difference between the two is what gaiaorch itself costs per request."""

import itertools
import json
import uuid

TOKENS = itertools.count(1)


async def _drain(receive) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    await _drain(receive)
    if scope["path"] in ("/gpu/acquire", "/gpu/wait"):
        answer = {"success": True, "lease_id": str(uuid.uuid4()), "fencing_token": next(TOKENS), "gpu": 0}
    else:
        answer = {"success": True, "status": "released"}
    body = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
