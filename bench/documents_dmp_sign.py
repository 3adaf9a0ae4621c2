"""What the DMP's security envelope costs the DMP feed: building one ITI-41 request (SOAP 1.2,
MTOM) with the signed VIHF in its header and the submission set's XAdES signature document,
next to the same request unsigned (the baseline, measured in the same run), for a 200 KB PDF
and for a structured CDA (canonicalised before its digest).

    .venv/bin/python -m bench.documents_dmp_sign [--requests 300] [--size 200000] [--key rsa|ec]

In one process, one request after the other (the feed sends one document at a time): a key
and certificate made for the run (RSA 2048 or EC P-256, as a structure's certificate may be),
the documents built before the clock starts. Printed: requests/s, p50/p95 ms, the ratio to
the unsigned baseline, and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tests.documents.test_dmp_adapter import make_document
from tests.support.dmp_pki import make_pki

from bench._load import percentiles
from enrs.documents import vihf, xades, xds
from enrs.documents.xds import XdsDocument

CDA = Path(__file__).parents[1] / "tests" / "documents" / "data" / "n3_structured.xml"


def _pdf(size: int, rng: random.Random) -> bytes:
    return b"%PDF-1.7\n" + rng.randbytes(max(size - 9, 0))


def _documents(kind: str, count: int, size: int) -> list[XdsDocument]:
    rng = random.Random(7)
    docs = []
    for number in range(1, count + 1):
        if kind == "pdf":
            content = _pdf(size, rng)
            changes: dict[str, object] = {}
        else:
            content = CDA.read_bytes().replace(b"</ClinicalDocument>", b"") + (
                f"<!-- {number} -->\n</ClinicalDocument>\n".encode()
            )
            changes = {"mime_type": "text/xml"}
        doc = make_document(content, number=number, **changes)
        docs.append(
            dataclasses.replace(
                doc,
                size=len(content),
                sha1_hex=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
            )
        )
    return docs


def _run(docs: list[XdsDocument], one: Callable[[XdsDocument], int]) -> tuple[float, list[float]]:
    one(docs[0])  # warm-up
    latencies = []
    started = time.perf_counter()
    for doc in docs:
        t0 = time.perf_counter()
        one(doc)
        latencies.append((time.perf_counter() - t0) * 1000)
    return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--key", choices=("rsa", "ec"), default="rsa")
    args = parser.parse_args()
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if args.key == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    with tempfile.TemporaryDirectory() as tmp:
        signer = make_pki(Path(tmp), key).signer
    to = "https://dmp.example/si-dmp-server/v2/services"

    def unsigned(doc: XdsDocument) -> int:
        body, _ = xds.provide_and_register(doc, to=to)
        return len(body)

    def signed(doc: XdsDocument) -> int:
        now = datetime.now(UTC)
        header = vihf.security_header(doc, signer, now)
        signature = xades.sign_submission(doc, signer, now)
        body, _ = xds.provide_and_register(doc, to=to, header=[header], signature=signature)
        return len(body)

    print(f"ITI-41 request built in process, {args.requests} requests, key {args.key}")
    print("| document | request | req/s | p50 ms | p95 ms | ratio to unsigned |")
    print("|---|---|---|---|---|---|")
    for kind in ("pdf", "cda"):
        docs = _documents(kind, args.requests, args.size)
        label = f"{kind.upper()} {len(docs[0].content) // 1000} KB"
        base_time, base_lat = _run(docs, unsigned)
        sign_time, sign_lat = _run(docs, signed)
        base_rate, sign_rate = len(docs) / base_time, len(docs) / sign_time
        for name, rate, lat, ratio in (
            ("unsigned", base_rate, base_lat, 1.0),
            ("VIHF + XAdES", sign_rate, sign_lat, sign_rate / base_rate),
        ):
            p50, p95 = percentiles([round(ms * 1000) for ms in lat], (50, 95))
            print(
                f"| {label} | {name} | {rate:,.0f} | {p50 / 1000:.2f} | {p95 / 1000:.2f} "
                f"| {ratio:.2f} |"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
