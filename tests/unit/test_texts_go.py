"""``caravan up``'s ready line says where texts go, as the notifications service chooses its
gateway: it named the HTTP API, the operations page and the platform apps, and an operator
who had not set ``CARAVAN_NOTIFICATIONS_GATEWAY_URL`` read nowhere that no text was sent."""

from services.notifications.bootstrap import make_gateway
from services.notifications.texts_go import ready_note
from shared.settings import Settings

KEY = "gw-key-0001"


def test_without_a_gateway_url_texts_go_to_the_sink_and_the_line_says_so() -> None:
    settings = Settings()
    assert type(make_gateway(settings)).__name__ == "SinkGateway"
    assert (
        ready_note(settings)
        == "texts to the sink, none sent (no CARAVAN_NOTIFICATIONS_GATEWAY_URL)"
    )
    chosen = Settings(notifications_gateway="sink", notifications_gateway_url="http://gw.example")
    assert type(make_gateway(chosen)).__name__ == "SinkGateway"
    assert ready_note(chosen) == "texts to the sink, none sent (CARAVAN_NOTIFICATIONS_GATEWAY=sink)"


def test_with_a_gateway_url_the_line_names_it_without_its_key() -> None:
    url = f"https://merchant:{KEY}@gw.example:8443/sms?apikey={KEY}"
    settings = Settings(notifications_gateway_url=url)
    assert type(make_gateway(settings)).__name__ == "SimulatorGateway"
    assert ready_note(settings) == "texts to https://gw.example:8443/sms (simulator)"
    infobip = Settings(
        notifications_gateway="infobip",
        notifications_gateway_url="https://api.infobip.example",
        notifications_gateway_api_key=KEY,
    )
    assert type(make_gateway(infobip)).__name__ == "InfobipGateway"
    assert ready_note(infobip) == "texts to https://api.infobip.example (infobip)"
