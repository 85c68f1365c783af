"""How long finished texts are kept (``CARAVAN_NOTIFICATIONS_SMS_RETENTION_DAYS``): 180 days
by default, 0 for ever, and never shorter than the inbox rows, or a record Kafka delivers
again after its text was deleted would text the buyer a second time. A shorter setting is
refused at start, saying both settings and the least it may be."""

import pytest
from pydantic import ValidationError

from services.notifications.bootstrap import finished_texts
from shared.settings import Settings


def test_finished_texts_are_kept_180_days_by_default() -> None:
    texts = finished_texts(Settings())
    assert (texts.table.name, texts.column, texts.hours) == ("sms", "created_at", 180 * 24)
    assert texts.done == "status NOT IN ('pending', 'sending')"


@pytest.mark.parametrize(
    ("days", "inbox_hours"), [(38, 912), (0, 912), (1, 24), (1, 0), (180, 912)]
)
def test_a_retention_as_long_as_the_inbox_or_for_ever_is_taken(
    days: float, inbox_hours: float
) -> None:
    settings = Settings(notifications_sms_retention_days=days, inbox_retention_hours=inbox_hours)
    assert finished_texts(settings).hours == days * 24


def test_a_retention_shorter_than_the_inbox_is_refused_saying_the_least_it_may_be() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(notifications_sms_retention_days=30, inbox_retention_hours=912)
    said = str(refused.value)
    assert "CARAVAN_NOTIFICATIONS_SMS_RETENTION_DAYS=30" in said
    assert "CARAVAN_INBOX_RETENTION_HOURS=912 (38 days)" in said
    assert "at least 38 days" in said
