"""What the sync and the async client share, free of any transport.

Settings, the token cache, redaction of secrets, the retry state of a call, and what to do with a token answer.

:class:`~airflow_provider_workflowsoft.api.client.WorkflowsoftClient` (requests) and
:class:`~airflow_provider_workflowsoft.api.async_client.AsyncWorkflowsoftClient` (httpx) add only sending.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.config import ClientConfig
from airflow_provider_workflowsoft.api.errors import WorkflowsoftLookupError, WorkflowsoftValidationError
from airflow_provider_workflowsoft.api.limiter import RateLimiter
from airflow_provider_workflowsoft.defaults import DEFAULT_ON_BEHALF_OF


class ClientCore:
    """The transport-free half of a client.

    :param config: connection settings
    :param on_token: called with every token as soon as it is known (the hook and trigger mask it there)
    :param token_cache: where minted tokens are kept (the process-wide cache by default)
    :param rand: the jitter's random source (tests fix it)
    :param on_request: told about every HTTP request once answered or failed, retries and token requests
        included (a :class:`~.protocol.RequestEvent`: method, endpoint kind, status, seconds, attempt); the
        hook counts them in Airflow's metrics. It must be quick; its errors are logged and ignored.
    :param limiter: the client's pace, shared by every thread sending through it (default: a new
        :class:`~.limiter.RateLimiter` of ``config.max_requests_per_second``, learning the tenant's rate from 429s)
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        on_token: Callable[[str], None] | None = None,
        token_cache: protocol.TokenCache | None = None,
        rand: Callable[[], float] = random.random,
        on_request: protocol.RequestObserver | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.limiter = limiter if limiter is not None else RateLimiter(config.max_requests_per_second)
        self._rand = rand
        self.on_request = on_request
        self._on_token = on_token
        self._token_cache = token_cache or protocol.TOKEN_CACHE
        self._policy = config.retry_policy
        self.request_count = 0  # every HTTP request sent, token requests included (for benchmarks)
        if config.api_token and on_token:
            on_token(config.api_token)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.config.base_url!r})"

    def _cached_token(self) -> str | None:
        """Return the configured token, or a minted one still fresh in the cache; ``None`` means: mint one."""
        if self.config.api_token:
            return self.config.api_token
        return self._token_cache.get(self.config.token_cache_key())

    def _discard_token(self) -> None:
        self._token_cache.discard(self.config.token_cache_key())

    def _redact(self, text: str) -> str:
        return protocol.redact(text, [*self.config.secrets(), self._cached_token()])

    def _attempts(self, call: protocol.Call, *, refresh_on_401: bool) -> protocol.Attempts:
        return protocol.Attempts(
            call, self._policy, can_refresh=refresh_on_401 and self.config.mints_tokens,
            redact=self._redact, rand=self._rand, observe=self.on_request, limiter=self.limiter,
        )

    def _mint_call(self) -> tuple[protocol.Call, dict[str, str], float]:
        """Return the token request, its Basic authorization header, and the time it is sent."""
        call = protocol.call_mint_token(self.config.token_lifetime_seconds)
        basic = protocol.basic_auth_header(self.config.login or "", self.config.password or "")
        return call, {"Authorization": basic}, self._token_cache.clock()

    def _minted(self, call: protocol.Call, answer: protocol.Answer, minted_at: float) -> str:
        """Return the token of a token answer, masked and cached; or the error of a refused one."""
        if answer.status >= 400:
            message = self._redact(protocol.extract_message(answer.text, answer.content_type))
            raise protocol.mint_error(call, answer, message, self.config.label)
        token = protocol.parse_token(answer.text, answer.content_type)
        if self._on_token:
            self._on_token(token)
        self._token_cache.put(self.config.token_cache_key(), token, minted_at)
        return token

    # -- users: the rules of find_user and resolve_on_behalf_of, whatever the transport ---------------

    @staticmethod
    def _known_user_id(user: Any) -> int | None:
        """Return an id given as an int or a numeric string (sent as it is), else ``None``: look it up."""
        if isinstance(user, int) and not isinstance(user, bool):
            return user
        text = str(user).strip()
        return int(text) if text.isdigit() else None

    @staticmethod
    def _one_user(query: Any, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        """Return the one user among a search's ``candidates`` whose id, email or full name equals ``query``."""
        text = str(query).strip()
        folded = text.casefold()
        exact = [
            user for user in candidates
            if str(user.get("Id")) == text
            or str(user.get("Email") or "").casefold() == folded
            or str(user.get("FullName") or "").casefold() == folded
        ]
        if len(exact) == 1:
            return exact[0]
        shown = ", ".join(f"{u.get('FullName')} <{u.get('Email')}> (Id {u.get('Id')})" for u in candidates[:10])
        if not exact:
            raise WorkflowsoftLookupError(
                f"No Workflowsoft user has the id, email or full name {text!r}"
                + (f"; the search found: {shown}" if shown else "; the search found nobody"),
                candidates,
            )
        raise WorkflowsoftLookupError(
            f"{len(exact)} Workflowsoft users match {text!r}; use an id or an email: {shown}", exact
        )

    @staticmethod
    def _is_system(value: Any) -> bool:
        """Tell whether an ``on_behalf_of`` value is ``system`` (not a user)."""
        return isinstance(value, str) and value.strip().casefold() == DEFAULT_ON_BEHALF_OF

    def _task_creator(self, assignee: Any, on_behalf_of: Any, *, alert: bool) -> Any:
        """Return who creates a task, before any lookup: the one rule of every task the package creates.

        The creator is ``on_behalf_of``, else the connection's ``on_behalf_of`` when that is a user, else, for an
        alert (the notifier, ``notify_on_failure``, ``notify_on_park``: an alert is not lost for want of a creator),
        its assignee. A task created on request with none of them is refused before sending (see
        :meth:`_on_behalf_of_user`). The assignee, in turn, defaults to the creator (``task_people``).
        """
        if (alert and protocol.blank(on_behalf_of) and not protocol.blank(assignee)
                and self._is_system(self.config.on_behalf_of)):
            return assignee
        return on_behalf_of

    def _on_behalf_of_user(self, on_behalf_of: Any, needs_user: str | None) -> Any:
        """Return who a request is made on behalf of: ``system`` (sent as it is), or the user to resolve.

        Empty means the connection's default; with ``needs_user`` (starts and tasks), ``system`` is refused before
        anything is sent.
        """
        value = self.config.on_behalf_of if protocol.blank(on_behalf_of) else on_behalf_of
        if self._is_system(value):
            if needs_user:
                given = (f"on_behalf_of is {on_behalf_of!r}" if not protocol.blank(on_behalf_of) else
                         f"on_behalf_of is not set and the connection's on_behalf_of is {value!r}")
                raise WorkflowsoftValidationError(
                    f"{needs_user} needs on_behalf_of: the Workflowsoft user it is done on behalf of, as a user "
                    f"id, an email or a full name (for example on_behalf_of=\"john.doe@example.com\"); {given}, "
                    f"and X-OnBehalfOf-Id must be an existing user's Id here ({DEFAULT_ON_BEHALF_OF!r} is for field "
                    "updates and completions only). Nothing was sent.",
                    [f"on_behalf_of: {value!r} is not a user"],
                )
            return DEFAULT_ON_BEHALF_OF
        return value
