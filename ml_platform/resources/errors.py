"""Errors of the resources that light readers (``status``) catch without importing Dagster."""


class EndpointUnavailable(RuntimeError):
    pass
