"""The ``celeriac`` command line (Celery 5's commands and options), one module per subcommand."""
