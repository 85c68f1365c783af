"""What the platform adapter serves, as its start line and ``caravan up``'s ready line say it:
its apps by name (never a secret) and where their pushes go. Light to import: ``caravan up``
says it without loading the adapter."""

from shared.addresses import served_at
from shared.settings import Settings


def served(settings: Settings) -> tuple[str, str] | None:
    """The names of the apps the adapter takes pushes for and calls back (``demo-market,
    t-market``) and the URL their pushes go to; None where no app is configured (every push
    is refused 401, ``no app``)."""
    if not settings.platform_apps:
        return None
    names = ", ".join(sorted(settings.platform_apps))
    return names, served_at(settings.http_host, settings.platform_http_port, "/platform/{app}/push")


def start_note(settings: Settings) -> str:
    """What the adapter's start line says (``platform started: ...``): an operator sees an
    app was loaded without trying a push, or that none was."""
    apps = served(settings)
    if apps is None:
        return "no app configured (CARAVAN_PLATFORM_APPS): every push is refused"
    names, where = apps
    return f"apps {names}; pushes to POST {where}"


def ready_note(settings: Settings) -> str:
    """What ``caravan up``'s ready line says of the adapter it started, as its start line
    does (:func:`start_note`)."""
    apps = served(settings)
    if apps is None:
        return "no platform app configured (CARAVAN_PLATFORM_APPS)"
    names, where = apps
    return f"platform apps {names} (pushes to POST {where})"
