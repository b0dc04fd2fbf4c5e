"""Bearer tokens mapped to operators and their roles (``domain/roles.py``): each endpoint
names the permission it needs; the service layer checks the actor's role again."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fleet_tui.api.problems import ApiProblem
from fleet_tui.config import ConfigError, Settings
from fleet_tui.domain import roles
from fleet_tui.domain.roles import ROLES
from fleet_tui.service.job_control import Actor

# In the OpenAPI spec as a bearer security scheme; missing or malformed -> our 401 problem.
BEARER = HTTPBearer(auto_error=False, description="a token from [automation.api_tokens]")


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


def require(tokens: TokenTable, permission: str) -> Callable[..., Actor]:
    """A FastAPI dependency: the token's actor, if its role allows ``permission``."""

    def dependency(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                          Security(BEARER)]) -> Actor:
        if credentials is None or not credentials.credentials.strip():
            raise ApiProblem(401, "unauthorized", "send Authorization: Bearer <token>")
        actor = tokens.lookup(credentials.credentials.strip())
        if actor is None:
            raise ApiProblem(401, "unauthorized", "unknown token")
        if not roles.allows(actor.role, permission):
            raise ApiProblem(403, "forbidden",
                             f"{actor.name} is {actor.role}; this needs "
                             f"{roles.minimum_role(permission)} ({permission})")
        return actor

    return dependency
