"""Functions that worker processes run in the shared-mount tests (a module of its own, so
that processes started with the ``spawn`` method can import them)."""

import time
from typing import Dict, List, Optional, Tuple

from ikvpy.client import IKVReader
from ikvpy.clientoptions import ClientOptions
from ikvpy.factory import create_new_reader


def hold_mount(options: ClientOptions, ready, stop) -> None:
    """Opens a reader (the mount's owner when first) and keeps it until told to stop."""
    reader = create_new_reader(options)
    reader.startup()
    ready.set()
    stop.wait(300)
    reader.shutdown()


def follow_until(reader: IKVReader, expected: Dict[str, str], field: str, timeout: float = 90.0) -> Tuple[List[Optional[str]], bool]:
    """Reads (through a reader received pickled, which starts on first use) until every key
    has its expected value; returns what it read last and whether this process owns the
    mount by then."""
    keys = sorted(expected)
    deadline = time.time() + timeout
    while True:
        got = list(reader.multiget_string_values(str_primary_keys=keys, field_names=[field]))
        if got == [expected[k] for k in keys] or time.time() > deadline:
            break
        time.sleep(0.01)
    owns = reader.status()[0]["owns_mount"]
    return got, owns
