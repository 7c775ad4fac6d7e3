"""Creates a container in Azurite (idempotent): one PUT signed with the emulator's well-known
account key (SharedKey), so that no Azure SDK is needed. Usage: azurite_container.py NAME [URL]."""

import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every installation).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
VERSION = "2021-08-06"


def create(name: str, url: str) -> int:
    date = formatdate(usegmt=True)
    to_sign = "\n".join(
        ["PUT", "", "", "", "", "", "", "", "", "", "", "", f"x-ms-date:{date}", f"x-ms-version:{VERSION}",
         f"/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"]
    )
    sig = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    req = urllib.request.Request(
        f"{url}/{ACCOUNT}/{name}?restype=container",
        method="PUT",
        headers={"x-ms-date": date, "x-ms-version": VERSION, "Authorization": f"SharedKey {ACCOUNT}:{sig}", "Content-Length": "0"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        if e.code == 409:  # already there
            return 409
        raise SystemExit(f"creating container {name}: HTTP {e.code}: {e.read().decode()[:300]}")


if __name__ == "__main__":
    print(create(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:10000"))
