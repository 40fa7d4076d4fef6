"""Submit a 500-run sweep: kubetune's concurrent submit against a plain loop of creates.

    .venv/bin/python benchmarks/bench_submit.py [--runs 500] [--latency-ms 10]

The API server is the fake of tests/kubefake.py, started in a process of its own. It waits
``--latency-ms`` (default 10 ms) before it answers each request: a stand-in for a real API
server's round trip (a managed control plane seen from a laptop is 10–50 ms away; kind on
the same machine is about 1 ms). It stores objects and answers as the real server does, but
does no admission or etcd work, so the figures are about the client's side of submission.

The sweep is rendered once, timed on its own, and both arms send those same manifests, each
into a namespace of its own:

- kubetune: ``kubetune.kube.submit.submit``, 16 runs in flight; per run a GET of its Job (the
  idempotency check), one server-side apply PATCH per object in install order, then a merge
  PATCH per dependent giving it an ownerReference to the Job (so it goes when the Job goes);
- sequential: the obvious alternative, a plain loop of one POST per object, one at a time,
  through the same client and connection pool (no idempotency check).

Then kubetune's submit again, with every run already there: GETs only (the Job, and its
ConfigMap to see that it is adopted), nothing changes.
Prints wall times and the ratio sequential / kubetune (target ≥ 5×).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from bench_render import sweep_spec  # noqa: E402

from kubefake import write_kubeconfig  # noqa: E402

KUBETUNE_NS, SEQUENTIAL_NS, AGAIN_NS = "bench-kubetune", "bench-sequential", "bench-kubetune"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_fake(port: int, latency_ms: float) -> subprocess.Popen[bytes]:
    """The fake API server in its own process; returns once it accepts connections."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "kubefake.py"),
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            "--namespace",
            KUBETUNE_NS,
            "--namespace",
            SEQUENTIAL_NS,
        ]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the fake API server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="sweep points (multiple of 10)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=10.0,
        help="added to every request by the fake API server (a real one's round trip)",
    )
    args = parser.parse_args()

    from kubetune import render, spec, sweep
    from kubetune.kube import client as cluster
    from kubetune.kube import submit

    work = Path(tempfile.mkdtemp(prefix="kubetune-bench-submit-"))
    data = sweep_spec(args.runs)
    data["resources"].pop("queue")  # type: ignore[attr-defined]  # no Kueue in the fake: its check is one GET anyway
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    render._chart(str(render.chart_dir()))  # load the chart once, as a long-lived run would
    start = time.perf_counter()
    runs = sweep.expand(spec.load(path), str(path))
    rendered_k = render.render(runs, KUBETUNE_NS)
    render_s = time.perf_counter() - start
    rendered_s = render.render(runs, SEQUENTIAL_NS)
    objects = sum(len(r.documents) for r in rendered_k)

    port = free_port()
    fake = start_fake(port, args.latency_ms)
    try:
        os.environ["KUBECONFIG"] = str(
            write_kubeconfig(work / "kubeconfig", f"http://127.0.0.1:{port}")
        )
        target = cluster.connect()
        target.get(cluster.JOB, KUBETUNE_NS, "warm-up")  # open the first connection

        start = time.perf_counter()
        outcomes = submit.submit(rendered_k, target, KUBETUNE_NS)
        kubetune_s = time.perf_counter() - start
        assert {o.result for o in outcomes} == {"created"}, {o.result for o in outcomes}

        # Parsed before the clock starts: kubetune's arm parses inside its time.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        documents = [
            yaml.load(text + "\n", Loader=loader)
            for item in rendered_s
            for _t, text in item.documents
        ]
        start = time.perf_counter()
        for doc in documents:
            target.create(doc, SEQUENTIAL_NS)
        sequential_s = time.perf_counter() - start

        start = time.perf_counter()
        again = submit.submit(rendered_k, target, AGAIN_NS)
        again_s = time.perf_counter() - start
        assert {o.result for o in again} == {"unchanged"}

        for namespace in (KUBETUNE_NS, SEQUENTIAL_NS):
            jobs, _ = target.list_objects(cluster.JOB, namespace)
            assert len(jobs) == len(runs), (namespace, len(jobs))
    finally:
        fake.terminate()
        fake.wait(timeout=10)

    n = len(runs)
    print(f"submit: {n} runs, {objects} objects, fake API server {args.latency_ms:g} ms a request")
    print(f"  render (apart, not in the times below): {render_s:.2f} s")
    print(
        f"  kubetune submit ({submit.WORKERS} runs in flight; {n} GETs + {objects} "
        f"server-side applies + {objects - n} ownerReference merge patches): {kubetune_s:.2f} s "
        f"= {n / kubetune_s:,.0f} runs/s"
    )
    print(
        f"  sequential creates (one POST per object, {objects} requests): {sequential_s:.2f} s "
        f"= {n / sequential_s:,.0f} runs/s"
    )
    print(f"  ratio sequential / kubetune: {sequential_s / kubetune_s:.1f}× (target ≥ 5×)")
    print(f"  submit again, all unchanged ({2 * n} GETs, no PATCH): {again_s:.2f} s")


if __name__ == "__main__":
    main()
