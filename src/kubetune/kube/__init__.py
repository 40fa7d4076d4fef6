"""Everything kubetune says to a Kubernetes API server, one room per job:

- :mod:`~kubetune.kube.client` — the HTTP client (kubeconfig, retries, apply, watch, logs);
- :mod:`~kubetune.kube.errors` — an API server's refusals turned into one line each;
- :mod:`~kubetune.kube.names` — every label, annotation and env-var name shared with the chart;
- :mod:`~kubetune.kube.submit` — creating a sweep's Jobs and their ConfigMaps, idempotently;
- :mod:`~kubetune.kube.status` — what Jobs and pods mean: phases, stuck pods, the status table;
- :mod:`~kubetune.kube.watch` — finding a sweep's objects and following their changes;
- :mod:`~kubetune.kube.logs` — a run's trainer log; :mod:`~kubetune.kube.cancel` — cancelling.

None of it imports torch: it runs on the laptop.
"""
