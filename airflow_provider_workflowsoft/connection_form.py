"""The ``workflowsoft`` connection form: its extras, labels and placeholders, in one place.

Airflow 3.2+ builds the form from the provider info (``conn-fields`` and ``ui-field-behaviour``);
Airflow 2.11 asks the hook (``get_connection_form_widgets`` / ``get_ui_field_behaviour``). Both are
built from :data:`EXTRA_FIELDS` here, so the two can never disagree. No Airflow import at module level.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_workflowsoft import defaults

#: The connection extras: JSON-schema type, default, label, help text.
#:
#: No key may contain a word Airflow treats as sensitive (``token``, ``secret``, ``password``, ``key``
#: after ``api_``/``access_``, ``dsn``, ``proxy``...): Airflow 3.3 masks such extras as ``***`` in the
#: form's defaults and in what the form sends back, so the UI would store ``"***"`` instead of the value.
EXTRA_FIELDS: dict[str, dict[str, Any]] = {
    "lifetime_seconds": {
        "type": "integer",
        "default": defaults.DEFAULT_TOKEN_LIFETIME_SECONDS,
        "label": "Token lifetime (seconds)",
        "description": "Only with administrator credentials: lifetime asked for each API token minted "
        "from them (lifeTimeInSec). Ignored with an API token. Empty: 3600.",
    },
    "timeout": {
        "type": "number",
        "default": defaults.DEFAULT_TIMEOUT_SECONDS,
        "label": "Timeout (seconds)",
        "description": "Read timeout of every request, in seconds. Empty: 30.",
    },
    "max_retries": {
        "type": "integer",
        "default": defaults.DEFAULT_MAX_RETRIES,
        "label": "Max retries",
        "description": "Retries after a connection error, 429 or 5xx, with exponential backoff (0: none). "
        "Empty: 5.",
    },
    "max_requests_per_second": {
        "type": "number",
        "default": None,
        "label": "Max requests per second",
        "description": "The tenant's rate limit, when known: a client never sends faster, whatever the number of "
        "threads. Empty: learnt from 429 answers (the pace is cut and every thread pauses for Retry-After).",
    },
    "on_behalf_of": {
        "type": "string",
        "default": defaults.DEFAULT_ON_BEHALF_OF,
        "label": "On behalf of (X-OnBehalfOf-Id)",
        "description": "User id sent as X-OnBehalfOf-Id when updating fields and completing steps, and the "
        "default user of process starts and tasks. Empty: system.",
    },
    "verify_ssl": {
        "type": "boolean",
        "default": True,
        "label": "Verify SSL",
        "description": "Verify the server's TLS certificate (https only). Default on.",
    },
}

#: Extra keys used before, still read by the hook when the new key is absent.
LEGACY_EXTRA_NAMES: dict[str, str] = {"token_lifetime_seconds": "lifetime_seconds"}

HOST_PLACEHOLDER = defaults.DEFAULT_BASE_URL


def conn_fields() -> dict[str, Any]:
    """``conn-fields`` of the provider info (Airflow 3.2+)."""
    fields: dict[str, Any] = {}
    for name, spec in EXTRA_FIELDS.items():
        schema: dict[str, Any] = {"type": [spec["type"], "null"], "default": spec["default"]}
        if spec["type"] == "integer":
            schema["minimum"] = 1 if name == "lifetime_seconds" else 0
        fields[name] = {"label": spec["label"], "description": spec["description"], "schema": schema}
    return fields


def ui_field_behaviour() -> dict[str, Any]:
    """Hidden standard fields, relabels and placeholders (both Airflow lines)."""
    return {
        # Port stays visible and asks to be filled: Airflow 3.3's row Test button sends a stored empty
        # port as 0, and the API then answers 400 "host or port differs" without calling the hook. The
        # hook itself treats an empty port as "the port of the address" (443 for https).
        # "extra" hides the raw JSON on Airflow 2.11; 3.3 always shows its "Extra Fields JSON" section.
        "hidden-fields": ["schema", "extra"],
        "relabeling": {
            "host": "API address",
            "port": "Port (needed by Test)",
            "login": "Administrator login (optional)",
            "password": "API token",
        },
        "placeholders": {
            "host": HOST_PLACEHOLDER,
            "port": "443 for https, or the port in the API address",
            "login": "Only for admin credentials (admin password in API token); else leave empty",
            "password": "API token (or the administrator password when a login is set)",
            "description": "Optional note, e.g. which Workflowsoft tenant",
        },
    }


def hook_field_behaviour() -> dict[str, Any]:
    """Return :func:`ui_field_behaviour` in the shape a hook's ``get_ui_field_behaviour`` returns.

    Airflow 2.11 validates it against ``customized_form_field_behaviours.schema.json``: ``hidden_fields``, with an
    underscore; the provider info's ``ui-field-behaviour`` spells it ``hidden-fields``.
    """
    behaviour = {key.replace("-", "_"): value for key, value in ui_field_behaviour().items()}
    # Airflow 2.11 takes any placeholder but the five standard fields for an extra's: no description one.
    behaviour["placeholders"] = {k: v for k, v in behaviour["placeholders"].items() if k != "description"}
    return behaviour


def form_widgets() -> dict[str, Any]:
    """Extra fields as WTForms widgets, for Airflow 2.11's connection form."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget  # type: ignore[import-not-found]
    from flask_babel import lazy_gettext  # type: ignore[import-not-found]
    from wtforms import BooleanField, IntegerField, StringField  # type: ignore[import-not-found]
    from wtforms.validators import NumberRange, Optional  # type: ignore[import-not-found]

    widgets: dict[str, Any] = {}
    for name, spec in EXTRA_FIELDS.items():
        label, help_text = lazy_gettext(spec["label"]), spec["description"]
        if spec["type"] == "integer":
            widgets[name] = IntegerField(label, description=help_text, widget=BS3TextFieldWidget(),
                                         validators=[Optional(), NumberRange(min=0)], default=spec["default"])
        elif spec["type"] == "boolean":
            widgets[name] = BooleanField(label, description=help_text, default=spec["default"])
        else:
            widgets[name] = StringField(label, description=help_text, widget=BS3TextFieldWidget(),
                                        default="" if spec["default"] is None else str(spec["default"]))
    return widgets
