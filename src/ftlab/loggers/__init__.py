"""Lightning loggers configured by the `logger` group."""
