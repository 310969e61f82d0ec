"""The ``ferryman`` command: a thin typer + rich client of the backup server's REST API.

Only ``server init``/``server run`` and ``proxy run`` call into ``ferryman.server`` and
``ferryman.proxy`` directly (they start those services); every other command talks to
the server over HTTP through :class:`ferryman.cli.client.ApiClient`.
"""
