"""Bearer tokens mapped to operators and their roles.

The role ladder (viewer < operator < approver) is a small table of its own here until the
shared ``domain/roles.py`` lands; then ``allows`` switches over to it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fleet_tui.api.problems import ApiProblem
from fleet_tui.config import ROLES, ConfigError, Settings
from fleet_tui.service.job_control import Actor

RANK = {"viewer": 0, "operator": 1, "approver": 2}
# In the OpenAPI spec as a bearer security scheme; missing or malformed -> our 401 problem.
BEARER = HTTPBearer(auto_error=False, description="a token from [automation.api_tokens]")


def allows(role: str, needed: str) -> bool:
    return RANK.get(role, -1) >= RANK[needed]


@dataclass(frozen=True, slots=True)
class TokenTable:
    tokens: Mapping[str, Actor]

    @classmethod
    def parse(cls, entries: Mapping[str, str]) -> TokenTable:
        """``{token: "OPERATOR:ROLE"}`` (the ``[automation.api_tokens]`` table)."""
        out = {}
        for token, who in entries.items():
            name, sep, role = who.rpartition(":")
            if not sep or not name or role not in ROLES:
                raise ConfigError(f"api token for {who!r}: expected \"OPERATOR:ROLE\" with "
                                  f"a role of {', '.join(ROLES)}")
            if len(token) < 16:
                raise ConfigError(f"api token for {name}: at least 16 characters")
            out[token] = Actor(name, role)
        return cls(out)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        return cls.parse(settings.automation.api_tokens)

    def lookup(self, token: str) -> Actor | None:
        for known, actor in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return actor
        return None


def require(tokens: TokenTable, role: str) -> Callable[..., Actor]:
    """A FastAPI dependency: the token's actor, if its role is at least ``role``."""

    def dependency(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                          Security(BEARER)]) -> Actor:
        if credentials is None or not credentials.credentials.strip():
            raise ApiProblem(401, "unauthorized", "send Authorization: Bearer <token>")
        actor = tokens.lookup(credentials.credentials.strip())
        if actor is None:
            raise ApiProblem(401, "unauthorized", "unknown token")
        if not allows(actor.role, role):
            raise ApiProblem(403, "forbidden",
                             f"{actor.name} is {actor.role}; this needs {role}")
        return actor

    return dependency
