"""``ClientConfig``: the settings of a Workflowsoft client (address, credentials, timeouts, retries).

Kept apart from the transports so that the hook, and every DAG file importing an operator, can read a
connection without importing ``requests`` or ``httpx``.
"""

from __future__ import annotations

import dataclasses
import math

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api import protocol
from airflow_provider_workflowsoft.api.errors import WorkflowsoftConfigError
from airflow_provider_workflowsoft.api.limiter import checked_rate


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs. Secrets are kept out of ``repr``.

    :param base_url: the API root, for example ``https://api.workflowsoft.com``
    :param api_token: an API token, sent as ``Bearer`` (mode a)
    :param login: administrator login; with ``password`` the client mints tokens (mode b)
    :param password: administrator password (mode b)
    :param token_lifetime_seconds: ``lifeTimeInSec`` asked for minted tokens
    :param timeout: read timeout of every request, in seconds
    :param connect_timeout: connect timeout of every request, in seconds
    :param max_retries: retries after the first attempt for transient failures
    :param on_behalf_of: ``X-OnBehalfOf-Id`` of field updates and completions (and the default user of
        starts and tasks)
    :param verify_ssl: verify the server's TLS certificate
    :param pool_size: pooled connections kept open (size it to the concurrency of the caller)
    :param max_requests_per_second: the tenant's known rate limit; the client's limiter never sends faster (``None``:
        unknown, learnt from 429 answers)
    :param label: where these settings come from, named in authentication errors so that the user knows
        what to fix (the hook sets ``"the Airflow connection '<conn id>'"``); never a secret
    """

    base_url: str = defaults.DEFAULT_BASE_URL
    api_token: str | None = dataclasses.field(default=None, repr=False)
    login: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    token_lifetime_seconds: int = defaults.DEFAULT_TOKEN_LIFETIME_SECONDS
    timeout: float = defaults.DEFAULT_TIMEOUT_SECONDS
    connect_timeout: float = defaults.DEFAULT_CONNECT_TIMEOUT_SECONDS
    max_retries: int = defaults.DEFAULT_MAX_RETRIES
    on_behalf_of: str = defaults.DEFAULT_ON_BEHALF_OF
    verify_ssl: bool = True
    pool_size: int = 10
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    label: str = ""
    max_requests_per_second: float | None = None

    def __post_init__(self) -> None:
        if not self.api_token and not (self.login and self.password):
            raise WorkflowsoftConfigError(
                "No Workflowsoft credentials: set the connection's password to an API token, or login and "
                "password to administrator credentials"
            )
        if self.token_lifetime_seconds <= 0:
            raise WorkflowsoftConfigError(
                f"token_lifetime_seconds must be a positive number of seconds, got {self.token_lifetime_seconds}"
            )
        if not (math.isfinite(self.timeout) and math.isfinite(self.connect_timeout)) or min(
            self.timeout, self.connect_timeout
        ) <= 0:
            raise WorkflowsoftConfigError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.max_retries < 0:
            raise WorkflowsoftConfigError(f"max_retries must be 0 or more, got {self.max_retries}")
        checked_rate(self.max_requests_per_second)

    @property
    def mints_tokens(self) -> bool:
        return not self.api_token

    @property
    def retry_policy(self) -> protocol.RetryPolicy:
        return protocol.RetryPolicy(self.max_retries, self.backoff_base, self.backoff_max, self.retry_after_max)

    def token_cache_key(self) -> tuple[str, str, str, int]:
        return protocol.TokenCache.key(
            self.base_url, self.login or "", self.password or "", self.token_lifetime_seconds
        )

    def secrets(self) -> list[str]:
        return [s for s in (self.api_token, self.password) if s]
