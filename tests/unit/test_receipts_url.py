"""The receipts URL given to the SMS gateway carries the receipts secret so that the route
reads it back whole: a secret of ``openssl rand -base64 32`` has ``+``, ``/`` and ``=``,
and one made by hand may have ``&``, ``#`` or ``%``; unquoted, the route read another key
(``+`` a space, the rest cut at ``&`` or ``#``) and refused every receipt 401."""

import pytest
from starlette.datastructures import QueryParams

from services.notifications.bootstrap import receipts_url
from shared.settings import Settings

SECRET = "q+Z/8w==&next=1#frag%2Fé x"


@pytest.mark.parametrize(
    ("given", "params"),
    [
        ("http://notifications.internal:8083/sms/receipts", {}),
        ("https://gw.example/cb?tenant=shawan", {"tenant": "shawan"}),
    ],
)
def test_the_route_reads_the_secret_of_the_receipts_url_whole(
    given: str, params: dict[str, str]
) -> None:
    settings = Settings(notifications_receipts_url=given, notifications_receipts_secret=SECRET)
    url = receipts_url(settings)
    base, _, query = url.partition("?")
    assert base == given.partition("?")[0]
    assert dict(QueryParams(query)) == {**params, "key": SECRET}
