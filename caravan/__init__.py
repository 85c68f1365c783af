"""The ``caravan`` command line and the local system it runs."""
