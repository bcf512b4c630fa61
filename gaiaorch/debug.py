"""What Django's DEBUG error page may show of the settings (DEFAULT_EXCEPTION_REPORTER_FILTER).

Django hides settings whose names look secret (…KEY, …PASS…, …TOKEN…), but DATABASE_URL and
REDIS_URL carry their passwords inside URLs, and those URLs are copied into CHANNEL_LAYERS and
Q_CLUSTER under innocent names; a webhook's `url` is a secret as a whole.
"""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter

PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(?=@)", re.IGNORECASE)


class CredentialHidingFilter(SafeExceptionReporterFilter):
    """Also hides every setting named `url` or `…_URL`, and the password of any URL anywhere."""

    hidden_settings = re.compile(rf"{SafeExceptionReporterFilter.hidden_settings.pattern}|(^|_)URL$", re.I)

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return PASSWORD_IN_URL.sub(rf"\g<head>{self.cleansed_substitute}", cleansed)
        return cleansed
