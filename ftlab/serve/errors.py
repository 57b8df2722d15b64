"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the right HTTP status.

Domain code raises `APIError`; the handlers installed by `install_handlers` turn it, FastAPI's request
validation errors, unknown routes and unexpected exceptions into that shape, so the official client raises
`BadRequestError`, `AuthenticationError`, `NotFoundError`, … with a message that names the problem.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ftlab.serve")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error the API reports to the caller."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(kind: str, id: str, param: str | None = None) -> APIError:
    return APIError(404, f"No such {kind}: {id}", param=param, code="not_found")


def _validation_error(exc: RequestValidationError) -> APIError:
    """The first problem of a request body, named by its path (`hyperparameters.n_epochs`)."""
    error = exc.errors()[0]
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    # Drop pydantic's union-branch markers such as `int` or `literal['auto']` from the path.
    loc = [
        part
        for part in loc
        if not part.startswith(("literal[", "function-")) and part not in ("int", "float", "str", "list")
    ]
    param = ".".join(loc) or None
    kind = error.get("type", "")
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "json_invalid":
        message = "We could not parse the JSON body of your request. The body must be valid JSON."
        param = None
    else:
        message = f"Invalid value for '{param}': {error.get('msg', 'invalid').removeprefix('Value error, ')}"
        if not isinstance(error.get("input"), dict | list):  # a scalar is worth quoting; a whole object is not
            message += f" (got {error.get('input')!r:.80})"
    return bad_request(message, param=param, code="invalid_value" if kind not in ("missing",) else None)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return APIError(exc.status_code, message).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        response = APIError(500, f"The server had an error while processing your request: {exc}").response()
        request_id = request.scope.get("state", {}).get("request_id")  # set by the app's RequestId middleware
        if request_id:  # this handler answers outside the middlewares, so it sets the header itself
            response.headers["x-request-id"] = request_id
        return response
