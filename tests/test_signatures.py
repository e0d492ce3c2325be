"""Every factory shows its real, typed parameters to inspect.signature, help() and IDEs, and
they are the parameters its policy takes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from factories import FACTORIES
from failsafe.bulkhead import Bulkhead
from failsafe.cache import Cache, cache
from failsafe.circuitbreaker import CircuitBreaker
from failsafe.failfast import FailFast, failfast
from failsafe.featuretoggle import FeatureToggle, featuretoggle
from failsafe.retry import Retry, retry


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_factory_signature_lists_its_parameters(factory: Callable[..., Any]) -> None:
    params = inspect.signature(factory).parameters.values()
    kinds = {p.kind for p in params}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert inspect.Parameter.VAR_POSITIONAL not in kinds
    named = [p for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY]
    assert named, factory
    assert all(p.annotation is not inspect.Parameter.empty for p in named), factory


@pytest.mark.parametrize(
    ("factory", "policy"),
    [(retry, Retry), (cache, Cache), (failfast, FailFast), (featuretoggle, FeatureToggle)],
    ids=["retry", "cache", "failfast", "featuretoggle"],
)
def test_decorator_factory_takes_what_its_policy_takes(
    factory: Callable[..., Any], policy: type
) -> None:
    shown = inspect.signature(factory).parameters
    taken = {
        name: p.default
        for name, p in inspect.signature(policy.__init__).parameters.items()
        if name != "self" and not name.startswith("_")
    }
    assert {n: p.default for n, p in shown.items() if n != "fn"} == taken
    assert shown["fn"].kind is inspect.Parameter.POSITIONAL_ONLY


@pytest.mark.parametrize(
    "policy", [Bulkhead, CircuitBreaker, FailFast, FeatureToggle], ids=lambda c: c.__name__
)
def test_a_policy_class_routing_store_shows_its_init_parameters(policy: type) -> None:
    # Its __new__ takes anything (it routes store= to the shared variant): the signature
    # shown is still __init__'s, without self.
    init = inspect.signature(policy.__init__)
    assert inspect.signature(policy) == init.replace(parameters=list(init.parameters.values())[1:])
    assert "store" in inspect.signature(policy).parameters


@pytest.mark.parametrize("factory", [retry, cache, failfast, featuretoggle])
def test_unknown_parameter_is_a_type_error(factory: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match="bogus"):
        factory(bogus=1)


async def test_bare_and_called_forms_still_decorate() -> None:
    async def f(x: int) -> int:
        return x

    assert await retry(f)(1) == 1
    assert isinstance(retry(f).policy, Retry)
    assert isinstance(cache(f).policy, Cache)
    assert isinstance(failfast()(f).policy, FailFast)
    assert isinstance(featuretoggle(enabled=True)(f).policy, FeatureToggle)
