"""Policy: deny by default, glob semantics, config validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mads.turing.policy import AccessDenied, Capability, Policy, PolicyRule, glob_match

R, W, L, D = Capability.READ, Capability.WRITE, Capability.LIST, Capability.DELETE


def test_empty_policy_denies_everything() -> None:
    policy = Policy()
    for cap in Capability:
        assert not policy.allows("imperator", cap, "providers/openai")
    with pytest.raises(AccessDenied) as err:
        policy.check("imperator", R, "providers/openai")
    assert (err.value.principal, err.value.capability, err.value.path) == ("imperator", R, "providers/openai")
    assert "imperator" in str(err.value) and "'read'" in str(err.value) and "providers/openai" in str(err.value)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("providers/*", "providers/openai", True),
        ("providers/*", "providers/openai/org", False),
        ("providers/*", "providers", False),
        ("providers/*", "providersX/openai", False),
        ("providers/**", "providers/openai/org", True),
        ("providers/**", "providers/openai", True),
        ("**", "anything/at/all", True),
        ("providers/open?i", "providers/openai", True),
        ("providers/open?i", "providers/open/i", False),
        ("providers/openai", "providers/openai", True),
        ("providers/openai", "providers/openai2", False),
        ("a.b/*", "aXb/c", False),
        ("*/signing", "gateway/signing", True),
    ],
)
def test_glob_matching(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def test_rules_grant_only_named_capabilities_and_principals() -> None:
    policy = Policy.model_validate(
        {
            "rules": [
                {"principal": "imperator", "paths": ["providers/*"], "capabilities": ["read"]},
                {"principal": "gateway:*", "paths": ["gateway/**", "tokens/*"], "capabilities": ["read", "write"]},
                {"principal": "turing", "paths": ["**"], "capabilities": ["read", "write", "list", "delete"]},
            ]
        }
    )
    assert policy.allows("imperator", R, "providers/openai")
    assert not policy.allows("imperator", W, "providers/openai")
    assert not policy.allows("imperator", R, "gateway/signing")
    assert not policy.allows("imperator2", R, "providers/openai")
    assert policy.allows("gateway:alice", W, "tokens/alice")
    assert not policy.allows("gateway:alice", D, "tokens/alice")
    assert not policy.allows("gateway", R, "tokens/alice")
    assert all(policy.allows("turing", cap, "x/y/z") for cap in (R, W, L, D))


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"principal": "", "paths": ["a/*"], "capabilities": ["read"]}, "principal"),
        ({"principal": "x", "paths": [], "capabilities": ["read"]}, "paths"),
        ({"principal": "x", "paths": ["a/../b"], "capabilities": ["read"]}, "paths"),
        ({"principal": "x", "paths": ["a b"], "capabilities": ["read"]}, "paths"),
        ({"principal": "x", "paths": ["a/*"], "capabilities": []}, "capabilities"),
        ({"principal": "x", "paths": ["a/*"], "capabilities": ["sudo"]}, "capabilities"),
        ({"principal": "x", "paths": ["a/*"], "capabilities": ["read"], "deny": True}, "deny"),
    ],
)
def test_bad_rules_name_the_field(rule: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        PolicyRule.model_validate(rule)
    assert err.value.errors()[0]["loc"][0] == field
