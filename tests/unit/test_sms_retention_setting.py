"""How long finished texts are kept (``CARAVAN_NOTIFICATIONS_SMS_RETENTION_DAYS``): 180 days
by default, 0 for ever, and never shorter than the inbox rows, or a record Kafka delivers
again after its text was deleted would text the buyer a second time: a shorter setting is
taken, and the pruner keeps texts as long as inbox rows (``Retention.prune``). Refusing it at
start stopped every service, the CLI too, of a deployment keeping inbox rows past 180 days."""

import pytest

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


def test_a_retention_shorter_than_the_inbox_is_taken_whatever_the_inbox_keeps() -> None:
    """An inbox kept past 180 days (a deployment whose broker keeps records longer) with the
    default text retention, and a text retention set shorter than the inbox: both load."""
    assert Settings(inbox_retention_hours=5000).notifications_sms_retention_days == 180
    shorter = Settings(notifications_sms_retention_days=30, inbox_retention_hours=912)
    assert finished_texts(shorter).hours == 30 * 24
