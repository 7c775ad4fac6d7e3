"""A process that serves ikv reader metrics to Prometheus as a training job or a Feast server
would: a reader, ikvpy.metrics's collector, prometheus_client's HTTP server. Runs until its
standard input closes. Arguments: store, storage URL, mount directory, port; S3 settings come
from the environment."""

import sys

from prometheus_client import start_http_server

import ikvpy.metrics
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.factory import create_new_reader


def main() -> None:
    store, url, mount, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    options = (
        ClientOptionsBuilder()
        .with_store_name(store)
        .with_storage_url(url)
        .with_mount_directory(mount)
        .with_poll_interval(0.05)
        .build()
    )
    reader = create_new_reader(options)
    reader.startup()
    ikvpy.metrics.register(reader)
    start_http_server(port, addr="127.0.0.1")
    print("ready", flush=True)
    sys.stdin.read()
    reader.shutdown()


if __name__ == "__main__":
    main()
