"""SIGTERM while the run waits on a FIFO that has no more to give (yet): the run must end on
the signal, within the grace period, with its summary; not hang in the blocked read."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import assert_exactly_once, make_rows, run_command, wait_for, write_csv

from pipeline.fake import FakeServer, FakeState

ROWS = 5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compress", [False, True])
def test_sigterm_during_a_blocked_fifo_read_ends_the_run(
    clean_env: None, tmp_path: Path, compress: bool
) -> None:
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    rows = make_rows(ROWS)
    lines = ["session_id,message_id,score,text,assistant_id"] + [
        f"{r['session_id']},{r['message_id']},{r['score']},{r['text']},{r['assistant_id']}"
        for r in rows
    ]
    data = ("\n".join(lines) + "\n").encode()
    release = threading.Event()

    def producer() -> None:
        # Writes some records, then keeps the FIFO open without writing: a slow producer.
        with fifo.open("wb") as fh:
            if compress:
                with os.fdopen(os.dup(fh.fileno()), "wb") as raw:
                    gz = __import__("gzip").GzipFile(fileobj=raw, mode="wb")
                    gz.write(data)
                    gz.flush()  # a complete deflate block; the gzip stream is not ended
                    release.wait(60)
                    return
            fh.write(data)
            fh.flush()
            release.wait(60)

    writer = threading.Thread(target=producer, daemon=True)
    writer.start()
    state = FakeState()
    env = {**os.environ, "FEEDBACK_PIPELINE_BATCH_SIZE": str(ROWS)}
    try:
        with FakeServer(state) as server:
            command = run_command(
                server, str(fifo), tmp_path / "ledger.sqlite3", "--format", "csv", "--grace", "2"
            )
            proc = subprocess.Popen(
                command, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
            wait_for(lambda: state.stored_count >= ROWS, proc, "the first records to be sent")
            assert proc.poll() is None, proc.communicate()
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                raise AssertionError(f"the run hung after SIGTERM: {err}") from None
            took = time.monotonic() - signalled

            assert proc.returncode == 3, err
            assert "interrupted by SIGTERM" in out
            assert f"sent {ROWS}" in out
            assert state.stored_count == ROWS
            assert state.duplicates() == {}
            assert "Traceback" not in err
            assert took < 20
    finally:
        release.set()
        writer.join(10)


@pytest.mark.timeout(60)
def test_sigterm_while_stdin_has_no_more_to_give_ends_the_run(
    clean_env: None, tmp_path: Path
) -> None:
    rows = make_rows(2)
    data = "session_id,message_id,score\n" + "".join(
        f"{r['session_id']},{r['message_id']},{r['score']}\n" for r in rows
    )
    state = FakeState()
    env = {**os.environ, "FEEDBACK_PIPELINE_BATCH_SIZE": "2"}
    with FakeServer(state) as server:
        command = run_command(
            server, "-", tmp_path / "ledger.sqlite3", "--format", "csv", "--grace", "2"
        )
        command += ["--assistant-id", "aia_asst_test"]
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdin is not None
        proc.stdin.write(data)  # and stdin stays open: the producer is still at work
        proc.stdin.flush()
        wait_for(lambda: state.stored_count >= 2, proc, "the records to be sent")
        proc.send_signal(signal.SIGTERM)
        try:
            # Not communicate(): it would close stdin, and the end of input ends the read.
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the run hung after SIGTERM") from None
        finally:
            proc.stdin.close()
        assert proc.stdout is not None
        assert proc.stderr is not None
        with proc.stdout, proc.stderr:  # the process has ended: collect its output
            out, err = proc.stdout.read(), proc.stderr.read()

        assert proc.returncode == 3, err
        assert "interrupted by SIGTERM" in out
        assert "sent 2" in out
        assert state.stored_count == 2
        assert "Fatal Python error" not in err


@pytest.mark.timeout(60)
def test_gzip_through_process_substitution_is_sent_exactly_once(
    clean_env: None, tmp_path: Path
) -> None:
    rows = make_rows(50)
    source = write_csv(tmp_path / "in.csv", rows)
    state = FakeState()
    with FakeServer(state) as server:
        command = run_command(server, "SOURCE", tmp_path / "ledger.sqlite3", "--format", "csv")
        line = " ".join(f"'{arg}'" for arg in command).replace("'SOURCE'", f"<(gzip -c '{source}')")
        done = subprocess.run(
            ["bash", "-c", line], capture_output=True, text=True, timeout=50, check=False
        )

        assert done.returncode == 0, done.stderr
        assert "Not a gzipped file" not in done.stderr
        assert f"sent {len(rows)}" in done.stdout
        assert_exactly_once(server, rows)
