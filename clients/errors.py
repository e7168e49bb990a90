"""The client's error: what every client module raises for a server that cannot answer as asked."""

from __future__ import annotations

from dnc.core.errors import DNCError


class ClientError(DNCError, ValueError):
    """The server is down, not ready, refused the request, or answered something unusable. `refused`: the
    server answered this request with an error about its input (HTTP 400, gRPC INVALID_ARGUMENT)."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused
