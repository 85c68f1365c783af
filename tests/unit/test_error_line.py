"""What an operator is shown of a failed tool's log (caravan/infra/logs.py): its error line,
cut at a word with "…" where it is too long, not mid-word."""

from caravan.infra.logs import error_line

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
