"""A store on Azure Blob Storage (Azurite, started by scripts/test.sh): created, written,
compacted and read from Python through an az:// URL and storage options, as on S3."""

import pathlib

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer


def test_a_store_on_azure_blob_storage_is_written_compacted_and_read(azurite_storage, tmp_path: pathlib.Path) -> None:
    url, options = azurite_storage.url, azurite_storage.options
    admin.create_store("feats", "id", num_partitions=2, storage_url=url, storage_options=options)
    b = ClientOptionsBuilder().with_store_name("feats").with_storage_url(url).with_mount_directory(str(tmp_path / "mount"))
    for k, v in options.items():
        b = b.with_storage_option(k, v)
    built = b.build()
    with create_new_writer(built) as writer:
        writer.upsert_fields_batch([IKVDocumentBuilder().put_string_field("id", f"k{i}").put_int64_field("n", i).build() for i in range(50)])
        admin.run_snapshot("feats", storage_url=url, storage_options=options)
        writer.upsert_fields(IKVDocumentBuilder().put_string_field("id", "k7").put_int64_field("n", 700).build())
    reader = create_new_reader(built)
    reader.startup()
    try:
        got = {f"k{i}": reader.get_int64_value(f"k{i}", "n") for i in range(50)}
        assert got == {f"k{i}": (700 if i == 7 else i) for i in range(50)}
        assert reader.get_int64_value("absent", "n") is None
    finally:
        reader.shutdown()
