"""What a token may be bound to (``caravan tokens issue --own-orders``, ``--source S``):
sources as an event may carry them, never ``http`` (every HTTP client's orders), and never
with a scope no binding limits: ``ops``, which reaches every order, the credit and SMS opt-out
scopes and ``platform:write``, which read every buyer's or app's; ``platform:read`` bound to no
platform app (it would read nothing), nor of a token holding no orders or platform:read
scope (inventory's, metrics: a binding would change nothing)."""

import pytest

from shared.auth.tokens import BadToken, check_binding


def test_unbound_stays_unbound_and_sources_are_kept_once_each_in_order() -> None:
    assert check_binding(["orders:read"], None) is None
    assert check_binding(["orders:read"], []) == []
    kept = check_binding(["orders:read"], ["storefront/b", "platform/t-market", "storefront/b"])
    assert kept == ["platform/t-market", "storefront/b"]


def test_scopes_holding_nothing_of_another_client_s_may_be_bound() -> None:
    """The orders API's own, inventory's stock and the metrics: no client's orders or buyers."""
    scopes = ["orders:read", "orders:write", "inventory:read", "inventory:write", "metrics"]
    assert check_binding(scopes, ["storefront/b"]) == ["storefront/b"]


def test_platform_read_is_bound_to_the_platform_apps_among_its_sources() -> None:
    """A platform's token reads its app's problems and callbacks (``Principal.apps``)."""
    scopes = ["orders:read", "platform:read"]
    kept = check_binding(scopes, ["platform/t-market", "storefront/b"])
    assert kept == ["platform/t-market", "storefront/b"]


@pytest.mark.parametrize(
    ("scopes", "sources", "said"),
    [
        (["orders:read"], ["a|b"], "a source may not contain '|' (a URI-reference has none)"),
        (["orders:read"], ["a\x00"], "a source may not contain NUL"),
        (["orders:read"], [""], "a source is 1-256 characters, got 0"),
        (["orders:read"], ["s" * 257], "a source is 1-256 characters, got 257"),
        (["orders:read"], ["HTTP"], "source http is every HTTP client's orders"),
        (["ops", "orders:read"], [], "a token with the scope ops reaches every order"),
        (["ops"], ["storefront/b"], "it cannot be bound"),
        (
            ["credit:read", "orders:read"],
            [],
            "a token with the scope credit:read reads every buyer's credit line, loans and"
            " payments (payments keeps no order's client), whatever it is bound to: it cannot"
            " be bound",
        ),
        (["notifications:read"], [], "notifications:read reads every phone number's SMS opt-out"),
        (["platform:write"], ["platform/t"], "platform:write reads every platform app's mappings"),
        (
            ["platform:read"],
            ["storefront/b"],
            "a token with the scope platform:read, bound, reads the problems and callbacks of"
            " the platform apps among its sources alone: name one (--source platform/APP)",
        ),
        (["platform:read"], ["platform/"], "name one (--source platform/APP)"),
        (
            ["inventory:read"],
            [],
            "a token with inventory:read reads no order nor platform app: a binding (which"
            " limits orders:read, orders:write, platform:read) would change nothing; leave it"
            " unbound",
        ),
        (["metrics", "inventory:write"], ["storefront/b"], "with inventory:write, metrics reads"),
        (
            ["ops", "credit:write", "credit:read"],
            [],
            "a token with the scopes ops reaches every order; with credit:read, credit:write"
            " reads every buyer's credit line",
        ),
    ],
)
def test_a_binding_no_order_could_have_or_of_no_effect_is_refused(
    scopes: list[str], sources: list[str], said: str
) -> None:
    with pytest.raises(BadToken) as refused:
        check_binding(scopes, sources)
    assert said in str(refused.value)
