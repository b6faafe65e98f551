"""What the sync and the async client share, free of any transport.

Settings, the token cache, redaction of secrets, the retry state of a call, and what to do with a token answer.

:class:`~airflow_provider_workflowsoft.api.client.WorkflowsoftClient` (requests) and
:class:`~airflow_provider_workflowsoft.api.async_client.AsyncWorkflowsoftClient` (httpx) add only sending.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.config import ClientConfig
from airflow_provider_workflowsoft.api.limiter import RateLimiter


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
