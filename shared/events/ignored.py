"""What a request held that Caravan ignored, for its sender to be told: the contract's
models ignore fields they do not have (:class:`~shared.events.envelope.Frozen`, so that
producers may add optional fields within a version), which left a misspelt ``"delivry"``
unsaid, its order placed without an address; and a field that means nothing for what the
rest says (a prepaid payment's ``term_months``) was kept unread, unsaid too."""

from dataclasses import dataclass
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel

from shared.events.envelope import Frozen


@dataclass(frozen=True)
class Ignored:
    """The fields of a request Caravan ignored, as dotted paths (as a 422's ``errors`` name
    fields: ``delivry``, ``lines.0.colour``, ``payment.term_months``), in the order given."""

    unknown: tuple[str, ...] = ()
    """Names no field of the model has, at any depth (what they hold is not looked into)."""
    unused: tuple[str, ...] = ()
    """Fields that mean nothing for what was sent (:meth:`Frozen.unused_fields`)."""

    @property
    def fields(self) -> list[str]:
        """Every one: the unknown, then the unused."""
        return [*self.unknown, *self.unused]


NOTHING = Ignored()
"""A request Caravan took whole (most are: one shared answer, none built for each)."""


def ignored_fields(given: dict[str, Any], parsed: Frozen) -> Ignored:
    """What ``given``, the JSON object that ``parsed`` was validated from, held that ``parsed``
    neither has nor uses. One walk of ``given`` beside what was parsed, into the objects and
    arrays of objects the models hold (as deep as the models nest, however deep ``given``
    is), an object of known keys alone and no model inside one set comparison (each line of
    an order): nothing is validated again."""
    unknown: list[str] = []
    unused: list[str] = []
    _walk("", given, parsed, unknown, unused)
    return Ignored(tuple(unknown), tuple(unused)) if unknown or unused else NOTHING


@cache
def _shape(model: type[BaseModel]) -> tuple[frozenset[str], frozenset[str], bool]:
    """The field names of ``model``, those that may hold a model (or a list of them), and
    whether it may have fields unused (:meth:`Frozen.unused_fields`)."""
    fields = model.model_fields
    nested = frozenset(name for name, f in fields.items() if _holds_a_model(f.annotation))
    tells = getattr(model, "unused_fields", None) not in (None, Frozen.unused_fields)
    return frozenset(fields), nested, tells


def _holds_a_model(annotation: object) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_a_model(arg) for arg in get_args(annotation))


def _walk(
    at: str, given: dict[str, Any], model: BaseModel, unknown: list[str], unused: list[str]
) -> None:
    names, nested, tells = _shape(type(model))
    if nested or not given.keys() <= names:
        for name, value in given.items():
            if name not in names:
                unknown.append(at + name)
            elif name in nested:
                _within(f"{at}{name}.", value, getattr(model, name), unknown, unused)
    if tells and isinstance(model, Frozen):
        for name in model.unused_fields():
            unused.append(at + name)


def _within(at: str, given: object, kept: object, unknown: list[str], unused: list[str]) -> None:
    if isinstance(kept, BaseModel) and isinstance(given, dict):
        _walk(at, given, kept, unknown, unused)
    elif isinstance(kept, list) and isinstance(given, list):
        for i, (item, each) in enumerate(zip(given, kept, strict=False)):
            if isinstance(each, BaseModel) and isinstance(item, dict):
                names, nested, tells = _shape(type(each))
                if nested or tells or not item.keys() <= names:
                    _walk(f"{at}{i}.", item, each, unknown, unused)
