"""Calling a service's admin HTTP API from the command line, with its problem answers shown,
as the token of ``CARAVAN_TOKEN`` (or the file ``CARAVAN_TOKEN_FILE``, or the development
token of ``caravan up``)."""

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from caravan.output import OperatorError, error_text
from shared.addresses import local_url
from shared.api import (
    DATABASE_AWAY,
    DATABASE_BUSY,
    DATABASE_MUTE,
    DATABASE_REFUSES,
    SERVICE_LOOP_LATE,
    bearer_headers,
)
from shared.settings import DEV_TOKEN_FILE, Settings

if TYPE_CHECKING:
    import httpx

AWAY = frozenset({502, 503, 504})
"""The answers of a part of the system away, which a retry may mend: the service's 503 (what
it needs is away), a gateway's 502 (the service behind it is) or 504 (it did not answer in
time), as docs/commands.md gives exit 2 to a part of the system a command cannot reach."""


class ProblemAnswer(OperatorError):
    """A service's problem answer (a status of 400 or more) to an admin call: exit 1, its
    refusal (a 4xx) or its failure (a 500), or exit 2 where a part of the system is away
    (:data:`AWAY`: a retry may help); unless the command makes something else of its
    ``status`` (a 404 of what it checks for) or of its ``errors`` (a 422's fields at fault,
    each ``{field, message}``), or of its ``unknown_fields`` (None: it named none)."""

    def __init__(
        self,
        message: str,
        status: int,
        errors: list[dict[str, str]] | None = None,
        unknown_fields: list[str] | None = None,
    ):
        super().__init__(message, exit_code=2 if status in AWAY else 1)
        self.status = status
        self.errors = errors or []
        self.unknown_fields = unknown_fields

    def unknown_field(self, field: str) -> bool:
        """Whether this is the 422 of a service that does not know the body's ``field``: one
        older than the command, which sent a field added since (every body of ours forbids
        the fields it does not know, a misspelt one recorded as nothing). A service names
        them in ``unknown_fields`` (``shared.http.invalid``, by the error's type); one of
        before it did only in the words of its pydantic (:data:`UNKNOWN_BEFORE`)."""
        if self.status != 422:
            return False
        if self.unknown_fields is not None:
            return field in self.unknown_fields
        return {"field": field, "message": UNKNOWN_BEFORE} in self.errors


UNKNOWN_BEFORE = "Extra inputs are not permitted"
"""What a service of before ``unknown_fields`` (2026-12-07) said of a field its body does not
know: the words of the pydantic it was built with, fixed whatever pydantic says now."""


def base_url(url: str | None, service: str) -> str:
    """``url`` (a command's ``--url``), else ``service``'s API as the settings place it
    (``CARAVAN_HTTP_HOST`` and ``CARAVAN_<SERVICE>_HTTP_PORT``; the orders API's
    ``CARAVAN_HTTP_PORT``)."""
    if url:
        return url
    settings = Settings()
    return local_url(settings.http_host, http_port(service, settings))


def http_port(service: str, settings: Settings) -> int:
    """``service``'s API port as ``settings`` place it (:func:`base_url`)."""
    port: int = (
        settings.http_port if service == "orders" else getattr(settings, f"{service}_http_port")
    )
    return port


def auth_headers() -> dict[str, str]:
    return bearer_headers(Settings().api_token())


def call(
    base: str, service: str, method: str, path: str, *ids: str, **kwargs: Any
) -> dict[str, Any]:
    """The body of :func:`answer`."""
    return answer(base, service, method, path, *ids, **kwargs)[1]


