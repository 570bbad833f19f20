"""`synthforge serve`'s app (Batch API included) run in the test's process on a free 127.0.0.1 port, with a scripted
teacher that answers "ok: PROMPT" once a gate is open: a batch is still running exactly when a test looks, and a
run in another process talks to a real server."""

from __future__ import annotations

import contextlib
import threading

from tests.conftest import wait_until
from tests.fault_server import free_port


@contextlib.contextmanager
def gated_server(state):
    """`synthforge serve`'s app on a free port, answering "ok: PROMPT" once ``gate`` is set."""
    import uvicorn

    from synthforge.serve.app import ServeConfig, build_app
    from synthforge.serve.batches import BatchSettings
    from synthforge.teachers.scripted import ScriptedTeacher

    gate = threading.Event()

    def reply(conversation):
        assert gate.wait(120), "the test never opened the gate"
        return "ok: " + conversation[-1]["content"][-20:]

    app = build_app(ScriptedTeacher(reply), ServeConfig("tiny", batch=BatchSettings(state)))
    port = free_port()
    # log_config=None: uvicorn's dictConfig would close the handlers other libraries made (absl's, bound to an
    # earlier test's captured stderr), closing pytest's own capture file
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 60, "the server to start")
    try:
        yield f"http://127.0.0.1:{port}/v1", gate
    finally:
        gate.set()
        server.should_exit = True
        thread.join(timeout=30)
