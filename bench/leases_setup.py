"""Server-side helpers of bench/leases_http.py, run with the server's environment:

python -m bench.leases_setup prepare N   # migrate, empty lease tables, print tokens as JSON
python -m bench.leases_setup leftovers   # print live and released lease counts as JSON
python -m bench.leases_setup queue N     # on every GPU: bench-00 holds, bench-01 … bench-N wait
"""

import json
import sys

import django


def prepare(clients: int) -> dict[str, str]:
    from django.core.management import call_command

    from gaiaorch.auth import ensure_service_account
    from leases.models import Gpu, Lease

    call_command("migrate", verbosity=0)
    Lease.objects.all().delete()
    Gpu.objects.all().delete()
    return {f"bench-{n:02d}": ensure_service_account(f"bench-{n:02d}", rotate=True) for n in range(clients)}  # type: ignore[misc]


def leftovers() -> dict[str, int]:
    from leases.models import Lease, LeaseStatus

    return {
        "live": Lease.objects.live().count(),
        "released": Lease.objects.filter(status=LeaseStatus.RELEASED).count(),
    }


def queue(waiters: int) -> dict[str, int]:
    from leases import services

    gpus = services.sync_gpus()
    for gpu in gpus:
        for number in range(waiters + 1):
            name = f"bench-{number:02d}"
            services.acquire(requester=name, reason="bench", gpu=gpu.index, actor=name)
    return {"gpus": len(gpus), "leases": len(gpus) * (waiters + 1)}


if __name__ == "__main__":
    django.setup()
    commands = {"prepare": prepare, "queue": queue}
    result = commands[sys.argv[1]](int(sys.argv[2])) if sys.argv[1] in commands else leftovers()
    print(json.dumps(result))
