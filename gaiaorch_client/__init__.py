"""A small client for GAIA services talking to gaiaorch. Depends only on httpx.

    from gaiaorch_client import Client

    gaiaorch = Client("http://127.0.0.1:6410", requester="gaia-study")  # token: $GAIAORCH_TOKEN
    with gaiaorch.gpu("LoRA training", wait_seconds=600) as lease:
        train(fencing_token=lease.fencing_token)

Without `token=`, the client sends the token in the environment variable GAIAORCH_TOKEN (set it in
each service's compose environment). Copy this folder into a service (or put it on its path);
docs/notifications.md has the details.
"""

from gaiaorch_client.aio import AsyncClient
from gaiaorch_client.flows import GaiaorchError, HandoffFailed, HandoffTimeout, Lease, LeaseTimeout
from gaiaorch_client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "GaiaorchError",
    "HandoffFailed",
    "HandoffTimeout",
    "Lease",
    "LeaseTimeout",
]