def answer(
    base: str,
    service: str,
    method: str,
    path: str,
    *ids: str,
    options: Mapping[str, str] | None = None,
    client: "httpx.Client | None" = None,
    **kwargs: Any,
) -> tuple[int, dict[str, Any]]:
    """The status and body of ``method path`` on ``base``, each ``{}`` of ``path`` replaced
    by the next of ``ids`` percent-encoded whole (a buyer id ``b-1#x`` is that buyer, not
    ``b-1``); an unreachable API, a 503 of its database away (for which it says to run the
    command again once PostgreSQL is back, not its ``Retry-After`` of a few seconds) or a
    header that cannot be sent is an :class:`OperatorError` of exit 2, another problem answer a
    :class:`ProblemAnswer` (with the fields at fault, if any, on the lines after it), said in
    the command's ``options`` (:func:`as_options`). Sent on ``client`` (its connection kept
    open for the next call) if given, else on a client of its own."""
    import httpx  # here: every command imports this module, not every command calls

    if client is None:
        with httpx.Client() as client:
            return answer(
                base, service, method, path, *ids, options=options, client=client, **kwargs
            )
    headers = {**auth_headers(), **kwargs.pop("headers", {})}
    for name, value in headers.items():
        if not value.isascii():  # httpx would raise UnicodeEncodeError
            raise OperatorError(f"not sent: {name} must be ASCII, not {value!r}", exit_code=2)
    url = base + path.format(*(quote(i, safe="") for i in ids))
    try:
        response = client.request(method, url, timeout=10, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        paused = paused_note(service)
        said = f"{service} API unreachable: {error_text(exc)}{paused and f'; {paused}'}"
        raise OperatorError(said + _key_to_retry(headers), exit_code=2) from exc
    try:
        body: dict[str, Any] = response.json()
    except ValueError:  # not a problem body: a proxy's page, or a server error
        body = {"title": f"HTTP {response.status_code}", "detail": response.text[:300]}
    if response.status_code == 503 and body.get("detail") in (DATABASE_AWAY, DATABASE_BUSY):
        said = (
            f"the {service} service cannot reach its database (it answered 503): run this"
            " again once PostgreSQL is back"
            if body["detail"] == DATABASE_AWAY
            else f"the {service} service's database takes no more connections now (it"
            " answered 503): run this again in a while"
        )
        raise OperatorError(said + _key_to_retry(headers), exit_code=2)
    detail = str(body.get("detail"))
    if response.status_code == 503 and detail.startswith((DATABASE_REFUSES, DATABASE_MUTE)):
        why = detail.removeprefix("the database").removesuffix("; retry")
        said = f"the {service} service's database{why} (it answered 503): run this again later"
        raise OperatorError(said + _key_to_retry(headers), exit_code=2)
    if response.status_code == 503 and detail.startswith(SERVICE_LOOP_LATE):  # not PostgreSQL's
        why = detail.removeprefix("this service's").removesuffix("; retry")
        said = f"the {service} service's{why} (it answered 503): run this again later"
        raise OperatorError(said + _key_to_retry(headers), exit_code=2)
    if response.status_code >= 400:
        said = f"{body.get('title', response.status_code)}: {body.get('detail')}"
        named = {**command_options(), **(options or {})}
        for error in body.get("errors", []):  # a 422's fields at fault, as the command's
            field = error["field"]
            field = named.get(field.removeprefix("body."), field)  # query.X: by as_options
            if error["message"] == body.get("detail") and as_options(field, named) in as_options(
                error["message"], named
            ):
                continue  # the first line said it whole, naming the field ("--until ...")
            # The body as a whole (a lot's dates out of order): its words say what.
            said += (
                f"\n  {error['message']}" if field == "body" else f"\n  {field}: {error['message']}"
            )
        said = as_options(said, named)
        if response.status_code == 401:
            said += "\n" + _token_refused(Settings())
        wait = response.headers.get("Retry-After")
        if response.status_code == 429:
            said += (
                f"\ntry again in {wait} s: the {service} API refuses this address that long after"
                " too many failed token attempts from it (each service counts its own)"
            )
        elif wait:
            said += f"\ntry again in {wait} s"
        if response.status_code >= 500:
            said += _key_to_retry(headers)
        raise ProblemAnswer(
            said, response.status_code, body.get("errors"), body.get("unknown_fields")
        )
    return response.status_code, body


def as_options(said: str, options: Mapping[str, str]) -> str:
    """An API's refusal ``said`` in the terms of the command that called it, ``options``
    naming the command's option (or argument) for each query parameter or body field it
    sends: a field at fault ``query.buyer_id`` is ``--buyer``, ``body.available_from`` is
    ``--from``, and so is the parameter its words name, which an API writes in backticks
    (`` `buyer_id` ``, `` `source` `` is ``--source``) or bare where it is a name no word is
    (``best_before 2000-01-01 is before available_from 2026-12-07``: one with ``_``); a word
    that is also a parameter's name (``a reason``) is left as it is."""
    for name, option in options.items():
        for written in (f"query.{name}", f"body.{name}", f"`{name}`"):
            said = said.replace(written, option)
        if "_" in name:
            said = re.sub(rf"(?<![\w.`/-]){re.escape(name)}(?![\w`/-])", option, said)
    return said


def command_options() -> dict[str, str]:
    """The parameters of the command running (none outside one), each as its user types it:
    an option by its long name (``available_from`` is ``--from``), an argument by the name
    its usage line shows (``LIMIT_FEN``). An API names the fields it was sent, most of them
    the command's parameters by name; a command whose fields are named otherwise adds them
    (:func:`as_options`)."""
    from typer._click.globals import get_current_context  # Typer's own click

    context = get_current_context(silent=True)
    if context is None:
        return {}
    named: dict[str, str] = {}
    for param in context.command.params:
        if param.name is None:
            continue
        if param.param_type_name == "option":
            named[param.name] = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        else:
            named[param.name] = param.metavar or param.name.upper()  # as its usage shows it
    return named


def found(base: str, service: str, path: str, *ids: str) -> dict[str, Any] | None:
    """The body of ``GET path`` (as :func:`call`), or None where the service answers 404: it
    has no such thing."""
    try:
        return call(base, service, "GET", path, *ids)
    except ProblemAnswer as exc:
        if exc.status == 404:
            return None
        raise


def pages(
    base: str,
    service: str,
    path: str,
    params: dict[str, str] | None = None,
    options: Mapping[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each page of a paged listing (``GET path``), following ``next_cursor`` to the last;
    a refusal said in the command's ``options`` (:func:`as_options`). The pages are asked
    for on one connection: each call of its own took 35-40 ms more, most of it making the
    client anew (8,525 lots of ``caravan inventory spoiled``, 86 pages, took 10.5 s)."""
    import httpx

    cursor = None
    with httpx.Client() as client:
        while True:
            after: dict[str, str] = {"cursor": cursor} if cursor else {}
            query = {**(params or {}), **after}
            body = call(base, service, "GET", path, params=query, options=options, client=client)
            yield body
            cursor = body.get("next_cursor")
            if cursor is None:
                return


def newest(
    base: str,
    service: str,
    path: str,
    params: dict[str, str],
    limit: int,
    options: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """The first ``limit`` items of a listing read newest first (``GET path``), over as
    many pages as that takes; and whether there are more. A refusal is said in the
    command's ``options`` (:func:`as_options`)."""
    from shared.pagination import MAX_PAGE

    found: list[dict[str, Any]] = []
    first = {**params, "limit": str(min(limit, MAX_PAGE))}
    for page in pages(base, service, path, first, options):
        found += page["items"]
        if len(found) >= limit:
            return found[:limit], len(found) > limit or page["next_cursor"] is not None
    return found, False


def _token_refused(settings: Settings) -> str:
    """After a 401: where the token sent came from (or that none was found), and how to send
    one that is valid."""
    issue = "`caravan tokens issue --scope SCOPE`"
    if settings.token is not None:
        return (
            "the token sent is CARAVAN_TOKEN's (set, it overrides CARAVAN_TOKEN_FILE and"
            f" {DEV_TOKEN_FILE}): set it to a valid one ({issue}), or unset it"
        )
    if settings.token_file is not None:
        return (
            f"the token sent is the one in CARAVAN_TOKEN_FILE ({settings.token_file}): put a"
            f" valid one there ({issue}), or unset it"
        )
    if DEV_TOKEN_FILE.is_file():
        return (
            f"the token sent is caravan up's development token ({DEV_TOKEN_FILE}): `caravan up`"
            f" issues it anew, or set CARAVAN_TOKEN to a valid one ({issue})"
        )
    return (
        f"no token found: set CARAVAN_TOKEN (or CARAVAN_TOKEN_FILE) to one ({issue}),"
        " or run `caravan up`, which issues a development token"
    )


def paused_note(service: str) -> str:
    """That ``caravan pause`` stopped ``service`` under the ``caravan up`` of this checkout,
    and how to start it again; empty where it is not paused. Said after its API went
    unanswered (a drill's operator, a service paused for a replay, read `orders API
    unreachable: [Errno 111] Connection refused` from `caravan stuck` and nothing of why),
    and by `caravan stuck` of the step its orders wait for."""
    from caravan import checkout

    if service not in checkout.paused() or not checkout.running_up():
        return ""
    return (
        f"{service} is paused (`caravan pause`) under this checkout's `caravan up`:"
        f" `caravan resume {service}` starts it again"
    )


def _key_to_retry(headers: dict[str, str]) -> str:
    """After a call whose outcome is unknown (no answer, a 5xx): the line naming the key to
    retry it with, so that a change made before the answer was lost is not made twice."""
    key = headers.get("Idempotency-Key")
    return f"\nit may have been applied: retry with --key {key} (applied once)" if key else ""
