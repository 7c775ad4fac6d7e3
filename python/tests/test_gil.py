"""A large batch does not stall the other Python threads of the process while the native
module converts it: the GIL is let go between chunks. Counted, not timed: a thread waiting
for the GIL asks for it every switch interval, but native code that never lets it go never
hands it over; a counter thread that yields the GIL after every step counts the handovers
during the call (about one per interval when the native code lets go between chunks, none
otherwise)."""

import sys
import threading
import time
import uuid

import pytest

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVValueError
from ikvpy.factory import create_new_writer


def test_converting_a_large_batch_lets_other_threads_run(local_storage, tmp_path):
    name = f"gil-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", storage_url=local_storage.url)
    options = (
        ClientOptionsBuilder()
        .with_store_name(name)
        .with_mount_directory(str(tmp_path / "mount"))
        .with_storage_url(local_storage.url)
        .build()
    )
    docs = [IKVDocumentBuilder().put_string_field("id", f"k{i}").put_string_field("f", "v" * 20).build() for i in range(100_000)]
    with create_new_writer(options) as writer:
        ops = [("upsert_fields", d.as_fields()) for d in docs]
        # The last operation is refused by the conversion itself, after every other one was
        # converted: the whole call is conversion, with nothing written and no commit (which
        # lets the GIL go anyway).
        ops.append(("no_such_operation",))
        count = 0
        stop = threading.Event()
        started = threading.Event()

        def counter() -> None:
            nonlocal count
            started.set()
            while not stop.is_set():
                count += 1
                time.sleep(0)  # lets the GIL go

        interval = sys.getswitchinterval()
        thread = threading.Thread(target=counter)
        thread.start()
        started.wait()
        sys.setswitchinterval(0.005)
        try:
            with pytest.raises(IKVValueError, match="unknown operation"):
                before = count
                writer._native.write(ops)
            during = count - before
        finally:
            sys.setswitchinterval(interval)
            stop.set()
            thread.join()
    # About a hundred chunks; the counter gets the GIL at the first chunk boundary after each
    # switch interval.
    assert during >= 3, f"the counter thread ran {during} times during the conversion"
