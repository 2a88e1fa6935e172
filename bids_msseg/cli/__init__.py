"""The ``bids_msseg`` command line: a pure parser (:mod:`.parser`) and the entry point (:mod:`.run`)."""

__all__: list[str] = []
