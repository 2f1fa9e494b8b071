"""Regenerate chatbot/data/tlds.txt from a copy of the Public Suffix List (MPL 2.0).

    python scripts/make_tld_list.py public_suffix_list.dat [--out chatbot/data/tlds.txt]

Every TLD of the list's ICANN section (the last label of each rule), IDN TLDs in Unicode form, sorted. Get the list
from https://publicsuffix.org/list/public_suffix_list.dat or a system package (Debian: ``publicsuffix``, which
installs /usr/share/publicsuffix/public_suffix_list.dat) and write where it came from into the file's header.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = """\
# Top-level domains: every TLD of the ICANN section of the Public Suffix List (the last label of each rule),
# IDN TLDs in Unicode form (한국, 닷컴, ...). Used by chatbot/data/pii.py to recognise bare links such as
# shop.example.store/item. One per line; lines starting with # are comments.
#
# Source: https://publicsuffix.org/list/public_suffix_list.dat ({source})
# Licence: this file is derived from the Public Suffix List and is subject to the terms of the Mozilla Public
# License, v. 2.0. If a copy of the MPL was not distributed with this file, You can obtain one at
# https://mozilla.org/MPL/2.0/.
#
# Regenerate: python scripts/make_tld_list.py /usr/share/publicsuffix/public_suffix_list.dat
"""


def tlds(psl_text: str) -> list[str]:
    icann = psl_text.split("===BEGIN ICANN DOMAINS===")[1].split("===END ICANN DOMAINS===")[0]
    found = set()
    for line in icann.splitlines():
        line = line.strip()
        if line and not line.startswith("//"):
            found.add(line.lstrip("!*.").split(".")[-1].lower())
    return sorted(found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("psl", type=Path, help="a copy of public_suffix_list.dat")
    ap.add_argument("--out", type=Path, default=REPO / "chatbot" / "data" / "tlds.txt")
    ap.add_argument("--source", default="the copy given to scripts/make_tld_list.py",
                    help="where the list came from (written into the header)")
    args = ap.parse_args()
    names = tlds(args.psl.read_text(encoding="utf-8"))
    args.out.write_text(HEADER.format(source=args.source) + "\n".join(names) + "\n", encoding="utf-8")
    print(f"wrote {len(names)} TLDs to {args.out}")


if __name__ == "__main__":
    main()
