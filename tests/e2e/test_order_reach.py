"""A token bound to its own orders (``caravan tokens issue --own-orders``, ``--source S``)
reaches, through the orders API, the orders it placed over HTTP and those of its sources,
nothing else. An unbound token reaches every order, as every token did before."""

import uuid

from tests.e2e.test_ops import cli
from tests.harness import System


def _said(stderr: str) -> str:
    """What a refusal said, its box and folding undone."""
    return " ".join(stderr.replace("│", " ").split())


async def test_a_token_is_bound_at_issue_listed_so_and_a_binding_of_no_effect_refused(
    caravan: System,
) -> None:
    tag = uuid.uuid4().hex[:8]
    name, source = f"bound-{tag}", f"storefront/b-{tag}"
    issued = await cli(
        caravan, "tokens", "issue", "--scope", "orders:read", "--name", name, "--source", source
    )
    assert issued.returncode == 0, issued.stderr
    assert f"token {name} (orders:read; orders: own, {source}), shown once" in issued.stderr
    stored = "select sources from auth.tokens where name = :n"
    assert await caravan.scalar(stored, n=name) == [source]
    own = f"own-{tag}"
    issued = await cli(
        caravan, "tokens", "issue", "--scope", "orders:read", "--name", own, "--own-orders"
    )
    assert issued.returncode == 0, issued.stderr
    assert await caravan.scalar(stored, n=own) == []
    listed = (await cli(caravan, "tokens", "list")).stdout.splitlines()
    assert [line for line in listed if f"own, {source}" in line and name in line], listed
    audited = "select after from auth.audit where action = 'token.issue' and target = :n"
    assert await caravan.scalar(audited, n=name) == {
        "name": name,
        "scopes": ["orders:read"],
        "sources": [source],
    }
    for args, said in (
        (["--source", "a|b"], "a source may not contain '|' (a URI-reference has none)"),
        (["--source", "HTTP"], "source http is every HTTP client's orders"),
        (["--scope", "ops", "--own-orders"], "a token with the scope ops reaches every order"),
    ):
        refused = await cli(caravan, "tokens", "issue", "--scope", "orders:read", *args)
        assert refused.returncode == 2 and said in _said(refused.stderr), refused.stderr
