"""Default values of the connection and the client, free of imports.

Airflow reads the provider info (which uses them) while it is still starting, before any other module of this package
may load.
"""

DEFAULT_BASE_URL = "https://api.workflowsoft.com"
DEFAULT_CONN_ID = "workflowsoft_default"
DEFAULT_ON_BEHALF_OF = "system"
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_RETRIES = 5
#: Seconds between the triggerer's polls of a step when nothing is new (the deferred sensor, the asset watcher).
DEFAULT_POLL_INTERVAL_SECONDS = 30.0
DEFAULT_PROGRESS_INTERVAL_SECONDS = 10.0  # the batch worker's progress lines
#: Seconds a stopped batch worker gives its instances in flight (Airflow's supervisor sends SIGKILL 5 s after SIGTERM).
DEFAULT_GRACE_PERIOD_SECONDS = 3.0
DEFAULT_REPORT_IDS_LIMIT = 100  # the most ids per list in the batch worker's XCom report
