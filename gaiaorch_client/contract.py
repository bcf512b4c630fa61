"""The fields of a GPU request, declared once: what `POST /gpu/acquire` and `POST /gpu/wait` accept.

The server builds its serializers (leases.api.serializers), the async wait view's call of the
lease service (leases.api.wait) and the options of `manage.py gpu acquire|wait` from these
tuples; this client checks its acquire options against them. A field added here reaches all of
them. Only the standard library: the client is copied into services as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REQUIRED: Any = object()  # the default of a field the request must give


@dataclass(frozen=True)
class Field:
    name: str
    kind: type  # int, float, str or bool
    help: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    nullable: bool = False  # null (None) is accepted and means "not given"
    option: str = ""  # the command line's option, when not --<name with dashes>
    words: tuple[str, ...] = ()  # words accepted beside a number (the GPU's "any")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def cli_option(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")


MAX_TTL_SECONDS = 7 * 24 * 3600
MAX_WAIT_SECONDS = 3600
MAX_GPU_INDEX = 63  # GAIAORCH_GPU_COUNT is at most 64
ANY_GPU = "any"  # acquire's `gpu` for "whichever GPU fits my memory need"

# What a lease is asked for: each is an argument of the lease service's acquire().
ACQUIRE: tuple[Field, ...] = (
    Field("requester", str, "the service that will hold the GPU, e.g. gaia-study", max_length=100),
    Field("reason", str, "why the GPU is needed (shown to operators and in events)", max_length=500),
    Field(
        "gpu",
        int,
        f'the GPU\'s index, or "{ANY_GPU}": the GPU whose measured free memory fits memory_mib (else the '
        "requester's configured vram_mib) best",
        default=0,
        minimum=0,
        maximum=MAX_GPU_INDEX,
        words=(ANY_GPU,),
    ),
    Field(
        "priority", int, "higher is granted first; ties by arrival", default=0, minimum=-1000, maximum=1000
    ),
    Field(
        "ttl_seconds",
        int,
        "seconds the grant lives without a heartbeat; renew with heartbeat",
        default=None,
        minimum=1,
        maximum=MAX_TTL_SECONDS,
        nullable=True,
        option="--ttl",
    ),
    Field(
        "memory_mib",
        int,
        "free VRAM (MiB) the GPU must have for a grant",
        default=None,
        minimum=1,
        maximum=10_000_000,
        nullable=True,
    ),
)
# What a wait adds (POST /gpu/wait): how long to wait, and whether a hang-up keeps the place.
WAIT: tuple[Field, ...] = (
    Field(
        "timeout_seconds",
        float,
        "seconds to wait for the grant",
        default=60.0,
        minimum=0,
        maximum=MAX_WAIT_SECONDS,
        option="--timeout",
    ),
    Field("keep_queued", bool, "stay queued when the caller hangs up", default=False),
)


def acquire_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """The lease service's acquire() arguments among validated request parameters."""
    return {field.name: params[field.name] for field in ACQUIRE}


def acquire_request(requester: str, reason: str, options: dict[str, Any]) -> dict[str, Any]:
    """The body of an acquire from a client's options; an option that is no field is refused here,
    not sent to be refused (or ignored) by the server."""
    names = {field.name for field in ACQUIRE}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown acquire option(s) {unknown}; the fields are {sorted(names)}")
    return {"requester": requester, "reason": reason, **options}
