"""The guide's quick start, corrected where it contradicts itself:

- The guide asserts ``get_string_value("Alice", "age") is None`` after upserting
  {firstname: Alice, age: 22} and then {firstname: Alice, city: San Francisco}. Its own
  operation list says upsert_fields *unions* fields, so Alice keeps age "22"; we assert that.
- It calls ``time.Sleep(1)``, which does not exist in Python. ikv's reader.startup() returns
  only once every write committed before it is visible, so no sleep is needed here.
- It calls ``multiget_string_values(str_primary_keys=["Alice", "Bob"])`` without field
  names and expects Alice's and Bob's cities; we pass ``field_names=["city"]``.

Run through the writer service on LocalStack, and in direct mode on a local directory.
"""

import pathlib
import uuid

import ikvpy.client as ikv_client
import ikvpy.document as ikv_document
import ikvpy.factory as ikv_factory
from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder


def quick_start(writer_options, reader_options) -> None:
    writer: ikv_client.IKVWriter = ikv_factory.create_new_writer(writer_options)
    writer.startup()
    doc1 = ikv_document.IKVDocumentBuilder().put_string_field("firstname", "Alice").put_string_field("age", "22").build()
    writer.upsert_fields(doc1)
    doc2 = ikv_document.IKVDocumentBuilder().put_string_field("firstname", "Alice").put_string_field("city", "San Francisco").build()
    writer.upsert_fields(doc2)
    doc3 = ikv_document.IKVDocumentBuilder().put_string_field("firstname", "Bob").put_string_field("age", "25").build()
    writer.upsert_fields(doc3)

    reader: ikv_client.IKVReader = ikv_factory.create_new_reader(reader_options)
    reader.startup()
    try:
        assert reader.get_string_value("Alice", "firstname") == "Alice"
        assert reader.get_string_value("Alice", "age") == "22"  # corrected: upserts union
        assert reader.get_string_value("Alice", "city") == "San Francisco"
        assert reader.get_string_value("Bob", "firstname") == "Bob"
        assert reader.get_string_value("Bob", "age") == "25"
        assert reader.get_string_value("Bob", "city") is None

        cities = reader.multiget_string_values(str_primary_keys=["Alice", "Bob"], field_names=["city"])
        assert next(cities) == "San Francisco"
        assert next(cities) is None
    finally:
        reader.shutdown()
        writer.shutdown()


def test_quick_start_through_the_writer_service_on_localstack(writer_service, tmp_path: pathlib.Path) -> None:
    store = f"users-{uuid.uuid4().hex[:8]}"
    admin.create_store(store, "firstname", num_partitions=2, storage_url=writer_service.storage.url, storage_options=writer_service.storage.options)
    writer_options = (
        ClientOptionsBuilder()
        .with_account_id(writer_service.account_id)
        .with_account_passkey(writer_service.passkey)
        .with_store_name(store)
        .with_writer_url(writer_service.url)
        .build()
    )
    b = (
        ClientOptionsBuilder()
        .with_account_id(writer_service.account_id)
        .with_account_passkey(writer_service.passkey)
        .with_store_name(store)
        .with_mount_directory(str(tmp_path / "mount"))
        .with_storage_url(writer_service.storage.url)
    )
    for k, v in writer_service.storage.options.items():
        b = b.with_storage_option(k, v)
    quick_start(writer_options, b.build())


def test_quick_start_direct_on_a_local_directory(local_storage, tmp_path: pathlib.Path, monkeypatch) -> None:
    # Only the environment names the storage: the original's quick start needs no ikv options.
    monkeypatch.setenv("IKV_STORAGE_URL", local_storage.url)
    monkeypatch.delenv("IKV_WRITER_URL", raising=False)
    admin.create_store("users", "firstname")
    writer_options = ClientOptionsBuilder().with_account_id("--account-id--").with_account_passkey("--account-passkey--").with_store_name("users").build()
    reader_options = (
        ClientOptionsBuilder()
        .with_account_id("--account-id--")
        .with_account_passkey("--account-passkey--")
        .with_store_name("users")
        .with_mount_directory(str(tmp_path / "mount"))
        .build()
    )
    quick_start(writer_options, reader_options)
