"""Server-side helpers of bench/leases_http.py, run with the server's environment:

python -m bench.leases_setup prepare N   # migrate, empty lease tables, print tokens as JSON
python -m bench.leases_setup leftovers   # print live and released lease counts as JSON
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
    return {f"bench-{n:02d}": ensure_service_account(f"bench-{n:02d}", rotate=True) for n in range(clients)}


def leftovers() -> dict[str, int]:
    from leases.models import Lease, LeaseStatus

    return {
        "live": Lease.objects.live().count(),
        "released": Lease.objects.filter(status=LeaseStatus.RELEASED).count(),
    }


if __name__ == "__main__":
    django.setup()
    result = prepare(int(sys.argv[2])) if sys.argv[1] == "prepare" else leftovers()
    print(json.dumps(result))
