"""The fake Feedback API application and ways to run it on a real socket.

`FakeServer` runs the app in a background thread with its own event loop, so synchronous
tests and CLI code that calls `asyncio.run` in the main thread can talk to it. `serve`
runs it in the caller's loop until cancelled (the `fake-server` CLI command).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Handler

from pipeline.fake.handlers import STATE_KEY, create_feedback, list_feedbacks
from pipeline.fake.shaping import apply_limits
from pipeline.fake.state import DEFAULT_AUTH_TOKEN, FakeState

FEEDBACKS_PATH = "/v1/Assistants/{id}/Feedbacks"
CONTROL_PREFIX = "/_fake/"
# In-flight requests (e.g. under a latency fault) get this long to finish on shutdown.
SHUTDOWN_TIMEOUT = 1.0
START_TIMEOUT = 10.0


@web.middleware
async def _count_responses(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every status the API answered; control endpoints are not API traffic."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state = request.app[STATE_KEY]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        state.note_response(exc.status)
        raise
    transport = request.transport
    # An aborted connection (reset fault) answered nothing, so there is nothing to count.
    if transport is not None and not transport.is_closing():
        state.note_response(response.status)
    return response


async def _stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATE_KEY].stats())


async def _get_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATE_KEY].faults.to_dict())


async def _set_faults(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    try:
        changes = json.loads(await request.read() or b"{}")
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object of fault fields")
        faults = state.update_faults(changes)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(faults.to_dict())


async def _reset(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.reset()
    return web.json_response(state.stats())


def create_app(state: FakeState) -> web.Application:
    app = web.Application(middlewares=[_count_responses, apply_limits])
    app[STATE_KEY] = state
    app.router.add_post(FEEDBACKS_PATH, create_feedback)
    app.router.add_get(FEEDBACKS_PATH, list_feedbacks)
    app.router.add_get(CONTROL_PREFIX + "stats", _stats)
    app.router.add_get(CONTROL_PREFIX + "faults", _get_faults)
    app.router.add_post(CONTROL_PREFIX + "faults", _set_faults)
    app.router.add_post(CONTROL_PREFIX + "reset", _reset)
    return app


async def _start(state: FakeState, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Set up a runner listening on host:port; returns it and the port actually bound."""
    # No access log: benchmarks send thousands of requests and tests want quiet output.
    runner = web.AppRunner(create_app(state), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound_port


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(state: FakeState, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the fake API until SIGINT/SIGTERM (a normal stop: the command exits 0) or until
    cancelled, announcing the URL on stdout."""
    runner, bound_port = await _start(state, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        token = state.credentials.get(state.account_sid)
        # Only the well-known fake token is printed; any real-looking secret stays hidden.
        token_note = (
            f"auth token {DEFAULT_AUTH_TOKEN}"
            if token == DEFAULT_AUTH_TOKEN
            else "auth token from configuration"
        )
        print(
            f"fake Feedback API listening on {_url(host, bound_port)} "
            f"(account SID {state.account_sid}, {token_note})",
            flush=True,
        )
        await stop.wait()
        print("fake Feedback API stopped", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


class FakeServer:
    """The fake API on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(
        self, state: FakeState | None = None, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.state = state if state is not None else FakeState()
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeServer is not running")
        return self._port

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    def start(self) -> FakeServer:
        """Start serving; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("FakeServer is already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="fake-feedback-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError("FakeServer did not start in time")
        if self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"FakeServer failed to start: {error}") from error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None:
            # RuntimeError: the loop already finished (e.g. startup failed).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(START_TIMEOUT + SHUTDOWN_TIMEOUT + 5.0)
        self._thread = self._loop = self._stop_event = None
        self._port = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start(), not excepthook
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        stop_event = asyncio.Event()
        runner, self._port = await _start(self.state, self.host, self._requested_port)
        try:
            self._loop = asyncio.get_running_loop()
            self._stop_event = stop_event
            self._ready.set()
            await stop_event.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"FakeServer({where})"
