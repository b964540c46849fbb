"""Service load: concurrent partner clients pushing 1M-row bundles and polling a job over loopback.

    python benchmarks/service_load.py --clients 20 --rows 1000000

Starts a real `cleanroom serve` subprocess on 127.0.0.1, enrols one reference
custodian, a coordinator and N partners, and writes N signed partner bundles of
random tokens (three match keys, no plaintext involved: the benchmark measures
the service, not hashing). Then N client threads each push their bundle and,
once a coordinator has queued a match job (reference + the first two
partners), poll job status until the job is done (bounded by --polls and
--timeout). Reports uploads/s, MB/s, p50/p99 request latency and the server's
peak RSS (VmHWM). Not a test: run by hand and record the figures in
docs/benchmarks.md ("Service load").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

from cleanroom import new_key
from cleanroom.bundle import KeyInfo, Manifest, file_digest, sign_manifest
from cleanroom.keys import identity as ident
from cleanroom.keys.consortium import Policy, init_consortium
from cleanroom.keys.identity import create_identity, load_identity
from cleanroom.service.client import ServiceClient
from cleanroom.service.testing import ServerProcess

PW = "benchmark"
CID, EPOCH = "load-2026", 1
KEYS = ["email", "phone", "name_dob"]


def synthetic_bundle(folder: Path, identity, key, rows: int, seed: int, *, reference: bool = False) -> None:
    """A signed bundle of random handles and tokens (about 30% shared with every other bundle)."""
    rng = np.random.default_rng(seed)
    shared = np.random.default_rng(0).integers(0, 256, size=(rows, 16), dtype=np.uint8)
    columns: dict[str, pl.Series] = {"handle": _binary(rng.integers(0, 256, (rows, 16), np.uint8))}
    for i, name in enumerate(KEYS):
        own = rng.integers(0, 256, size=(rows, 16), dtype=np.uint8)
        take = rng.random(rows) < 0.3
        own[take] = np.roll(shared, i, axis=1)[take]
        columns[name] = pl.DataFrame({"t": _binary(own)}).select(pl.concat_list("t")).to_series().alias(name)
    attributes = []
    if reference:
        columns["county"] = pl.Series(rng.choice(["WAKE", "DURHAM", "ORANGE"], rows))
        attributes = ["county"]
    frame = pl.DataFrame(columns)
    folder.mkdir(parents=True)
    frame.write_parquet(folder / "tokens.parquet", compression="uncompressed")
    manifest = Manifest(
        kind="reference" if reference else "partner", consortium_id=CID, epoch=EPOCH,
        key_fingerprint=key.fingerprint, spec_name="benchmark", spec_digest="0" * 64,
        normalizer_versions={}, row_count=rows,
        keys=[KeyInfo(name=k, fields=[k], non_null=rows) for k in KEYS], attributes=attributes,
        tokens_digest=file_digest(folder / "tokens.parquet"), producer=identity.card,
    )
    sign_manifest(folder, manifest, identity)


def _binary(matrix: np.ndarray) -> pl.Series:
    """Rows of a (n, 16) uint8 matrix as a Binary series."""
    import pyarrow as pa

    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(matrix), [None, pa.py_buffer(matrix.tobytes())])
    return pl.Series(array).cast(pl.Binary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--polls", type=int, default=200, help="status polls per client at most")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="service-load-"))
    ident.SCRYPT_LOG_N = 10
    names = [f"Partner {i:02d}" for i in range(args.clients)]
    ids = {}
    for org in ["Voter File", "Coordinator", "Admin", "Broker", *names]:
        create_identity(org, root / "id" / org, PW.encode())
        ids[org] = load_identity(root / "id" / org, PW.encode())
    key = new_key(CID, epoch=EPOCH)
    started = time.perf_counter()
    synthetic_bundle(root / "bundles" / "ref", ids["Voter File"], key, args.rows, 999, reference=True)
    for i, name in enumerate(names):
        synthetic_bundle(root / "bundles" / name, ids[name], key, args.rows, i)
    size = sum((root / "bundles" / n / "tokens.parquet").stat().st_size for n in names)
    print(f"generated {args.clients} bundles of {args.rows:,} rows ({size / 1e6:,.0f} MB) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    server = ServerProcess(root / "data", root / "id" / "Broker", admin_card=root / "id" / "Admin" / "card.json",
                           args=["--max-upload-mb", "4096"], env={"CLEANROOM_PASSPHRASE": PW}).start()
    try:
        with ServiceClient(server.url, ids["Admin"]) as admin:
            admin.enrol(ids["Voter File"].card, "custodian")
            admin.enrol(ids["Coordinator"].card, "coordinator")
            for name in names:
                admin.enrol(ids[name].card, "partner")
        doc = init_consortium(CID, ids["Voter File"], [ids[n].card for n in names], root / "consortium.json",
                              epoch=EPOCH, policy=Policy(k=10, epsilon_budget=None, clear_attributes=("county",)))
        with ServiceClient(server.url, ids["Voter File"]) as custodian:
            custodian.register_consortium(doc)
            custodian.push(root / "bundles" / "ref")
        rss_idle = server.rss_kib()
        latencies: list[float] = []
        upload_times: list[float] = []
        lock = threading.Lock()
        job_ready = threading.Event()
        job_id: list[str] = []
        deadline = time.monotonic() + args.timeout
        errors: list[str] = []

        def timed(fn):
            t0 = time.perf_counter()
            result = fn()
            with lock:
                latencies.append(time.perf_counter() - t0)
            return result

        def partner(name: str) -> None:
            try:
                with ServiceClient(server.url, ids[name], timeout=600) as client:
                    t0 = time.perf_counter()
                    client.push(root / "bundles" / name)
                    with lock:
                        upload_times.append(time.perf_counter() - t0)
                    job_ready.wait(args.timeout)
                    for _ in range(args.polls):
                        if time.monotonic() > deadline:
                            break
                        jobs = timed(client.jobs)
                        if job_id and name in names[:2]:
                            if timed(lambda: client.job(job_id[0]))["state"] in ("done", "failed"):
                                break
                        elif job_id and all(j["state"] in ("done", "failed") for j in jobs) and jobs:
                            break
                        time.sleep(0.2)
            except Exception as exc:  # noqa: BLE001 - reported at the end
                errors.append(f"{name}: {exc}")

        threads = [threading.Thread(target=partner, args=(n,)) for n in names]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        peak_during_upload = 0
        while any(t.is_alive() for t in threads) and len(upload_times) < len(names) and not errors:
            peak_during_upload = max(peak_during_upload, server.rss_kib())
            time.sleep(0.2)
        upload_wall = time.perf_counter() - t_start
        with ServiceClient(server.url, ids["Coordinator"]) as coordinator:
            bundles = {b["owner"]: b["digest"] for b in coordinator.bundles()}
            job = coordinator.create_job(CID, EPOCH, references=[bundles["Voter File"]],
                                         partners=[bundles[n] for n in names[:2]])
            job_id.append(job["id"])
            job_ready.set()
            for t in threads:
                t.join(max(1, deadline - time.monotonic()))
            final = coordinator.job(job["id"])
        hwm = _vm_hwm(server.pid)
    finally:
        server.stop()
    lat = sorted(latencies)
    print(f"uploads: {len(upload_times)}/{len(names)} in {upload_wall:.1f} s -> "
          f"{len(upload_times) / upload_wall:.2f} uploads/s, {size / 1e6 / upload_wall:,.0f} MB/s; "
          f"per upload p50 {statistics.median(upload_times):.1f} s, max {max(upload_times):.1f} s")
    if lat:
        print(f"poll requests: {len(lat)}; latency p50 {1000 * lat[len(lat) // 2]:.1f} ms, "
              f"p99 {1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f} ms")
    print(f"job {final['state']} after {final['attempts']} attempt(s)")
    print(f"server RSS: idle {rss_idle / 1024:.0f} MiB, peak during uploads {peak_during_upload / 1024:.0f} MiB, "
          f"peak overall (VmHWM, includes the match job) {hwm / 1024:.0f} MiB")
    if errors:
        print("errors:", *errors[:5], sep="\n  ")
        sys.exit(1)


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
