"""Event shapes other tools send, parsed (purely) into the native event shape of `core.events`.

Each adapter takes the request's JSON (parsed with numbers as `Decimal`) and returns a list of
native event dicts, or a `Problem` in place of an item it cannot map; ingestion reports those as
rejected. `FIELD_NAMES` maps native field names back to the format's, for error reports.

- `cloudevents`: CloudEvents 1.0 structured mode, one event or a JSON batch (as OpenMeter takes
  them): ``type`` is the meter, ``subject`` the customer, ``data`` the properties.
- `segment`: the Segment HTTP tracking API, ``track`` calls and ``batch``: ``event`` is the meter,
  ``userId`` (else ``anonymousId``) the customer, ``messageId`` the id.
- `lago`: Lago's ``{"event": {...}}`` and ``{"events": [...]}``: ``code`` is the meter,
  ``transaction_id`` the id, ``external_customer_id`` or ``external_subscription_id`` who.
"""
