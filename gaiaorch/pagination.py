from rest_framework.pagination import LimitOffsetPagination


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """Limit/offset paging with caps: a huge number is clamped, never passed on to overflow the
    database's integer type (which would turn a bad query string into a 503)."""

    max_limit = 1000
    max_offset = 2**31 - 1  # past any real table; fits SQLite's and PostgreSQL's integers

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)
