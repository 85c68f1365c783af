"""What an operator is shown of a failed tool's log (caravan/infra/logs.py): its error line,
cut at a word with "…" where it is too long, not mid-word."""

import json

from caravan.infra.logs import error_line, service_error

KAFKA_LOG = (
    "[2026-12-04 15:58:01,204] INFO Registered kafka:type=kafka.Log4jController MBean\n"
    "[2026-12-04 15:58:01,951] ERROR Exiting Kafka due to fatal exception (kafka.Kafka$) "
    "org.apache.kafka.common.config.ConfigException: Invalid value PLAINTEXT://127.0.0.1:21092 "
    "for configuration advertised.listeners: Each listener must have a different port, "
    "listeners: PLAINTEXT://127.0.0.1:21092,CONTROLLER://127.0.0.1:22092\n"
)


def test_a_long_error_line_is_cut_at_a_word_with_an_ellipsis() -> None:
    said = error_line(KAFKA_LOG)
    assert said == (
        "[2026-12-04 15:58:01,951] ERROR Exiting Kafka due to fatal exception (kafka.Kafka$) "
        "org.apache.kafka.common.config.ConfigException: Invalid value "
        "PLAINTEXT://127.0.0.1:21092 for configuration…"
    ), said
    assert len(said) <= 200


def test_an_error_line_that_fits_is_whole() -> None:
    assert error_line(KAFKA_LOG, chars=400) == KAFKA_LOG.splitlines()[1]


def test_a_services_error_is_the_message_of_its_last_error_line_or_a_traceback_s_last() -> None:
    logged = [
        json.dumps({"level": "error", "message": "cannot reach Kafka"}),
        json.dumps({"level": "info", "message": "stopping"}),
        "Traceback (most recent call last):",
        '  File "shared/main.py", line 60, in run',
        "OSError: [Errno 98] address already in use " + "x" * 300,
    ]
    said = service_error("\n".join(logged))
    assert said.startswith("OSError: [Errno 98] address already in use") and len(said) <= 200
    assert service_error("\n".join(logged[:2])) == "cannot reach Kafka"
    assert service_error(logged[1]) == logged[1]  # no error: its last line
