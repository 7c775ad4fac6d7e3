"""Factories, as in the original SDK."""

from ikvpy.client import IKVReader, IKVWriter
from ikvpy.clientoptions import ClientOptions


def create_new_reader(client_options: ClientOptions) -> IKVReader:
    """A reader for ``client_options``; call ``startup()`` (or use it in a ``with``)."""
    return IKVReader(client_options)


def create_new_writer(client_options: ClientOptions) -> IKVWriter:
    """A writer for ``client_options``; call ``startup()`` before writing."""
    return IKVWriter(client_options)
