"""Server-side helpers of bench/leases_http.py, run with the server's environment:

python -m bench.leases_setup prepare N   # migrate, empty lease tables, print tokens as JSON
python -m bench.leases_setup leftovers   # print live and released lease counts as JSON
python -m bench.leases_setup queue N     # on every GPU: bench-00 holds, bench-01 … bench-N wait
python -m bench.leases_setup history L E # add L ended leases (on GPU 0) and E events, in SQL
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
            # A day's TTL: a waiter left without signs of life would expire after the 30 s grace,
            # and status rows timed later (after the history is written) would read shorter queues.
            services.acquire(requester=name, reason="bench", gpu=gpu.index, ttl_seconds=86400, actor=name)
    return {"gpus": len(gpus), "leases": len(gpus) * (waiters + 1)}


def history(leases: int, events: int) -> dict[str, int]:
    """A busy box's past, written by the database itself (generate_series / a recursive CTE)."""
    from django.db import connection, transaction
    from django.db.models import F
    from django.db.models.functions import Greatest

    from leases.models import Gpu, Lease
    from notifications.models import Event

    gpu = Gpu.objects.get(index=0).id
    offset = 10**12  # arrival and fencing token far above the live ones (both unique per GPU)
    if connection.vendor == "postgresql":
        numbers = "SELECT n FROM generate_series(1, %s) AS n"
        lease_id, now = "md5(n::text)::uuid", "now() - interval '1 day'"
        data = "'{}'::jsonb"
    else:
        numbers = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < %s)"
        numbers += " SELECT n FROM c"
        lease_id, now = "lower(hex(randomblob(16)))", "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-1 day')"
        data = "'{}'"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Lease._meta.db_table} (id, gpu_id, requester, reason, priority, status, arrival,"
            " fencing_token, requested_at, granted_at, ended_at, ended_by, end_reason, waiting_for,"
            " adoption, standing)"
            f" SELECT {lease_id}, {gpu}, 'bench-history', 'bench', 0, 'released', {offset} + n,"
            f" {offset} + n, {now}, {now}, {now}, 'bench-history', '', '', 0, false FROM ({numbers}) AS s",
            [leases],
        )
        cursor.execute(
            f"INSERT INTO {Event._meta.db_table} (type, severity, title, message, data, actor,"
            " subject_kind, subject_id, correlation_id, created_at)"
            f" SELECT 'lease.released', 'info', 'history', '', {data}, 'bench-history', 'lease', '', '',"
            f" {now} FROM ({numbers}) AS s",
            [events],
        )
        # As the services keep them: a GPU's counters stay above every arrival and token given.
        after = offset + leases + 1
        Gpu.objects.filter(pk=gpu).update(
            next_arrival=Greatest(F("next_arrival"), after),
            next_fencing_token=Greatest(F("next_fencing_token"), after),
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Lease._meta.db_table}; ANALYZE {Event._meta.db_table}")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {"leases": Lease.objects.count(), "events": Event.objects.count()}


if __name__ == "__main__":
    django.setup()
    if sys.argv[1] == "history":
        print(json.dumps(history(int(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    commands = {"prepare": prepare, "queue": queue}
    result = commands[sys.argv[1]](int(sys.argv[2])) if sys.argv[1] in commands else leftovers()
    print(json.dumps(result))
