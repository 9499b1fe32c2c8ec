"""cellframe's own tests: a package, so test modules import their support modules as
``tests.<name>`` (pytest puts the repository, the folder above this one, on ``sys.path``)."""
